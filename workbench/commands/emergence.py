"""`dit-workbench emergence RUN`: when each head's relation-head score forms, beside the
evaluator's learning curves (the logic is engine/ops/emergence.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from engine.core.device import DEVICE_HELP
from workbench.output import Format, dump_json, emit, print_rows, progress_bar, rows_to_csv


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
    from engine.core.device import check_device
    from engine.core.errors import UserError
    from engine.ops import emergence as E

    check_device(device)
    if top < 1:
        raise UserError(f"--top must be at least 1 (got {top})")
    tick, stop = progress_bar("screening checkpoints")
    try:
        e = E.compute_emergence(
            run,
            cache,
            synopsis,
            synopsis_steps,
            recompute,
            progress=lambda k, n, s: tick(k, n),
            device=device,
        )
    finally:
        stop()
    curves = E.run_curves(run)
    passes = E.pass_rows(e, curves, threshold, metric_threshold, top)
    where = f"emergence run {e.name} in {e.cache}"
    if format is Format.csv:
        emit(rows_to_csv(E.step_rows(e, curves=curves)), out)
        return
    if format is Format.json:
        doc = {
            "run": str(run),
            "stored": {"cache": e.cache, "run": e.name},
            "metric": "cosine (mean over relations)",
            "threshold": threshold,
            "metric_threshold": metric_threshold,
            "steps": E.step_rows(e, curves=curves),
            "passes": passes,
        }
        if e.synopsis is not None:
            doc["synopsis_spatial"] = [float(v) for v in e.synopsis_spatial]
            doc["synopsis_top"] = [
                {"step": s, "head": _argmax_head(e.synopsis[i])} for i, s in enumerate(e.steps)
            ]
        emit(dump_json(doc), out)
        return
    heads = e.top_heads(top)
    keep = {"step", "unique_binding", "spatial", *(E.head_name(*lh) for lh in heads)}
    rows = [
        {k: v for k, v in r.items() if k in keep}
        for r in E.step_rows(e, heads=heads, curves=curves)
    ]
    passes = [{k: ("never" if v is None else v) for k, v in r.items()} for r in passes]
    print_rows(rows, title=f"{run}: mean cosine over relations of the top {len(heads)} heads")
    print_rows(passes, title="first step at or above the threshold")
    if e.synopsis is not None:
        syn = [
            {"step": s, "top_synopsis_head": _argmax_head(e.synopsis[i]),
             "spatial": round(float(e.synopsis_spatial[i]), 3)}
            for i, s in enumerate(e.steps)
        ]  # fmt: skip
        print_rows(syn, title=f"synopsis ({synopsis} prompts): top head by {E.RELATION_QUERY}")
    typer.echo(where)


def _argmax_head(a) -> str:
    """The name of the highest-scoring head of an [L, H] array (NaN never wins)."""
    import numpy

    from engine.ops.emergence import head_name

    a = numpy.nan_to_num(numpy.asarray(a, dtype=float), nan=-numpy.inf)
    la, h = numpy.unravel_index(int(numpy.argmax(a)), a.shape)
    return head_name(int(la), int(h))
