"""`dit-workbench report CKPT... --out docs/reproduction.md`: the paper's figures beside ours."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from workbench.output import emit


def report(
    checkpoints: list[Path] = typer.Argument(..., help="Checkpoints (or training runs) to report."),
    out: str = typer.Option(None, "--out", help="Markdown file to write (default: stdout)."),
    cache: Path = typer.Option(None, "--cache", help="Cache folder (default ./cache)."),
    curves: list[Path] = typer.Option(
        None,
        "--curves",
        help="Training run per checkpoint for the learning curves (default: "
        "the run beside the checkpoint).",
    ),  # fmt: skip
):
    """Write the reproduction report from what the caches hold: relation accuracy per encoder,
    relation and object heads by synopsis and by screening and their agreement, ablation deltas
    with intervals, the variance decomposition and the learning order, next to the paper's."""
    from engine.ops.report import Report
    from workbench.ops import run_op

    params = {"checkpoints": [str(c) for c in checkpoints],
              "cache": str(cache) if cache else None,
              "curves": [str(c) for c in curves] if curves else None}  # fmt: skip
    text = run_op(Report, params)["markdown"]
    args = ["dit-workbench", "report", *map(str, checkpoints)]
    if cache:
        args += ["--cache", str(cache)]
    for c in curves or []:
        args += ["--curves", str(c)]
    if out:
        args += ["--out", out]
    text += f"\nRegenerate: `{shlex.join(args)}`\n"
    emit(text, out)
