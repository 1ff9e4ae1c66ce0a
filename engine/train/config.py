"""Training settings: a plain dataclass, importable without torch so the engine can check a
submitted training job's parameters before queueing it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.core.errors import UserError
from engine.core.sampling import DEFAULT_SAMPLING


@dataclass
class TrainConfig:
    out: str
    preset: str = "micro"
    text: str = "rte"
    codec: str = "pixel"
    res: int = 32
    steps: int = 1000
    batch: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.03
    ema_decay: float = 0.9999
    null_caption_p: float = 0.1
    n_train: int = 10000
    data_seed: int = 0
    seed: int = 0
    eval_every: int = 500
    eval_prompts: int = 32
    eval_steps: int = DEFAULT_SAMPLING.steps
    cfg: float = DEFAULT_SAMPLING.cfg
    keep: int = 3
    mixed_precision: str = "no"
    log_every: int = 10
    # Warm start: weights and text encoder of an existing checkpoint (fresh optimiser and data
    # order). For carrying a run across machines when its full training state is too big to move.
    init_from: str | None = None
    # engine.core.device's rule (auto: CUDA when available); torch.compile the model.
    device: str = "auto"
    compile: bool = False
    # Also keep every checkpoint's EMA weights as float16 under RUN/history/ (engine.train.history).
    keep_history: bool = False
    # Which fields may differ when resuming: extending a run is allowed, changing it is not.
    RESUMABLE = (
        "out",
        "steps",
        "eval_every",
        "keep",
        "log_every",
        "eval_prompts",
        "mixed_precision",
        "init_from",
        "device",
        "compile",
        "keep_history",
    )

    def validate(self) -> None:
        from engine.core import limits

        for name in ("steps", "batch", "n_train", "eval_every", "res", "eval_prompts", "keep"):
            limits.check_number(f"--{name.replace('_', '-')}", getattr(self, name), integer=True)
        limits.SEED.check("--seed", self.seed)
        limits.SEED.check("--data-seed", self.data_seed)
        limits.check_number("--lr", self.lr)
        limits.check_number("--weight-decay", self.weight_decay, 0.0, 10.0)
        limits.check_number("--ema-decay", self.ema_decay)
        limits.CFG.check("the evaluation cfg", self.cfg)
        limits.SAMPLER_STEPS.check("the evaluation steps", self.eval_steps)
        for name in ("steps", "batch", "n_train", "eval_every", "res"):
            if getattr(self, name) <= 0:
                raise UserError(
                    f"--{name.replace('_', '-')} must be positive (got {getattr(self, name)})"
                )
        if not 0 < self.lr < 1:
            raise UserError(f"--lr {self.lr} is out of range; use e.g. 1e-4")
        if self.eval_prompts <= 0 or self.log_every <= 0:
            raise UserError("--eval-prompts and the log interval must be positive")
        if not 0 <= self.null_caption_p < 1:
            raise UserError(
                f"null-caption probability must be in [0, 1) (got {self.null_caption_p})"
            )
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UserError(
                f"--mixed-precision {self.mixed_precision!r} is not one of no, fp16, bf16, auto"
            )
        from engine.core.device import check_device

        self.device = check_device(self.device)
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema-decay must be in [0, 1) (got {self.ema_decay})")
        from engine.model.presets import get_preset

        get_preset(self.preset)
        check_specs(self.text, self.codec)


TEXT_SPECS = "'rte', 'rte-nopos' (optionally ':DIM'), 'minilm', 't5:<dir>'"


def check_specs(text: str, codec: str) -> None:
    """The text encoder and codec specs, checked as strings (folders must exist), so that a bad
    one is refused before a job is queued; building them (engine.text, engine.model.codec)
    needs torch and checks the rest."""
    name, _, arg = (text or "").strip().partition(":")
    if name in ("rte", "rte-nopos"):
        if arg and not (arg.isdigit() and int(arg) > 0):
            raise UserError(f"text encoder {text!r}: the dimension must be a positive integer")
    elif name == "t5":
        if not arg or not os.path.isdir(arg):
            raise UserError(f"text encoder {text!r}: give 't5:<dir>' with an existing T5 folder")
    elif text != "minilm":
        raise UserError(f"unknown text encoder {text!r}; use one of {TEXT_SPECS}")
    kind, _, folder = (codec or "").strip().partition(":")
    if codec == "pixel":
        return
    if kind != "vae":
        raise UserError(
            f"unknown codec {codec!r}; use 'pixel' or 'vae:<local AutoencoderKL folder>'"
        )
    if not folder or not os.path.isdir(folder):
        raise UserError(f"codec {codec!r}: give 'vae:<dir>' with an existing AutoencoderKL folder")
