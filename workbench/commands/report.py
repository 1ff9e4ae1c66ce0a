"""`dit-workbench report CKPT... --out docs/reproduction.md`: the paper's figures beside ours."""

from __future__ import annotations

import shlex

from engine.ops.report import Report
from workbench.opcli import op_command
from workbench.ops import run_op
from workbench.output import emit, out_option


@op_command(Report)
def report(params: dict, out: str = out_option("Markdown file to write (default: stdout).")):
    """Write the reproduction report from what the caches hold: relation accuracy per encoder,
    relation and object heads by synopsis and by screening and their agreement, ablation deltas
    with intervals, the variance decomposition and the learning order, next to the paper's."""
    text = run_op(Report, params)["markdown"]
    args = ["dit-workbench", "report", *params["checkpoints"]]
    if params["cache"]:
        args += ["--cache", params["cache"]]
    for c in params["curves"] or []:
        args += ["--curves", str(c)]
    if out:
        args += ["--out", out]
    text += f"\nRegenerate: `{shlex.join(args)}`\n"
    emit(text, out)
