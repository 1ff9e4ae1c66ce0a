"""`dit-workbench emergence RUN`: when each head's relation-head score forms, beside the
evaluator's learning curves (the operation is engine/ops/emergence.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from engine.core.device import DEVICE_HELP
from workbench.output import Format, dump_json, emit, print_rows, rows_to_csv


def emergence(
    run: Path = typer.Argument(
        ..., help="A training run folder (best trained with --keep-history)."
    ),
    synopsis: int = typer.Option(
        0,
        "--synopsis",
        help="Also a small attention synopsis per checkpoint: N evaluation prompts, one seed "
        "(samples; slow on CPU). Stored in each checkpoint's cache.",
    ),
    synopsis_steps: int = typer.Option(
        14, "--synopsis-steps", help="Denoising steps of that synopsis (paper: 14)."
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", help="A head passes once its mean cosine over relations reaches this."
    ),
    metric_threshold: float = typer.Option(
        0.5, "--metric-threshold", help="An evaluator metric passes once it reaches this."
    ),
    top: int = typer.Option(
        5, "--top", help="Heads shown (by score at the last step); CSV and JSON carry all heads."
    ),
    recompute: bool = typer.Option(
        False, "--recompute", help="Screen every checkpoint again even if stored."
    ),
    cache: Path = typer.Option(
        None, "--cache", help="Cache folder (default ./cache or $DIT_WORKBENCH_CACHE)."
    ),
    format: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    out: str = typer.Option(None, "--out", help="Write the output to this file."),
    device: str = typer.Option(
        "auto", "--device", help="Where the --synopsis samples: " + DEVICE_HELP
    ),
):
    """Weight-space screening of every kept checkpoint of a run (all heads x relations, well
    under a second each): a table of step x head (mean cosine over the 8 relations), and for the
    top heads the first step each passes --threshold, beside the step each evaluator metric in
    metrics.jsonl first passes 50%. Stored in the run's cache (kind "emergence"); steps already
    screened are reused."""
    from engine.ops.emergence import Emergence
    from engine.probe.emergence import RELATION_QUERY
    from engine.store.cache import default_cache_dir
    from workbench.ops import run_op

    params = {"run": str(run), "synopsis": synopsis, "synopsis_steps": synopsis_steps,
              "recompute": recompute, "cache": str(cache or default_cache_dir()),
              "device": device, "threshold": threshold, "metric_threshold": metric_threshold,
              "top": top}  # fmt: skip
    res = run_op(Emergence, params, label="screening checkpoints", options={"run_dir": "RUN"})
    where = f"emergence run {res['run']} in {res['cache']}"
    if format is Format.csv:
        emit(rows_to_csv(res["step_rows"]), out)
        return
    if format is Format.json:
        doc = {
            "run": str(run),
            "stored": {"cache": res["cache"], "run": res["run"]},
            "metric": "cosine (mean over relations)",
            "threshold": threshold,
            "metric_threshold": metric_threshold,
            "steps": res["step_rows"],
            "passes": res["passes"],
        }
        if "synopsis_top" in res:
            doc["synopsis_spatial"] = res["synopsis_spatial"]
            doc["synopsis_top"] = [
                {"step": s, "head": h}
                for s, h in zip(res["steps"], res["synopsis_top"], strict=True)
            ]
        emit(dump_json(doc), out)
        return
    # the top heads best first, then the two evaluator metrics closest to a relation
    cols = ["step", *res["top_heads"], "unique_binding", "spatial"]
    rows = [{c: r[c] for c in cols if c in r} for r in res["step_rows"]]
    passes = [{k: ("never" if v is None else v) for k, v in r.items()} for r in res["passes"]]
    n = len(res["top_heads"])
    print_rows(rows, title=f"{run}: mean cosine over relations of the top {n} heads")
    print_rows(passes, title="first step at or above the threshold")
    if "synopsis_top" in res:
        syn = [
            {"step": s, "top_synopsis_head": h, "spatial": round(sp, 3)}
            for s, h, sp in zip(res["steps"], res["synopsis_top"], res["synopsis_spatial"],
                                strict=True)
        ]  # fmt: skip
        print_rows(syn, title=f"synopsis ({synopsis} prompts): top head by {RELATION_QUERY}")
    typer.echo(where)
