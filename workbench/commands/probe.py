"""`dit-workbench synopsis` and `heads`: capture attention while sampling, rank the heads."""

from __future__ import annotations

from pathlib import Path

import typer

from engine.core.device import DEVICE_HELP
from engine.probe.ranking import HEAD_COLUMNS, query_help
from workbench.output import Format, dump_json, emit, print_rows, rows_to_csv

CACHE_HELP = "Cache folder (one HDF5 file per checkpoint); default ./cache or $DIT_WORKBENCH_CACHE."


def synopsis(
    ckpt: Path = typer.Argument(..., help="Checkpoint folder or training run (uses `latest`)."),
    prompts: str = typer.Option(
        "eval", "--prompts", help="eval (the 264-prompt evaluation set) or a file, one per line."
    ),
    n_per_prompt: int = typer.Option(8, "--n-per-prompt", help="Seeds per prompt."),
    seed: int = typer.Option(0, "--seed", help="First image seed (then seed+1, ...)."),
    steps: int = typer.Option(14, "--steps", help="DPM-Solver++ steps (paper: 14)."),
    cfg: float = typer.Option(4.5, "--cfg", help="Classifier-free guidance scale (paper: 4.5)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    detail: int = typer.Option(
        8, "--detail", help="Samples whose full per-token maps are kept (head-detail pane)."
    ),
    self_attn: bool = typer.Option(
        False, "--self-attn", help="Also summarise self-attention (a second sampling pass)."
    ),
    cache: Path = typer.Option(None, "--cache", help=CACHE_HELP),
    format: Format = typer.Option(Format.table, "--format", help="table or json summary."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
):
    """Sample the prompts with attention capture, evaluate the images and store the synopsis
    in the checkpoint's HDF5 cache. Interrupted? Run the same command again: it continues."""
    from engine.ops.synopsis import Synopsis
    from engine.store.cache import default_cache_dir
    from workbench.ops import run_op

    params = {"checkpoint": str(ckpt), "prompts": prompts, "n_per_prompt": n_per_prompt,
              "seed": seed, "steps": steps, "cfg": cfg, "batch_size": batch_size,
              "detail": detail, "self_attn": self_attn,
              "cache": str(cache or default_cache_dir()), "device": device}  # fmt: skip
    summary = run_op(Synopsis, params)
    note = summary.pop("note")
    if format is Format.json:
        emit(dump_json(summary), None)
    else:
        typer.echo(f"synopsis run {summary['run']}: {summary['n_samples']} samples, {steps} steps "
                   f"-> {summary['cache']}")  # fmt: skip
        if note:  # free-text prompts: image categories fall back (engine.probe.synopsis)
            typer.echo(f"note: {note}")


def heads(
    ckpt: Path = typer.Argument(..., help="Checkpoint folder or training run."),
    query: str = typer.Option("relation->object1", "--query", "-q", help=query_help() + "."),
    run: str = typer.Option(None, "--run", help="Synopsis run (default: the newest complete)."),
    steps: str = typer.Option(None, "--steps", help="Steps to aggregate, e.g. 0-3 (default all)."),
    agg: str = typer.Option("max", "--agg", help="max (paper) or mean over steps, per sample."),
    correct_only: bool = typer.Option(
        False, "--correct-only", help="Only samples the evaluator scores correct (spatial)."
    ),
    top: int = typer.Option(None, "--top", help="Only the K best heads."),
    cache: Path = typer.Option(None, "--cache", help=CACHE_HELP),
    format: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    out: str = typer.Option(None, "--out", help="Write to this file instead of stdout."),
):
    """Rank every layer x head by how much attention flows along QUERY in a synopsis run:
    score (max over steps, mean over samples), rank, peak step, z-score, samples."""
    from engine.ops.heads import HEADS_TABLE_COLUMNS, Heads
    from engine.store.cache import default_cache_dir
    from workbench.ops import run_op

    # The same rows as the workbench's Heads table (and its CSV export): the ranking joined with
    # the newest screening and head sweep.
    params = {"checkpoint": str(ckpt), "query": query, "synopsis_run": run, "steps": steps,
              "agg": agg, "correct_only": correct_only, "top": top,
              "cache": str(cache or default_cache_dir())}  # fmt: skip
    res = run_op(Heads, params, options={"synopsis_run": "--run"})
    rows = res["rows"]
    if format is Format.csv:
        emit(rows_to_csv(rows, HEADS_TABLE_COLUMNS), out)
    elif format is Format.json:
        emit(dump_json(res), out)
    else:
        print_rows(rows, title=f"heads by {query} ({agg} over steps, mean over samples)",
                   columns=HEAD_COLUMNS)  # fmt: skip
