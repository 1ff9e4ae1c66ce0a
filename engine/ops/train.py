"""train: a DiT on the two-object dataset, checkpointed and evaluated as it goes (engine.train).

The command line (`dit-workbench train`, also under `accelerate launch` for many GPUs) and the
engine's resumable `train` job run this class. Its parameters are the training settings
(engine.train.config.TrainConfig, declared once there) plus `resume`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import UserError
from engine.core.settings import settings
from engine.ops.base import Operation, param
from engine.ops.params import Reporter
from engine.train.config import (  # noqa: F401  (resolve_precision: the op's rule, re-exported)
    PRECISIONS,
    TrainConfig,
    resolve_precision,
)


def _only_config(out: Path) -> bool:
    """A run folder holding nothing but train_config.json: stopped before its first checkpoint."""
    return out.is_dir() and [p.name for p in out.iterdir()] == ["train_config.json"]


@dataclass
class Train(Operation, TrainConfig):
    kind = "train"
    resumable = True
    help = "train a DiT (parameters: dit-workbench train's options)"

    resume: bool = param(False, help="Continue the run in --out from its latest checkpoint.")

    def config(self, mixed_precision: str) -> TrainConfig:
        """The settings the loop runs (and train_config.json holds): all but `resume`."""
        names = [f.name for f in dataclasses.fields(TrainConfig)]
        return TrainConfig(**{**{k: getattr(self, k) for k in names},
                              "mixed_precision": mixed_precision})  # fmt: skip

    def check(self, cwd: str | None) -> None:
        # from_params has checked every setting against its declaration; the rest as the loop
        # checks it. "auto" precision is resolved where the run lands.
        cfg = self.config(self.mixed_precision)
        cfg.check_across(self.spelled)
        self.device = cfg.device  # the normalised spelling; whether it exists: at run time
        out = Path(self.out)
        above = next(p for p in out.parents if p.exists())
        if (out.exists() and not out.is_dir()) or not above.is_dir():
            raise UserError(f"cannot make the run folder {str(out)!r}: a file is in the way")
        if self.resume:
            if not (out / "train_config.json").is_file():
                raise UserError(
                    f"nothing to resume in {str(out)!r} (no train_config.json); start it "
                    f"without {self.spelled('resume')}"
                )
        elif out.exists() and any(out.iterdir()):
            raise UserError(
                f"run folder {str(out)!r} is not empty; continue it with "
                f"{self.spelled('resume')} or choose a new {self.spelled('out')}"
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
