"""Training loop: one process, several GPUs or several nodes through accelerate.

Read top to bottom: build data, model, optimiser and EMA; optionally restore the newest
checkpoint; loop; every `eval_every` steps write a checkpoint atomically and append the
evaluator's metrics on a fixed prompt set to `metrics.jsonl` (the images are sampled at once, their
CPU scoring runs on a thread while the next steps train).

Resuming is bit-for-bit on CPU: every random draw comes from generators whose state is saved
(the data order is a permutation seeded by (data_seed, epoch); noise, timesteps and caption dropout
come from one generator), and optimiser and EMA state are restored (engine.train.state: the
data order, the EMA and what a checkpoint folder holds).
Multi-process: every rank draws the whole global batch's noise from the same generator and
keeps its own slice, so generator state stays identical across ranks.

GPU: the training set, its captions' embeddings and the data order live on the device; noise,
timesteps and caption dropout are drawn there from a device generator (its state is
checkpointed); losses are summed on the device and read every `log_every` steps, the only host
sync besides checkpoints. AdamW is fused on CUDA, the EMA is one foreach lerp, `compile`
wraps the forward in torch.compile.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from engine.core.errors import UserError
from engine.core.fs import write_atomic
from engine.core.sampling import SamplingSettings
from engine.core.settings import settings
from engine.core.spec import option_spelling, spec_of
from engine.data.prompts import eval_prompts
from engine.data.render import render_batch
from engine.data.scenes import sample_scenes
from engine.model.checkpoint import Checkpoint
from engine.model.codec import build_codec
from engine.model.presets import build_transformer, get_preset
from engine.model.sampler import model_kwargs, sample_images, train_scheduler
from engine.train.config import (  # noqa: F401  (re-exported: engine.train.loop.TrainConfig)
    TrainConfig,
    resolve_precision,
)
from engine.train.state import TrainState, append_line, ema_copy, latest_step_dir


def _resolve_train_device(spec: str):
    """engine.core.device's rule; under a multi-process launch each rank takes its local GPU."""
    from engine.core.device import resolve_device

    dev = resolve_device(spec)
    if settings().world_size > 1:
        if spec not in ("auto", "cuda") and dev.type == "cuda":
            raise UserError(
                f"--device {spec} under a multi-process launch: each process uses its own "
                "GPU; use --device auto or cuda"
            )
    elif dev.type == "cuda":
        torch.cuda.set_device(dev)  # accelerate's single process uses the current device
    return dev


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _fixed_eval_set(k: int):
    ps = eval_prompts()
    stride = max(1, len(ps) // k)
    return ps[::stride][:k]


def train(
    cfg: TrainConfig, resume: bool = False, progress: Callable[[dict], None] | None = None
) -> Path:
    """Train and return the run folder. `progress` gets a dict per logged step."""
    from engine.text import build_text_encoder, load_text_encoder

    cfg.validate()
    cfg = replace(cfg, mixed_precision=resolve_precision(cfg.mixed_precision, cfg.device))
    out = Path(cfg.out)
    dev = _resolve_train_device(cfg.device)
    accel = Accelerator(mixed_precision=cfg.mixed_precision, cpu=dev.type == "cpu")
    dev = accel.device
    main = accel.is_main_process
    state_dir = latest_step_dir(out) if resume else None
    if resume and (state_dir is None or not (state_dir / "train_state" / "state.json").is_file()):
        raise UserError(
            f"no resumable checkpoint in {str(out)!r} (missing `latest` or its train_state/); "
            "start a new run with --init-from CKPT instead"
        )
    if cfg.batch % accel.num_processes:
        raise UserError(
            f"--batch {cfg.batch} is not divisible by the {accel.num_processes} processes"
        )
    if resume:
        saved = out / "train_config.json"
        if not saved.is_file():
            raise UserError(
                f"nothing to resume in {str(out)!r} (no train_config.json); drop --resume to start"
            )
        old = json.loads(saved.read_text())
        option = option_spelling(spec_of(TrainConfig))
        for f in fields(TrainConfig):
            if f.name not in TrainConfig.RESUMABLE and old.get(f.name) != getattr(cfg, f.name):
                raise UserError(
                    f"{option(f.name)} is {getattr(cfg, f.name)!r} but the run in {str(out)!r} "
                    f"used {old.get(f.name)!r}; resume with the same settings"
                )
    elif out.exists() and any(out.iterdir()):
        raise UserError(
            f"run folder {str(out)!r} is not empty; pass --resume to continue it or choose a new --out"
        )

    torch.manual_seed(cfg.seed)
    codec = build_codec(cfg.codec, cfg.res)
    init = None
    if cfg.init_from and state_dir is None:
        from engine.model.checkpoint import load_checkpoint

        init = load_checkpoint(cfg.init_from)
        for key in ("preset", "text", "codec", "res"):
            if init.meta.get(key) != getattr(cfg, key):
                raise UserError(
                    f"--init-from checkpoint has {key} {init.meta.get(key)!r} but this run asks for "
                    f"{getattr(cfg, key)!r}; pass the same --{key}"
                )
    if state_dir is not None:
        text_encoder = load_text_encoder(state_dir)
    elif init is not None:
        text_encoder = init.text_encoder
    else:
        text_encoder = build_text_encoder(cfg.text, seed=cfg.seed)
    preset = get_preset(cfg.preset)
    model = build_transformer(
        preset, codec.channels, codec.latent_size, codec.patch_size, text_encoder.dim
    )
    if init is not None:
        model.load_state_dict(init.transformer.state_dict())

    # Data: the paper's 10k scenes rendered once; captions encoded once per unique caption.
    scenes = sample_scenes(cfg.n_train, cfg.data_seed)
    images = torch.from_numpy(render_batch(scenes, cfg.res))
    captions = sorted({s.caption for s in scenes})
    cap_index = {c: i for i, c in enumerate(captions)}
    cap_of = torch.tensor([cap_index[s.caption] for s in scenes])
    with torch.no_grad():
        cap_emb, cap_mask = text_encoder.encode(captions)
        null_emb, null_mask = text_encoder.encode([""])
    if codec.spec != "pixel":
        with torch.no_grad():
            codec.to(dev)
            x = torch.cat([codec.encode(images[i : i + 64]) for i in range(0, len(images), 64)])
    else:
        x = images.to(dev)  # uint8 on the device: encoding a batch there is one kernel
    data = _TrainingSet(codec, x, cap_of.to(dev), cap_emb.to(dev), cap_mask.to(dev),
                        null_emb.to(dev), null_mask.to(dev))  # fmt: skip

    model.to(dev)
    fused = {"fused": True} if dev.type == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    state = TrainState.fresh(model, opt, cfg, dev, accel.scaler)
    if state_dir is not None:
        state.restore(state_dir, cfg)
    # Every rank has checked the run folder above; only now may rank 0 write into it.
    accel.wait_for_everyone()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "train_config.json", json.dumps(asdict(cfg), indent=2) + "\n")

    model, state.opt = accel.prepare(model, opt)
    state.model = accel.unwrap_model(model)
    model.train()
    forward = torch.compile(model) if cfg.compile else model
    train_step = _Stepper(forward, accel, train_scheduler().alphas_cumprod.to(dev), cfg)
    eval_set = _fixed_eval_set(cfg.eval_prompts)

    t0, seen, loss_n = time.perf_counter(), 0, 0
    loss_acc = torch.zeros((), device=dev)
    # Scoring the eval images (CPU detection) runs on a thread while training goes on.
    scores = _DeferredScores(out / "metrics.jsonl", progress or _emit, cfg.batch, eval_set)
    try:
        while state.step < cfg.steps:
            loss, B = train_step(state, data)
            step = state.step
            seen += B
            loss_acc += loss
            loss_n += 1
            if main and (step % cfg.log_every == 0 or step == cfg.steps):
                mean_loss = loss_acc.item() / loss_n  # the host sync: every log_every steps
                rec = {
                    "step": step,
                    "loss": mean_loss,
                    "img_per_s": seen / (time.perf_counter() - t0),
                    "epoch": state.batches.epoch,
                    "time": time.time(),
                }
                (progress or _emit)(rec)
                loss_acc.zero_()
                loss_n = 0
            if step % cfg.eval_every == 0 or step == cfg.steps:
                accel.wait_for_everyone()
                if main:
                    # one EMA copy serves the checkpoint and its metrics
                    ema_model = ema_copy(state.model, state.ema)
                    ckdir = state.save(out, cfg, ema_model, text_encoder, codec)
                    if cfg.keep_history:  # fp16 EMA weights of every checkpoint, never pruned
                        from engine.train.history import save_history

                        save_history(ckdir, out)
                    scores.submit(
                        step, *_eval_images(ckdir, ema_model, text_encoder, codec, eval_set, cfg)
                    )
                accel.wait_for_everyone()
            if main:
                scores.flush(wait=False)
    finally:
        scores.close()  # the last metrics line is written before the run returns (or dies)
    # Every rank must end with the same weights; record each rank's digest so this is checkable.
    from accelerate.utils import gather_object

    digests = gather_object([_param_digest(accel.unwrap_model(model))])
    if main:
        (out / "ranks.json").write_text(
            json.dumps({"world_size": accel.num_processes, "param_sha256": digests}) + "\n"
        )
    accel.end_training()
    # the last references to the DDP wrapper, dropped before the group goes down
    del model, opt, state, forward, train_step
    _shutdown_distributed(accel)
    return out


