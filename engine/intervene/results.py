"""Reading stored ablation results: the tables the CLI, the engine and the TUI show (and
`_write_new`, which names the runs they read).

Kept apart from `ablate.py` so that reading a table needs only numpy and h5py, never torch: the
engine answers table requests without loading a model.
"""

from __future__ import annotations

import math

import numpy as np

from engine.core.columns import ABLATIONS, SWEEP
from engine.core.errors import UserError
from engine.store.cache import Store

KIND = "ablation"


def _sweep_cells(names, covered, tables, flips, baseline, n, run, template) -> list[dict]:
    rows = []
    for layer, head in zip(*np.nonzero(covered), strict=True):
        for j, m in enumerate(names):
            rows.append(
                {
                    "layer": int(layer),
                    "head": int(head),
                    "metric": m,
                    "delta": float(tables["delta"][layer, head, j]),
                    "ci_low": float(tables["ci_low"][layer, head, j]),
                    "ci_high": float(tables["ci_high"][layer, head, j]),
                    "baseline": float(baseline[j]),
                    "intervened": float(tables["intervened"][layer, head, j]),
                    "lost": int(flips["lost"][layer, head, j]),
                    "gained": int(flips["gained"][layer, head, j]),
                    "n": int(n),
                    "run": run,
                    "sweep": template,
                }
            )
    return rows


ABLATION_COLUMNS = list(ABLATIONS)  # the served table's columns (engine.core.columns)


SWEEP_COLUMNS = list(SWEEP)


def _runs_by_role(store: Store, role: str) -> list[tuple[str, dict]]:
    out = []
    for run in store.runs(KIND):
        attrs = store.attrs(KIND, run)
        if attrs.get("role") == role:
            out.append((run, attrs))
    out.sort(key=lambda ra: (ra[1].get("created", ""), ra[0]))
    return out


def ablation_rows(store: Store, metric: str | None = None) -> list[dict]:
    """Every stored intervention run, one row per metric (oldest first): ABLATION_COLUMNS plus
    lost, gained, created."""
    rows = []
    keys = ("metrics", "baseline", "intervened", "delta", "ci_low", "ci_high", "lost", "gained")
    for run, attrs in _runs_by_role(store, "intervention"):
        data = store.read_some(KIND, run, keys)
        names = list(data["metrics"])
        for j, m in enumerate(names):
            if metric and m != metric:
                continue
            rows.append(
                {
                    "run": run,
                    "intervention": attrs.get("intervention", ""),
                    "metric": m,
                    **{
                        k: float(data[k][j])
                        for k in ("baseline", "intervened", "delta", "ci_low", "ci_high")
                    },
                    "n": int(attrs.get("n", 0)),
                    "lost": int(data["lost"][j]),
                    "gained": int(data["gained"][j]),
                    "created": attrs.get("created", ""),
                }
            )
    return rows


def sweep_runs(store: Store) -> list[dict]:
    """The stored sweeps: run, sweep template, n, steps, created (oldest first)."""
    return [
        {
            "run": run,
            "sweep": a.get("sweep", ""),
            "n": a.get("n"),
            "steps": a.get("steps"),
            "created": a.get("created", ""),
        }
        for run, a in _runs_by_role(store, "sweep")
    ]


def sweep_rows(store: Store, run: str | None = None, metric: str | None = None) -> list[dict]:
    """The [layer, head, metric] table of a sweep (the newest if `run` is None), one row per
    covered cell: SWEEP_COLUMNS plus baseline, intervened, lost, gained, n, run, sweep.
    Empty when there is no sweep."""
    if run is None:
        runs = _runs_by_role(store, "sweep")
        if not runs:
            return []
        run = runs[-1][0]
    attrs = store.attrs(KIND, run)
    if attrs.get("role") != "sweep":
        raise UserError(f"ablation run {run!r} is not a sweep; sweeps: "
                        f"{', '.join(r['run'] for r in sweep_runs(store)) or 'none'}")  # fmt: skip
    keys = ("metrics", "baseline", "covered", "intervened", "delta", "ci_low", "ci_high")
    data = store.read_some(KIND, run, (*keys, "lost", "gained"))
    # Columns are named by the metric list stored with the sweep, so a sweep written before a
    # metric was added still reads (it simply lacks that metric's rows).
    names = list(data["metrics"])
    tables = {k: data[k] for k in ("intervened", "delta", "ci_low", "ci_high")}
    flips = {k: data[k] for k in ("lost", "gained")}
    rows = _sweep_cells(
        names,
        data["covered"],
        tables,
        flips,
        data["baseline"],
        attrs.get("n", 0),
        run,
        attrs.get("sweep"),
    )
    return [r for r in rows if metric is None or r["metric"] == metric]


def head_deltas(store: Store, metric: str = "spatial", run: str | None = None) -> dict:
    """{(layer, head): (delta, ci_low, ci_high)} of a sweep (the newest if run is None)."""
    return {
        (r["layer"], r["head"]): (r["delta"], r["ci_low"], r["ci_high"])
        for r in sweep_rows(store, run, metric)
        if not math.isnan(r["delta"])
    }


def _write_new(store: Store, prefix: str, arrays: dict, attrs: dict) -> str:
    """Write a run named PREFIX-NNNN (the next free number; retried if a concurrent writer
    took it first)."""
    for _ in range(20):
        taken = set(store.runs(KIND))
        i = 1 + sum(1 for r in taken if r.startswith(f"{prefix}-"))
        while f"{prefix}-{i:04d}" in taken:
            i += 1
        name = f"{prefix}-{i:04d}"
        try:
            return store.write_run(KIND, arrays, attrs, run=name)
        except UserError:
            if not store.has_run(KIND, name):
                raise
    raise UserError(f"could not find a free run name for {prefix} in {store.path}; retry")


def result_rows(result: dict) -> list[dict]:
    """Rows (intervention, metric, baseline, intervened, delta, ci_low, ci_high, lost, gained, n,
    run) of a `run_ablation` result."""
    rows = []
    for entry in result["interventions"]:
        for m, s in entry["metrics"].items():
            rows.append(
                {
                    "run": entry["run"] or "",
                    "intervention": entry["intervention"],
                    "metric": m,
                    **{k: s[k] for k in ("baseline", "intervened", "delta", "ci_low", "ci_high")},
                    "lost": s["lost"],
                    "gained": s["gained"],
                    "n": result["n"],
                }
            )
    return rows
