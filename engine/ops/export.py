"""export: copy a checkpoint without its training state (EMA weights, encoder, metadata), e.g.
to ship it; the copy has its own hash, so its cache is its own. With `step`, the checkpoint is
that step of a training run's kept history (engine.train.history)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.errors import UserError
from engine.ops.base import Operation, param
from engine.ops.params import Reporter


@dataclass
class Export(Operation):
    kind = "export"
    heavy = False  # file copies and, with fp16, one pass over the weights on the CPU
    help = "copy a checkpoint without its training state (dit-workbench export)"

    checkpoint: str = param(path=True, argument="CKPT",
                            help="Checkpoint folder or training run folder.")  # fmt: skip
    out: str = param(path=True, help="New folder for the exported checkpoint.")
    fp16: bool = param(False,
                       help="Store the transformer in float16 (half the size; loads as "
                       "float32).")  # fmt: skip
    step: int | None = param(None,
                             help="With a run folder: the checkpoint of this step from the run's "
                             "kept history (RUN/history/step-N/, see train --keep-history) or a "
                             "full checkpoint still kept.")  # fmt: skip

    def check(self, cwd: str | None) -> None:
        import os

        from engine.model.checkpoint import read_meta

        if self.step is not None:
            from engine.train.history import history_checkpoint

            self.checkpoint = str(history_checkpoint(self.checkpoint, self.step))
        read_meta(self.checkpoint)
        if os.path.lexists(self.out):
            raise UserError(f"{self.out!r} exists; choose a new folder for the export")

    def run(self, report: Reporter) -> dict:
        from engine.model.checkpoint import describe, export_checkpoint

        report.progress(0.0, "copy")
        path = export_checkpoint(self.checkpoint, self.out, fp16=self.fp16)
        report.progress(1.0, "done")
        return {"path": str(path), **describe(path)}
