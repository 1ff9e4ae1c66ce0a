"""curves: a training run's evaluator metrics at every checkpoint, and the order in which the
skills were learned (the paper: colour, shape, binding, relation). Reads metrics.jsonl only."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.limits import Bound
from engine.ops.base import Operation, param
from engine.ops.params import Reporter


@dataclass
class Curves(Operation):
    kind = "curves"
    heavy = False
    help = "a training run's learning curves and learning order (dit-workbench curves)"

    run_dir: str = param(path=True, argument="RUN", aliases=("run",),
                         help="A training run folder (holds metrics.jsonl).")  # fmt: skip
    threshold: float = param(0.5, bound=Bound(0.0, 1.0),
                             help="A skill counts as learned once its metric stays at or above "
                             "this.")  # fmt: skip

    def run(self, report: Reporter) -> dict:
        """Rows per checkpoint (with `history` where the run kept checkpoints), the order."""
        from engine.train.curves import COLUMNS, learning_order, order_matches_paper, read_curves
        from engine.train.history import history_steps

        records = read_curves(self.run_dir)
        rows = [{c: r.get(c) for c in COLUMNS} for r in records]
        kept = sorted(s for s, _ in history_steps(self.run_dir))  # train --keep-history
        columns = list(COLUMNS)
        if kept:
            columns.append("history")
            for r in rows:
                r["history"] = "kept" if r["step"] in kept else ""
        order = learning_order(records, self.threshold)
        return {"curves": rows, "columns": columns, "learning_order": order,
                "threshold": self.threshold, "order_matches_paper": order_matches_paper(order),
                "history_steps": kept}  # fmt: skip
