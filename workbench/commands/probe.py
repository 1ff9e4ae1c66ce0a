"""`dit-workbench synopsis` and `heads`: capture attention while sampling, rank the heads."""

from __future__ import annotations

import typer

from engine.ops.heads import HEADS_TABLE_COLUMNS, Heads
from engine.ops.synopsis import Synopsis
from engine.probe.ranking import HEAD_COLUMNS
from workbench.opcli import op_command
from workbench.ops import run_op
from workbench.output import (
    FORMAT,
    OUT,
    Format,
    dump_json,
    emit,
    format_option,
    print_rows,
    rows_to_csv,
)


@op_command(Synopsis)
def synopsis(params: dict, format: Format = format_option("table or json summary.")):
    """Sample the prompts with attention capture, evaluate the images and store the synopsis
    in the checkpoint's HDF5 cache. Interrupted? Run the same command again: it continues."""
    summary = run_op(Synopsis, params)
    note = summary.pop("note")
    if format is Format.json:
        emit(dump_json(summary), None)
    else:
        typer.echo(f"synopsis run {summary['run']}: {summary['n_samples']} samples, "
                   f"{params['steps']} steps -> {summary['cache']}")  # fmt: skip
        if note:  # free-text prompts: image categories fall back (engine.probe.synopsis)
            typer.echo(f"note: {note}")


@op_command(Heads)
def heads(params: dict, format: Format = FORMAT, out: str = OUT):
    """Rank every layer x head by how much attention flows along QUERY in a synopsis run:
    score (max over steps, mean over samples), rank, peak step, z-score, samples."""
    # The same rows as the workbench's Heads table (and its CSV export): the ranking joined with
    # the newest screening and head sweep.
    res = run_op(Heads, params)
    rows = res["rows"]
    if format is Format.csv:
        emit(rows_to_csv(rows, HEADS_TABLE_COLUMNS), out)
    elif format is Format.json:
        emit(dump_json(res), out)
    else:
        title = f"heads by {params['query']} ({params['agg']} over steps, mean over samples)"
        print_rows(rows, title=title, columns=HEAD_COLUMNS)
