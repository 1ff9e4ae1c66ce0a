"""Engine job kind `synopsis` and the tables built on synopsis runs: heads, head_map,
head_detail, sample_images. Table functions are torch-free (numpy/h5py reads of the cache)."""

from __future__ import annotations

import math

from engine.core import columns, limits, roots
from engine.core.device import check_device
from engine.core.errors import UserError
from engine.data.prompts import prompt_set, resolve_prompt_spec
from engine.ops.params import (
    Param,
    Reporter,
    check_cache_dir,
    check_caption_lengths,
    check_params,
    named_checkpoint,
)

SYNOPSIS = {
    "checkpoint": Param(str, path=True),
    "prompts": Param(str, "eval"),
    "n_per_prompt": Param(int, 8, bound=limits.IMAGES_PER_PROMPT),
    "seed": Param(int, 0, bound=limits.SEED),
    "steps": Param(int, 14, bound=limits.SAMPLER_STEPS),
    "cfg": Param(float, 4.5, bound=limits.CFG),
    "batch_size": Param(int, 32, bound=limits.BATCH),
    "detail": Param(int, 8, bound=limits.NON_NEGATIVE),
    "self_attn": Param(bool, False),
    "cache": Param(str, None, path=True),
    "resume": Param(bool, False),  # a synopsis always continues its stored partial run
    "device": Param(str, "auto"),
}
HEADS_TABLE_COLUMNS = list(columns.HEADS)
# Which evaluator metric an ablation of a head is judged on, by the query's text category.
ABLATION_METRIC = {"relation": "spatial", "shape1": "shape", "shape2": "shape",
                   "color1": "color", "color2": "color"}  # fmt: skip


def validate_synopsis(params: dict, cwd: str | None) -> dict:

    from engine.model.checkpoint import resolve_checkpoint_dir

    p = check_params("synopsis", named_checkpoint(params, cwd), SYNOPSIS, cwd)
    for name in ("n_per_prompt", "steps", "batch_size"):
        if p[name] <= 0:
            raise UserError(f"param {name!r} must be positive (got {p[name]})")
    if p["detail"] < 0:
        raise UserError(f"param 'detail' must be >= 0 (got {p['detail']})")
    resolve_checkpoint_dir(p["checkpoint"])
    if p["prompts"] != "eval":
        p["prompts"] = resolve_prompt_spec(p["prompts"], cwd)
        check_caption_lengths(q.text for q in prompt_set(p["prompts"])[0])
    check_cache_dir(p["cache"])
    p["cache"] = p["cache"] or str(roots.cache_dir())
    p["device"] = check_device(p["device"])
    return p


def run_synopsis_job(params: dict, report: Reporter) -> dict:
    import time

    from engine.model.checkpoint import load_checkpoint
    from engine.probe.synopsis import run_synopsis
    from engine.store.cache import Store

    p = params
    prompts, label = prompt_set(p["prompts"])
    report.progress(0.0, "load")
    ckpt = load_checkpoint(p["checkpoint"], device=p["device"])
    store = Store.for_checkpoint(ckpt, p["cache"])
    t0 = time.monotonic()

    def progress(done: int, total: int):
        el = time.monotonic() - t0
        eta = el / done * (total - done) if done else None
        report.progress(done / max(total, 1), "sample", eta)

    run = run_synopsis(ckpt, prompts, p["n_per_prompt"], p["seed"], p["steps"], p["cfg"],
                       p["batch_size"], store, progress, p["detail"], p["self_attn"], label)  # fmt: skip
    report.log(f"synopsis run {run} stored in {store.path}")
    return {"run": run, "cache": str(store.path)}


# --- tables -----------------------------------------------------------------------------------


def _store(params: dict):
    from engine.store.cache import store_for_path

    if not params.get("checkpoint"):
        raise UserError("this table needs checkpoint=CKPT")
    return store_for_path(roots.resolve(params["checkpoint"], "checkpoint"), roots.cache_dir())


def _flag(v) -> bool:
    return str(v).lower() in ("1", "true", "yes", "on")


def _int(params: dict, key: str) -> int:
    try:
        return int(params[key])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"this table needs {key}=N (an integer)") from None


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


def heads_table(params: dict) -> tuple[list[str], list[list]]:
    rows = heads_rows(_store(params), params)
    return list(HEADS_TABLE_COLUMNS), [[r.get(c) for c in HEADS_TABLE_COLUMNS] for r in rows]


def head_map_table(params: dict) -> tuple[list[str], list[list]]:
    from engine.probe.ranking import head_map

    m = head_map(_store(params), params.get("run") or None,
                 params.get("query") or "relation->object1", params.get("step", "all"),
                 params.get("agg") or "max")  # fmt: skip
    rows = [[layer, head, None if math.isnan(v) else float(v)]
            for layer, row in enumerate(m.tolist()) for head, v in enumerate(row)]  # fmt: skip
    return list(columns.HEAD_MAP), rows


def head_detail_table(params: dict) -> tuple[list[str], list[list]]:
    from engine.probe.ranking import head_detail

    rows = head_detail(_store(params), params.get("run") or None, _int(params, "layer"),
                       _int(params, "head"), params.get("category") or "relation")  # fmt: skip
    cols = list(columns.HEAD_DETAIL)
    return cols, [[r[c] for c in cols] for r in rows]


def sample_images_table(params: dict) -> tuple[list[str], list[list]]:
    from engine.probe.ranking import sample_images

    rows = sample_images(_store(params), params.get("run") or None)
    cols = list(columns.SAMPLE_IMAGES)
    return cols, [[r[c] for c in cols] for r in rows]