TEARDOWN_S = 30.0


def _shutdown_distributed(accel) -> None:
    """Tear the process group down while every rank is still alive. Left to the interpreter's
    exit, the DDP reducer's gloo group joins threads whose peer has already gone and can hang."""
    import gc

    accel.free_memory()  # drops accelerate's references to the DDP wrapper and its reducer
    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Everything is on disk by now (checkpoints, metrics, ranks.json). Under heavy CPU load
        # a rank has still been seen to hang in gloo's teardown; a bounded wait, then a hard
        # exit, keeps that from hanging the terminal (and the launcher) with nothing to lose.
        import threading

        sys.stdout.flush()
        sys.stderr.flush()
        watchdog = threading.Timer(TEARDOWN_S, os._exit, args=(0,))
        watchdog.daemon = True
        watchdog.start()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        # Not cancelled: the hang can also come in the interpreter's exit, after this returns.


def _param_digest(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for _, p in sorted(model.named_parameters()):
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class _TrainingSet:
    """The training set on the device: images (uint8, or the codec's latents), each image's
    caption index, the unique captions' embeddings and masks, and the null caption's."""

    codec: Any
    x: torch.Tensor
    cap_of: torch.Tensor
    cap_emb: torch.Tensor
    cap_mask: torch.Tensor
    null_emb: torch.Tensor
    null_mask: torch.Tensor

    def inputs(self, idx: torch.Tensor, drop: torch.Tensor):
        """(clean latents, caption embeddings, masks) of images `idx`, captions `drop`ped to
        the null caption where it is set."""
        x0 = self.codec.encode(self.x[idx]) if self.codec.spec == "pixel" else self.x[idx]
        ci = self.cap_of[idx]
        null = self.null_emb.expand(len(ci), -1, -1)
        emb = torch.where(drop.view(-1, 1, 1), null, self.cap_emb[ci])
        msk = torch.where(drop.view(-1, 1), self.null_mask.expand(len(ci), -1), self.cap_mask[ci])
        return x0, emb, msk


class _Stepper:
    """One optimiser step on a TrainState: the global batch's noise, timesteps and caption
    dropout drawn from the state's generator (every rank draws all of them and keeps its own
    slice), the noise-prediction loss, backward, AdamW and the EMA."""

    def __init__(self, forward, accel, alphas: torch.Tensor, cfg: TrainConfig):
        self.forward, self.accel, self.alphas, self.cfg = forward, accel, alphas, cfg

    def __call__(self, state: TrainState, data: _TrainingSet) -> tuple[torch.Tensor, int]:
        """(the step's loss, still on the device; the global batch size)."""
        accel, alphas, gen, dev = self.accel, self.alphas, state.noise_gen, self.alphas.device
        codec = data.codec
        idx = state.batches.next()
        B = len(idx)
        t = torch.randint(0, len(alphas), (B,), generator=gen, device=dev)
        shape = (codec.channels, codec.latent_size, codec.latent_size)
        noise = torch.randn((B, *shape), generator=gen, device=dev)
        drop = torch.rand(B, generator=gen, device=dev) < self.cfg.null_caption_p
        mine = slice(accel.process_index, B, accel.num_processes)
        idx, t, noise, drop = idx[mine], t[mine], noise[mine], drop[mine]
        x0, emb, msk = data.inputs(idx, drop)
        ab = alphas[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        with accel.autocast():
            pred = self.forward(
                xt,
                encoder_hidden_states=emb,
                encoder_attention_mask=msk,
                timestep=t,
                **model_kwargs(),
                return_dict=False,
            )[0]
        loss = F.mse_loss(pred.float(), noise)
        accel.backward(loss)
        state.opt.step()
        state.opt.zero_grad(set_to_none=True)
        state.ema.step(state.model.parameters())
        state.step += 1
        return loss.detach(), B


def _eval_images(ckdir, ema_model, text_encoder, codec, eval_set, cfg):
    """(images, sampling seconds, error) for the fixed prompts with the EMA model. A failure is
    recorded, not fatal: hours of training must not die because an evaluation could not run."""
    t0 = time.perf_counter()
    try:
        ck = Checkpoint(ckdir, {}, ema_model, text_encoder, codec)
        prompts = [p.text for p in eval_set]
        sampling = SamplingSettings(steps=cfg.eval_steps, cfg=cfg.cfg)
        imgs = sample_images(ck, prompts, [0] * len(eval_set), sampling)
        return imgs.numpy(), time.perf_counter() - t0, None
    except Exception as e:  # noqa: BLE001
        return None, time.perf_counter() - t0, f"{type(e).__name__}: {e}"


def _score(images, eval_set) -> dict:
    from engine.eval.evaluate import evaluate_arrays

    t0 = time.perf_counter()
    try:
        res = evaluate_arrays(images, eval_set)
        m = {k: float(v) for k, v in res.metrics.items()}
    except Exception as e:  # noqa: BLE001
        m = {"eval_error": f"{type(e).__name__}: {e}"}
    return {**m, "score_s": time.perf_counter() - t0}


class _DeferredScores:
    """The evaluator's CPU work on a checkpoint's eval images, on one worker thread, while the
    next training steps run. The training thread writes each metrics line (and reports it) when
    its scores are ready, in step order: at most one checkpoint is being scored at a time."""

    def __init__(self, path: Path, emit: Callable[[dict], None], batch: int, eval_set):
        from concurrent.futures import ThreadPoolExecutor

        self._path, self._emit, self._batch, self._eval_set = path, emit, batch, eval_set
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-score")
        self._pending = None  # (future, step, sampling seconds)

    def submit(self, step: int, images, sample_s: float, error: str | None) -> None:
        self.flush(wait=True)
        if images is None:
            fut = self._pool.submit(lambda: {"eval_error": error, "score_s": 0.0})
        else:
            fut = self._pool.submit(_score, images, self._eval_set)
        self._pending = (fut, step, sample_s)

    def flush(self, wait: bool) -> None:
        if self._pending is None or not (wait or self._pending[0].done()):
            return
        fut, step, sample_s = self._pending
        self._pending = None
        m = fut.result()
        score_s = m.pop("score_s")
        if "eval_error" not in m:
            m.update({"eval_n": len(self._eval_set), "eval_s": sample_s + score_s})
        m.update({"step": step, "images_seen": step * self._batch})
        append_line(self._path, json.dumps(m))
        self._emit({"event": "checkpoint", **m})

    def close(self) -> None:
        try:
            self.flush(wait=True)
        finally:
            self._pool.shutdown(wait=True)
