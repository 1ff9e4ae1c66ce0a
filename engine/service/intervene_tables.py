"""The engine's tables of stored ablations and head sweeps (`GET /tables/ablations`,
`/tables/sweeps`, `/tables/sweep`): torch-free reads of a checkpoint's cache, for the TUI's
Ablations pane. What `dit-workbench ablate` (engine.ops.ablate) stores is what they read."""

from __future__ import annotations

from engine.core import roots
from engine.core.errors import UserError


def _store(params: dict):
    from engine.model.checkpoint import store_for_path

    if "checkpoint" not in params:
        raise UserError("this table needs checkpoint=CKPT")
    return store_for_path(roots.resolve(params["checkpoint"], "checkpoint"), roots.cache_dir())


def _metric(params: dict) -> str | None:
    """The table's metric=NAME, checked (an unknown name would silently give no rows)."""
    from engine.eval.evaluate import METRICS

    metric = params.get("metric") or None
    if metric is not None and metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    return metric


def ablations_table(params: dict) -> tuple[list[str], list[list]]:
    from engine.intervene.results import ABLATION_COLUMNS, ablation_rows

    rows = ablation_rows(_store(params), _metric(params))
    return list(ABLATION_COLUMNS), [[r.get(c) for c in ABLATION_COLUMNS] for r in rows]


def sweeps_table(params: dict) -> tuple[list[str], list[list]]:
    """The stored per-head sweeps of a checkpoint, oldest first (the TUI picks one to show)."""
    from engine.intervene.results import sweep_runs

    cols = ["run", "sweep", "n", "steps", "created"]
    return cols, [[r.get(c) for c in cols] for r in sweep_runs(_store(params))]


def sweep_table(params: dict) -> tuple[list[str], list[list]]:
    from engine.intervene.results import SWEEP_COLUMNS, sweep_rows

    run = params.get("run") or params.get("spec") or None  # the TUI names the run "spec"
    rows = sweep_rows(_store(params), run, _metric(params))
    return list(SWEEP_COLUMNS), [[r.get(c) for c in SWEEP_COLUMNS] for r in rows]
