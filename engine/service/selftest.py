"""The engine's selftest job kind: sleeps in steps reporting progress, so the queue, workers,
progress, cancelling, failing and resuming can be checked without a GPU, a model or torch.

An engine check, not a user operation: no command line runs it (`dit-workbench jobs submit
selftest` sends it to the engine)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.core import limits
from engine.core.errors import UserError
from engine.core.limits import Bound
from engine.ops.base import Operation, param
from engine.ops.params import Reporter


@dataclass
class Selftest(Operation):
    kind = "selftest"
    heavy = True  # takes the accelerator slot, as the jobs it stands in for do
    resumable = True
    help = "sleep in steps reporting progress: checks the engine without a GPU"

    seconds: float = param(1.0, bound=Bound(0, 86400), help="seconds in all")
    steps: int = param(10, bound=limits.POSITIVE, help="progress reports")
    fail: bool = param(False, help="fail half-way with a UserError")
    resume: bool = param(False, help="say the job was resumed (nothing else changes)")

    def run(self, report: Reporter) -> dict:
        n, dt = self.steps, self.seconds / self.steps
        report.log(f"selftest: {n} steps of {dt:.3f} s" + (" (resumed)" if self.resume else ""))
        for k in range(n):
            time.sleep(dt)
            report.progress((k + 1) / n, "sleep")
            if self.fail and k == n // 2:
                raise UserError("selftest failed on purpose (fail=true)")
        return {"steps": n, "seconds": self.seconds, "resumed": self.resume}
