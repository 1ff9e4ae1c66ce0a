"""report: the reproduction report (Markdown) from what the caches hold, beside the paper's.

Reads only: every figure comes from runs earlier operations stored (engine.report says which
command makes a missing one). Not a job kind: it is a quick read the command line makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.errors import UserError
from engine.ops.base import Operation, param
from engine.ops.params import Reporter


@dataclass
class Report(Operation):
    kind = "report"
    heavy = False
    help = "write the reproduction report from the caches (dit-workbench report)"

    # paths as the user wrote them: the report names each checkpoint so
    checkpoints: list[str] = param(argument="CHECKPOINTS",
                                   help="Checkpoints (or training runs) to report.")  # fmt: skip
    cache: str | None = param(None, help="Cache folder (default ./cache).")
    curves: list[str] | None = param(None,
                                     help="Training run per checkpoint for the learning curves "
                                     "(default: the run beside the checkpoint).")  # fmt: skip

    def check(self, cwd: str | None) -> None:
        if not self.checkpoints:
            raise UserError("give at least one checkpoint")
        if self.curves and len(self.curves) != len(self.checkpoints):
            raise UserError("give one --curves RUN per checkpoint, or none")

    def run(self, report: Reporter) -> dict:
        from engine.report import build_report

        text = build_report(self.checkpoints, self.cache, self.curves or None)
        return {"markdown": text, "checkpoints": list(self.checkpoints), "cache": self.cache}
