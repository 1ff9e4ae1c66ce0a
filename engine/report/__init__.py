"""The reproduction report: every figure the caches hold, next to the paper's.

Reads only what earlier commands stored (synopsis, screening, ablation sweeps, variance) and the
training run's metrics.jsonl; computes nothing new, so the report says exactly what was
measured and where a figure is missing, which command would produce it.

Modules: `facts` gathers each checkpoint's figures from its cache, `render` writes the Markdown,
`emergence` the section on when the relation head formed.
"""

from __future__ import annotations

from engine.core.errors import UserError
from engine.report.emergence import GPU_RECIPE, emergence_section
from engine.report.facts import PAPER, checkpoint_facts
from engine.report.render import _encoder_comparison, diff_interval, proportion_interval, render

__all__ = [
    "GPU_RECIPE", "PAPER", "build_report", "checkpoint_facts", "diff_interval",
    "emergence_section", "proportion_interval", "render", "_encoder_comparison",
]  # fmt: skip


def build_report(checkpoints: list[str], cache_dir=None, curves: list[str] | None = None) -> str:
    if not checkpoints:
        raise UserError("give at least one checkpoint")
    curves = list(curves or [])
    if curves and len(curves) != len(checkpoints):
        raise UserError("give one --curves RUN per checkpoint, or none")
    facts = [checkpoint_facts(c, cache_dir, curves[k] if curves else None)
             for k, c in enumerate(checkpoints)]  # fmt: skip
    return render(facts)
