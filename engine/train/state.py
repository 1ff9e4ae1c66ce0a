"""What a training run keeps to resume bit for bit: the data order, the EMA, the optimizer
state and the checkpoint folders (`step-NNNNNNN/` with `train_state/`, `latest` link) that
engine.train.loop writes every `eval_every` steps and restores with --resume.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from engine import __version__
from engine.core.errors import UserError
from engine.core.fs import fsync_path, staged_folder
from engine.model.checkpoint import save_checkpoint


def _perm(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class Batches:
    """Global batches of dataset indices, epoch by epoch, resumable from (epoch, pos). The
    permutation is drawn on the CPU once per epoch and kept on `device`."""

    def __init__(self, n: int, batch: int, seed: int, epoch: int = 0, pos: int = 0, device="cpu"):
        self.n, self.batch, self.seed, self.epoch, self.pos = n, batch, seed, epoch, pos
        self.device = device
        self.perm = _perm(seed, epoch, n).to(device)

    def next(self) -> torch.Tensor:
        idx, have = [], 0
        while have < self.batch:
            take = min(self.batch - have, self.n - self.pos)
            idx.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            have += take
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self.perm = _perm(self.seed, self.epoch, self.n).to(self.device)
        return torch.cat(idx)


class EMA:
    """Exponential moving average of the parameters, one foreach lerp per step. The decay warms
    up as diffusers' EMAModel(use_ema_warmup=True) does: 1 - (1 + n)^(-2/3) at update n + 1,
    capped at `decay` (0 at the first update: the shadow starts as the weights)."""

    def __init__(self, params, decay: float, optimization_step: int = 0):
        self.decay, self.optimization_step = decay, optimization_step
        self.shadow_params = [p.detach().clone() for p in params]

    def step(self, params) -> None:
        self.optimization_step += 1
        n = self.optimization_step - 1
        d = 0.0 if n <= 0 else min(1 - (1 + n) ** (-2 / 3), self.decay)
        torch._foreach_lerp_(self.shadow_params, [p.detach() for p in params], 1 - d)

    def copy_to(self, params) -> None:
        for s, p in zip(self.shadow_params, params, strict=True):
            p.data.copy_(s)


def latest_step_dir(out: Path) -> Path | None:
    link = out / "latest"
    return link.resolve() if link.exists() else None


def ema_copy(model, ema):
    import copy

    shadow = copy.deepcopy(model)
    ema.copy_to(shadow.parameters())
    return shadow.eval()


def append_line(path: Path, line: str) -> None:
    """Append one JSON line and flush it to disk: a crash loses at most the line being written."""
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass
class TrainState:
    """What the loop steps and a checkpoint keeps to resume bit for bit: the model being trained
    (unwrapped), its optimizer, the EMA, the data order, the generator of noise, timesteps and
    caption dropout, the optimiser steps taken, and the fp16 loss scaler (None without fp16)."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    ema: EMA
    batches: Batches
    noise_gen: torch.Generator
    step: int = 0
    scaler: Any = None

    @classmethod
    def fresh(cls, model, opt, cfg, device, scaler=None) -> TrainState:
        """Step 0: the EMA starts as the weights, the data order at epoch 0."""
        return cls(
            model,
            opt,
            EMA(model.parameters(), cfg.ema_decay),
            Batches(cfg.n_train, cfg.batch, cfg.data_seed, device=device),
            torch.Generator(device=device).manual_seed(cfg.seed + 1),
            0,
            scaler,
        )

    def restore(self, step_dir: Path, cfg) -> None:
        """Load what `save` wrote into `step_dir`/train_state (weights, optimizer, EMA, data
        position, generator, loss scale); the model and optimizer are not yet prepared."""
        ts = step_dir / "train_state"
        self.model.load_state_dict(load_file(ts / "model.safetensors"))
        self.opt.load_state_dict(load_optimizer_state(ts))
        st = json.loads((ts / "state.json").read_text())
        self.step = st["step"]
        b = self.batches
        self.batches = Batches(b.n, b.batch, b.seed, st["epoch"], st["pos"], device=b.device)
        try:
            self.noise_gen.set_state(load_file(ts / "rng.safetensors")["noise"])
        except RuntimeError:  # saved by another kind of device: its stream cannot go on here
            self.noise_gen.manual_seed(cfg.seed + 1 + self.step)
            print("note: run resumed on another kind of device; noise reseeded", file=sys.stderr)
        shadow = load_file(ts / "ema.safetensors")
        dev = next(self.model.parameters()).device
        self.ema.shadow_params = [shadow[n].to(dev) for n, _ in self.model.named_parameters()]
        self.ema.optimization_step = st["ema"]["optimization_step"]
        if self.scaler is not None and (ts / "scaler.json").is_file():
            self.scaler.load_state_dict(json.loads((ts / "scaler.json").read_text()))

    def save(self, out: Path, cfg, ema_model, text_encoder, codec) -> Path:
        """Write checkpoint folder `out`/step-NNNNNNN atomically (the EMA weights `ema_model` as
        a loadable checkpoint, plus train_state/), point `latest` at it, keep `cfg.keep`."""
        step, model, ema = self.step, self.model, self.ema
        name = f"step-{step:07d}"
        meta = {
            "preset": cfg.preset,
            "text": text_encoder.spec,
            "codec": codec.spec,
            "res": cfg.res,
            "step": step,
            "images_seen": step * cfg.batch,
            "train": asdict(cfg),
            "code_version": __version__,
            "weights": "ema",
        }
        final = out / name
        with staged_folder(final, create=False) as tmp:
            save_checkpoint(tmp, ema_model, text_encoder, meta)
            ts = tmp / "train_state"
            ts.mkdir()
            names = [n for n, _ in model.named_parameters()]
            save_file(
                {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()},
                ts / "model.safetensors",
            )
            shadow = zip(names, ema.shadow_params, strict=True)
            save_file({n: s.detach().cpu().contiguous() for n, s in shadow}, ts / "ema.safetensors")
            save_optimizer_state(self.opt.state_dict(), ts)
            save_file({"noise": self.noise_gen.get_state()}, ts / "rng.safetensors")
            if self.scaler is not None:  # fp16: the loss scale must survive a resume (else 2**16)
                (ts / "scaler.json").write_text(json.dumps(self.scaler.state_dict()))
            (ts / "state.json").write_text(
                json.dumps(
                    {
                        "step": step,
                        "epoch": self.batches.epoch,
                        "pos": self.batches.pos,
                        "ema": {"optimization_step": int(ema.optimization_step)},
                    }
                )
            )
        link_tmp = out / ".latest.tmp"
        link_tmp.unlink(missing_ok=True)
        link_tmp.symlink_to(name)
        os.replace(link_tmp, out / "latest")
        fsync_path(out)
        kept = sorted(p for p in out.glob("step-*") if p.is_dir())
        for old in kept[: -cfg.keep] if cfg.keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return final


# The optimizer state is written as safetensors plus JSON, never pickled (torch.save), so that
# resuming a run folder someone else wrote cannot run code: see docs/reliability.md.
def save_optimizer_state(state: dict, folder: Path) -> None:
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for k, v in per_param.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    save_file(tensors, folder / "optimizer.safetensors")
    meta = {"param_groups": state["param_groups"], "params": [str(i) for i in state["state"]],
            "scalars": scalars}  # fmt: skip
    (folder / "optimizer.json").write_text(json.dumps(meta))


def load_optimizer_state(folder: Path) -> dict:
    if not (folder / "optimizer.safetensors").is_file():
        raise UserError(
            f"{folder} has no optimizer.safetensors (a run saved by an older version, whose "
            "optimizer state was pickled, is not loaded); start from its weights with --init-from"
        )
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict = {int(i): dict(meta["scalars"].get(i, {})) for i in meta["params"]}
    for key, t in load_file(folder / "optimizer.safetensors").items():
        idx, name = key.split(".", 1)
        state[int(idx)][name] = t
    return {"state": state, "param_groups": meta["param_groups"]}
