"""heads: rank every layer x head of a stored synopsis run by how much attention flows along a
query, joined with the newest screening and head sweep of the checkpoint (an in-process read:
the CLI's `heads` and the engine's heads table show the same rows)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.core import columns
from engine.core.errors import UserError
from engine.ops.ablate import CACHE_HELP
from engine.ops.base import Operation, param
from engine.ops.params import Reporter
from engine.probe.ranking import query_help

HEADS_TABLE_COLUMNS = list(columns.HEADS)
# Which evaluator metric an ablation of a head is judged on, by the query's text category.
ABLATION_METRIC = {"relation": "spatial", "shape1": "shape", "shape2": "shape",
                   "color1": "color", "color2": "color"}  # fmt: skip


@dataclass
class Heads(Operation):
    kind = "heads"
    heavy = False
    help = "rank the heads of a stored synopsis run (dit-workbench heads)"

    checkpoint: str = param(path=True, argument="CKPT", help="Checkpoint folder or training run.")
    query: str = param("relation->object1", flags=("--query", "-q"), help=query_help() + ".")
    synopsis_run: str | None = param(None, flags=("--run",),
                                     help="Synopsis run (default: the newest complete).")  # fmt: skip
    steps: str | None = param(None, help="Steps to aggregate, e.g. 0-3 (default all).")
    agg: str = param("max", help="max (paper) or mean over steps, per sample.")
    correct_only: bool = param(False,
                               help="Only samples the evaluator scores correct (spatial).")  # fmt: skip
    top: int | None = param(None, help="Only the K best heads.")
    cache: str | None = param(None, path=True, help=CACHE_HELP)

    def check(self, cwd: str | None) -> None:
        from engine.probe.ranking import parse_query

        parse_query(self.query)  # a bad query fails before anything is read
        if self.top is not None and self.top <= 0:
            raise UserError(f"{self.spelled('top')} must be positive (got {self.top})")

    def run(self, report: Reporter) -> dict:
        from engine.model.checkpoint import store_for_path

        store = store_for_path(self.checkpoint, self.cache)
        params = {"run": self.synopsis_run, "query": self.query, "steps": self.steps, "agg": self.agg,
                  "correct_only": self.correct_only}  # fmt: skip
        rows = heads_rows(store, params)[: self.top]
        return {"query": self.query, "agg": self.agg, "steps": self.steps, "rows": rows}


def _flag(v) -> bool:
    return str(v).lower() in ("1", "true", "yes", "on")


def heads_rows(store, params: dict) -> list[dict]:
    """The ranked heads of a synopsis query, joined with the newest screening (best relation per
    head) and the newest head sweep that masks the query's text category (delta of the metric
    that category concerns)."""
    from engine.probe.ranking import parse_query, rank_heads

    query = params.get("query") or "relation->object1"
    rows = rank_heads(store, params.get("run") or None, query, params.get("steps") or None,
                      params.get("agg") or "max", _flag(params.get("correct_only", "")))  # fmt: skip
    screen = _screen_by_head(store)
    q = parse_query(query)
    deltas = _sweep_by_head(store, ABLATION_METRIC.get(q.source, "overall"), q.source)
    for r in rows:
        key = (r["layer"], r["head"])
        r["screen_score"], r["screen_relation"] = screen.get(key, (None, None))
        r["ablation_delta"], r["ablation_ci_low"], r["ablation_ci_high"] = deltas.get(
            key, (None, None, None)
        )
    return rows


def _screen_by_head(store) -> dict:
    from engine.probe.screening import KIND, best_rows, load_screening

    run = store.latest_run(KIND)
    if run is None:
        return {}
    try:
        return {(r["layer"], r["head"]): (r["best"], r["best_relation"])
                for r in best_rows(load_screening(store, run))}  # fmt: skip
    except (UserError, KeyError, ValueError):
        return {}


def _masks(spec: str, category: str | None) -> bool:
    """Whether an intervention spec acts on the query's text category (a spec without
    `tokens=` acts on every token)."""
    import re

    m = re.search(r"\btokens=(\S+)", spec or "")
    return category is None or m is None or category in m[1].split(",")


def _sweep_by_head(store, metric: str, category: str | None = None) -> dict:
    """(delta, ci_low, ci_high) per head: the newest sweep that masks the query's text category
    (a shape sweep says nothing about a relation query), overridden by any later single-head
    ablation of that category (what the workbench's `a` key runs), so a fresh result shows at
    once."""
    import re

    from engine.intervene.results import ablation_rows, head_deltas, sweep_runs

    try:
        sweeps = [s["run"] for s in sweep_runs(store) if _masks(s["sweep"], category)]
        out = {}
        if sweeps:
            out = {k: tuple(None if math.isnan(x) else x for x in v)
                   for k, v in head_deltas(store, metric, sweeps[-1]).items()}  # fmt: skip
        one_head = re.compile(r"^(?:mask|zero)-head (\d+)\.(\d+)\b[^+]*$")
        for r in ablation_rows(store, metric):  # oldest first: the newest wins
            m = one_head.match(r["intervention"])
            if m and _masks(r["intervention"], category):
                out[(int(m[1]), int(m[2]))] = (r["delta"], r["ci_low"], r["ci_high"])
        return out
    except (UserError, KeyError, ValueError):
        return {}
