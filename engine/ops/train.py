"""train: a DiT on the two-object dataset, checkpointed and evaluated as it goes (engine.train).

The command line (`dit-workbench train`, also under `accelerate launch` for many GPUs) and the
engine's resumable `train` job run this class. Its fields are engine.train.config.TrainConfig's
(same names and defaults) plus `resume`, with `mixed_precision` also taking "auto".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import UserError
from engine.core.sampling import DEFAULT_SAMPLING
from engine.core.settings import settings
from engine.ops.base import Operation, param
from engine.ops.params import Reporter

PRECISIONS = ("auto", "no", "fp16", "bf16")


def resolve_precision(mixed_precision: str, device: str) -> str:
    """The one rule for "auto": bf16 where the run lands on a GPU, full precision on CPU."""
    if mixed_precision != "auto":
        return mixed_precision
    from engine.core.device import resolve_device

    return "bf16" if resolve_device(device).type == "cuda" else "no"


def _only_config(out: Path) -> bool:
    """A run folder holding nothing but train_config.json: stopped before its first checkpoint."""
    return out.is_dir() and [p.name for p in out.iterdir()] == ["train_config.json"]


@dataclass
class Train(Operation):
    kind = "train"
    resumable = True
    help = "train a DiT (parameters: dit-workbench train's options)"

    out: str = param(path=True, help="run folder: checkpoints, `latest` link, metrics.jsonl")
    preset: str = param("micro", help="dit-b, mini, micro or nano")
    text: str = param("rte", help="rte, rte-nopos, minilm or t5:<local dir>")
    codec: str = param("pixel", help="pixel or vae:<local AutoencoderKL dir>")
    res: int = param(32, help="image side in pixels")
    steps: int = param(1000, help="optimiser steps in total")
    batch: int = param(64, help="global batch size")
    lr: float = param(1e-4, help="AdamW learning rate")
    weight_decay: float = param(0.03, help="AdamW weight decay")
    ema_decay: float = param(0.9999, help="largest EMA decay")
    null_caption_p: float = param(0.1, help="share of captions dropped (for guidance)")
    n_train: int = param(10000, help="training scenes")
    data_seed: int = param(0, help="dataset seed")
    seed: int = param(0, help="seed for init, noise and the text encoder")
    eval_every: int = param(500, help="checkpoint and evaluate every K steps")
    eval_prompts: int = param(32, help="prompts sampled at each checkpoint")
    eval_steps: int = param(
        DEFAULT_SAMPLING.steps, help="sampler steps of the checkpoint evaluation"
    )
    cfg: float = param(DEFAULT_SAMPLING.cfg, help="guidance scale of the checkpoint evaluation")
    keep: int = param(3, help="checkpoints kept")
    mixed_precision: str = param("auto", choices=PRECISIONS, help="auto: bf16 on GPU, no on CPU")
    log_every: int = param(10, help="steps between loss lines")
    init_from: str | None = param(None, path=True, help="start from this checkpoint's weights")
    device: str = param("auto", help="auto, cpu, cuda or cuda:N")
    compile: bool = param(False, help="torch.compile the model")
    keep_history: bool = param(False, help="keep every checkpoint's EMA weights (float16)")
    resume: bool = param(False, help="continue the run in `out` from its latest checkpoint")

    def config(self, mixed_precision: str):
        from engine.train.config import TrainConfig

        names = {f.name for f in dataclasses.fields(TrainConfig)}
        kw = {k: v for k, v in self.params().items() if k in names}
        return TrainConfig(**{**kw, "mixed_precision": mixed_precision})

    def check(self, cwd: str | None) -> None:
        # Every setting as the loop checks it; "auto" precision is resolved where the run lands.
        cfg = self.config("no" if self.mixed_precision == "auto" else self.mixed_precision)
        cfg.validate()
        self.device = cfg.device  # the normalised spelling; whether it exists: at run time
        out = Path(self.out)
        above = next(p for p in out.parents if p.exists())
        if (out.exists() and not out.is_dir()) or not above.is_dir():
            raise UserError(f"cannot make the run folder {str(out)!r}: a file is in the way")
        if self.resume:
            if not (out / "train_config.json").is_file():
                raise UserError(
                    f"nothing to resume in {str(out)!r} (no train_config.json); start it "
                    "without param 'resume'"
                )
        elif out.exists() and any(out.iterdir()):
            raise UserError(
                f"run folder {str(out)!r} is not empty; continue it with param 'resume' or "
                "choose a new param 'out'"
            )
        if self.init_from:
            from engine.model.checkpoint import resolve_checkpoint_dir

            resolve_checkpoint_dir(self.init_from)

    def run(self, report: Reporter) -> dict:
        """Train; returns the run folder, its latest checkpoint and that checkpoint's metrics.

        A reporter with a `record(rec)` method also gets the loop's own records (each logged
        step and checkpoint), which the command line prints as JSON lines."""
        from engine.train.loop import train

        out, resume = Path(self.out), self.resume
        single = settings().world_size == 1  # one process may tidy the folder
        if resume and single and not (out / "latest").exists() and _only_config(out):
            report.log("no checkpoint written yet; starting the run from step 0")
            (out / "train_config.json").unlink()
            resume = False
        cfg = self.config(resolve_precision(self.mixed_precision, self.device))
        report.progress(0.0, "prepare")
        record = getattr(report, "record", None)
        last: dict = {}

        def on(rec: dict):
            if record is not None:
                record(rec)
            if rec.get("event") == "checkpoint":
                last.clear()
                last.update({k: v for k, v in rec.items() if k != "event"})
                keys = ("color", "shape", "exist_binding", "spatial", "overall")
                report.log(
                    f"checkpoint step {rec['step']}: "
                    + " ".join(f"{k}={rec[k]:.3f}" for k in keys if k in rec)
                )
                return
            report.log(f"step {rec['step']} loss {rec['loss']:.4f} {rec['img_per_s']:.0f} img/s")
            report.progress(rec["step"] / cfg.steps, "train")

        run = train(cfg, resume=resume, progress=on)
        report.progress(1.0, "done")
        return {"out": str(run), "latest": str((run / "latest").resolve()), "metrics": last}
