"""Training settings: one declaration (engine.core.spec) that the training loop reads, the
engine's `train` job checks and `dit-workbench train` offers as options (engine.ops.train.Train
is these fields plus `resume`). Importable without torch so the engine can check a submitted
training job's parameters before queueing it. A run folder's train_config.json holds these
fields by name (the loop writes it, a resumed run is compared with it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.core import limits
from engine.core.device import DEVICE_HELP
from engine.core.errors import UserError
from engine.core.limits import Bound
from engine.core.sampling import DEFAULT_SAMPLING
from engine.core.spec import Spelling, check_value, option_spelling, param, spec_of

PRECISIONS = ("auto", "no", "fp16", "bf16")
_WHOLE = Bound(integer=True)


def resolve_precision(mixed_precision: str, device: str) -> str:
    """The one rule for "auto": bf16 where the run lands on a GPU, full precision on CPU."""
    if mixed_precision != "auto":
        return mixed_precision
    from engine.core.device import resolve_device

    return "bf16" if resolve_device(device).type == "cuda" else "no"


@dataclass
class TrainConfig:
    out: str = param(
        path=True, help="Run folder: checkpoints step-N/, `latest` link, metrics.jsonl."
    )
    preset: str = param("micro", help="dit-b (12/12/768), mini (6/6/384), micro (6/3/192), "
                        "nano (3/3/192).")  # fmt: skip
    text: str = param("rte", help="rte, rte-nopos, minilm or t5:<local dir>.")
    codec: str = param("pixel", help="pixel, or vae:<local AutoencoderKL dir>.")
    res: int = param(32, bound=limits.POSITIVE,
                     help="Image side in pixels (the token grid is always 8x8).")  # fmt: skip
    steps: int = param(1000, bound=limits.POSITIVE,
                       help="Optimiser steps in total (a resumed run continues to this).")  # fmt: skip
    batch: int = param(64, bound=limits.POSITIVE,
                       help="Global batch size (split across processes).")  # fmt: skip
    lr: float = param(1e-4, help="AdamW learning rate (paper: 1e-4).")
    weight_decay: float = param(
        0.03, bound=Bound(0.0, 10.0), help="AdamW weight decay (paper: 0.03)."
    )
    ema_decay: float = param(0.9999, help="Largest EMA decay (warmed up from 0).")
    null_caption_p: float = param(0.1, cli=False,
                                  help="Share of captions dropped (for guidance), in [0, 1).")  # fmt: skip
    n_train: int = param(10000, bound=limits.POSITIVE, help="Training scenes (paper: 10k).")
    data_seed: int = param(0, bound=limits.SEED, help="Dataset seed.")
    seed: int = param(0, bound=limits.SEED, help="Seed for init, noise and the text encoder.")
    eval_every: int = param(500, bound=limits.POSITIVE,
                            help="Checkpoint and evaluate every K steps.")  # fmt: skip
    eval_prompts: int = param(32, bound=limits.POSITIVE,
                              help="Prompts sampled at each checkpoint for metrics.jsonl.")  # fmt: skip
    eval_steps: int = param(DEFAULT_SAMPLING.steps, bound=limits.SAMPLER_STEPS, cli=False,
                            help="Sampler steps of the checkpoint evaluation.")  # fmt: skip
    cfg: float = param(DEFAULT_SAMPLING.cfg, bound=limits.CFG, cli=False,
                       help="Guidance scale of the checkpoint evaluation.")  # fmt: skip
    keep: int = param(3, bound=_WHOLE,
                      help="Checkpoints kept (oldest removed; metrics.jsonl keeps every one).")  # fmt: skip
    mixed_precision: str = param("auto", choices=PRECISIONS,
                                 help="no, bf16 or fp16; auto = bf16 on GPU, no on CPU.")  # fmt: skip
    log_every: int = param(10, bound=limits.POSITIVE,
                           help="Steps between loss/throughput lines (the only host syncs).")  # fmt: skip
    # Warm start: weights and text encoder of an existing checkpoint (fresh optimiser and data
    # order). For carrying a run across machines when its full training state is too big to move.
    init_from: str | None = param(None, path=True,
                                  help="Start from this checkpoint's weights and text encoder "
                                  "(fresh optimiser, data order).")  # fmt: skip
    # engine.core.device's rule (auto: CUDA when available); torch.compile the model.
    device: str = param("auto", help=DEVICE_HELP + " Under accelerate launch: auto or cuda.")
    compile: bool = param(False,
                          help="torch.compile the model (CUDA: faster steps after warm-up).")  # fmt: skip
    # Also keep every checkpoint's EMA weights as float16 under RUN/history/ (engine.train.history).
    keep_history: bool = param(False,
                               help="Also keep every checkpoint's EMA weights as float16 in "
                               "RUN/history/step-N/ (never pruned; for `dit-workbench "
                               "emergence`).")  # fmt: skip
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

    def validate(self, spelled: Spelling | None = None) -> None:
        """Every setting against its declaration, then what spans settings or names files.
        `spelled(name)` names a setting in errors (default: the command line's `--steps`)."""
        spec = spec_of(TrainConfig)
        name = spelled or option_spelling(spec)
        for field, p in spec.items():
            setattr(self, field, check_value(name(field), getattr(self, field), p))
        self.check_across(name)

    def check_across(self, name: Spelling) -> None:
        """What the declarations do not say: ranges, the device, preset and encoder names
        (each setting already checked against its declaration, as `check_params` does)."""
        if not 0 < self.lr < 1:
            raise UserError(f"{name('lr')} {self.lr} is out of range; use e.g. 1e-4")
        if not 0 <= self.null_caption_p < 1:
            raise UserError(
                f"{name('null_caption_p')} (the null-caption probability) must be in [0, 1) "
                f"(got {self.null_caption_p})"
            )
        from engine.core.device import check_device

        self.device = check_device(self.device)
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"{name('ema_decay')} must be in [0, 1) (got {self.ema_decay})")
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
