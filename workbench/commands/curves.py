"""`dit-workbench curves RUN_DIR`: evaluator metrics over training, and the learning order."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.output import Format, dump_json, emit, print_rows, rows_to_csv


def curves(
    run: Path = typer.Argument(..., help="A training run folder (holds metrics.jsonl)."),
    format: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    threshold: float = typer.Option(
        0.5, "--threshold", help="A skill counts as learned once its metric stays at or above this."
    ),
    out: str = typer.Option(None, "--out", help="Write to this file instead of stdout."),
):
    """Colour, shape, binding and relation accuracy at every checkpoint of a training run, and
    the order in which they were learned (the paper: colour, shape, binding, relation)."""
    from engine.core.limits import check_number
    from engine.train.curves import COLUMNS, learning_order, order_matches_paper, read_curves
    from engine.train.history import history_steps

    check_number("--threshold", threshold, 0.0, 1.0)  # metrics are fractions; NaN never counts
    records = read_curves(run)
    rows = [{c: r.get(c) for c in COLUMNS} for r in records]
    kept = {s for s, _ in history_steps(run)}  # train --keep-history
    columns = list(COLUMNS)
    if kept:
        columns.append("history")
        for r in rows:
            r["history"] = "kept" if r["step"] in kept else ""
    order = learning_order(records, threshold)
    verdict = order_matches_paper(order)
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
                    "history_steps": sorted(kept),
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
