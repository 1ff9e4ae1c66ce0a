"""`dit-workbench curves RUN_DIR`: evaluator metrics over training, and the learning order."""

from __future__ import annotations

import typer

from engine.ops.curves import Curves
from workbench.opcli import op_command
from workbench.ops import run_op
from workbench.output import FORMAT, OUT, Format, dump_json, emit, print_rows, rows_to_csv


@op_command(Curves)
def curves(params: dict, format: Format = FORMAT, out: str = OUT):
    """Colour, shape, binding and relation accuracy at every checkpoint of a training run, and
    the order in which they were learned (the paper: colour, shape, binding, relation)."""
    res = run_op(Curves, params)
    run, threshold, kept = params["run_dir"], res["threshold"], res["history_steps"]
    rows, columns, order = res["curves"], res["columns"], res["learning_order"]
    verdict = res["order_matches_paper"]
    if format is Format.csv:
        emit(rows_to_csv(rows, columns), out)
    elif format is Format.json:
        emit(
            dump_json(
                {
                    "curves": rows,
                    "learning_order": order,
                    "threshold": threshold,
                    "order_matches_paper": verdict,
                    "history_steps": kept,
                }
            ),
            out,
        )
    else:
        print_rows(rows, title=f"{run}: evaluator metrics per checkpoint", columns=columns)
        print_rows(order, title=f"learning order (metric stays >= {threshold})")
        said = {
            True: "matches the paper's order (colour, shape, binding, relation)",
            False: "differs from the paper's order (colour, shape, binding, relation)",
            None: "cannot be judged yet: some skill was never learned",
        }[verdict]
        typer.echo(f"learning order {said}")
        if kept:
            typer.echo(
                f"history: {len(kept)} checkpoints kept in {run}/history (steps {min(kept)}-"
                f"{max(kept)}); `dit-workbench emergence {run}` screens them, "
                f"`dit-workbench export {run} --step N --out DIR` exports one"
            )
