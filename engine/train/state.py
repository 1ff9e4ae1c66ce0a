"""What a training run keeps to resume bit for bit: the data order, the EMA, the optimizer
state and the checkpoint folders (`step-NNNNNNN/` with `train_state/`, `latest` link) that
engine.train.loop writes every `eval_every` steps and restores with --resume.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine import __version__
from engine.core.errors import UserError
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


def write_checkpoint(
    out,
    cfg,
    model,
    ema,
    ema_model,
    opt,
    text_encoder,
    codec,
    step,
    batches,
    noise_gen,
    scaler=None,
) -> Path:
    name = f"step-{step:07d}"
    tmp = out / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
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
    save_checkpoint(tmp, ema_model, text_encoder, meta)
    ts = tmp / "train_state"
    ts.mkdir()
    names = [n for n, _ in model.named_parameters()]
    save_file(
        {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()},
        ts / "model.safetensors",
    )
    save_file(
        {n: s.detach().cpu().contiguous() for n, s in zip(names, ema.shadow_params, strict=True)},
        ts / "ema.safetensors",
    )
    save_optimizer_state(opt.state_dict(), ts)
    save_file({"noise": noise_gen.get_state()}, ts / "rng.safetensors")
    if scaler is not None:  # fp16: the loss scale must survive a resume, or it restarts at 2**16
        (ts / "scaler.json").write_text(json.dumps(scaler.state_dict()))
    (ts / "state.json").write_text(
        json.dumps(
            {
                "step": step,
                "epoch": batches.epoch,
                "pos": batches.pos,
                "ema": {"optimization_step": int(ema.optimization_step)},
            }
        )
    )
    final = out / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    link_tmp = out / ".latest.tmp"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(name)
    os.replace(link_tmp, out / "latest")
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
