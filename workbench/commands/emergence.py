"""`dit-workbench emergence RUN`: when each head's relation-head score forms, beside the
evaluator's learning curves (the operation is engine/ops/emergence.py)."""

from __future__ import annotations

import typer

from engine.ops.emergence import Emergence
from workbench.opcli import op_command
from workbench.ops import run_op
from workbench.output import FORMAT, OUT, Format, dump_json, emit, print_rows, rows_to_csv


@op_command(Emergence)
def emergence(params: dict, format: Format = FORMAT, out: str = OUT):
    """Weight-space screening of every kept checkpoint of a run (all heads x relations, well
    under a second each): a table of step x head (mean cosine over the 8 relations), and for the
    top heads the first step each passes --threshold, beside the step each evaluator metric in
    metrics.jsonl first passes 50%. Stored in the run's cache (kind "emergence"); steps already
    screened are reused."""
    from engine.probe.emergence import RELATION_QUERY

    res = run_op(Emergence, params, label="screening checkpoints")
    run = params["run_dir"]
    where = f"emergence run {res['run']} in {res['cache']}"
    if format is Format.csv:
        emit(rows_to_csv(res["step_rows"]), out)
        return
    if format is Format.json:
        doc = {
            "run": str(run),
            "stored": {"cache": res["cache"], "run": res["run"]},
            "metric": "cosine (mean over relations)",
            "threshold": params["threshold"],
            "metric_threshold": params["metric_threshold"],
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
        print_rows(
            syn, title=f"synopsis ({params['synopsis']} prompts): top head by {RELATION_QUERY}"
        )
    typer.echo(where)
