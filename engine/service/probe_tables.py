"""The engine's tables over probe results: a synopsis's heads, head map, head detail and sample
images, a screening's ranked rows and one head's map, and a run's emergence. Each reads what
the operations stored (torch-free: numpy and h5py reads of the cache); a checkpoint or run is
named by the request and resolved inside the engine's folders only (engine.core.roots)."""

from __future__ import annotations

import math

from engine.core import columns, roots
from engine.core.errors import UserError


def _store(params: dict):
    from engine.model.checkpoint import store_for_path

    if not params.get("checkpoint"):
        raise UserError("this table needs checkpoint=CKPT")
    return store_for_path(roots.resolve(params["checkpoint"], "checkpoint"), roots.cache_dir())


def _int(params: dict, key: str) -> int:
    try:
        return int(params[key])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"this table needs {key}=N (an integer)") from None


# --- synopsis -------------------------------------------------------------------------------


def heads_table(params: dict) -> tuple[list[str], list[list]]:
    from engine.ops.heads import HEADS_TABLE_COLUMNS, heads_rows

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


# --- screening ------------------------------------------------------------------------------


def _screening(params: dict):
    """The screening a table asks for: run=NAME, or the newest default one (else the newest)."""
    from engine.data.relations import RELATIONS
    from engine.model.checkpoint import read_meta
    from engine.probe.screening import KIND, find_screening, load_screening, screen_params

    store = _store(params)
    run = params.get("run")
    if not run:
        path, meta = read_meta(roots.resolve(params["checkpoint"], "checkpoint"))
        want = screen_params(RELATIONS, "first", False)
        want["text_encoder"] = meta.get("text")
        run = find_screening(store, want) or store.latest_run(KIND)
        if not run:
            raise UserError(
                f"no screening stored for {path.name}; run `dit-workbench screen {path}` "
                "(or press x)"
            )
    return load_screening(store, run)


def screening_table(params: dict) -> tuple[list[str], list[list]]:
    """Every head x relation (relation=all or one), ranked by metric (cosine by default)."""
    from engine.probe.screening import relation_rows

    s = _screening(params)
    rows = relation_rows(s, params.get("relation", "all"), params.get("metric", "cosine"))
    cols = list(columns.SCREENING)
    return cols, [[r[c] for c in cols] for r in rows]


def screen_map_table(params: dict) -> tuple[list[str], list[list]]:
    """The QK map of head layer.head for a relation, and its reference ramp: kind, map."""
    from engine.probe.screening import check_relation, map_detail, parse_head

    s = _screening(params)
    try:
        layer, head = int(params.get("layer")), int(params.get("head"))
    except (TypeError, ValueError):
        raise UserError("table 'screen_map' needs layer=L and head=H (integers)") from None
    layer, head = parse_head(f"{layer}.{head}", s.num_layers, s.num_heads)
    d = map_detail(s, layer, head, check_relation(params.get("relation", "above"), False))
    return list(columns.SCREEN_MAP), [["qk", d["qk"]], ["reference", d["reference"]]]


# --- emergence ------------------------------------------------------------------------------


def emergence_table(params: dict) -> tuple[list[str], list[list]]:
    """The stored emergence of run=RUN, one row per kept step x head: the head's mean `metric`
    over relations (cosine by default), its rank at the last step, the first step it reached
    `threshold` (0.5 by default), and its synopsis score when one was stored."""
    from engine.probe.emergence import HEAD_THRESHOLD, first_pass, head_name, stored_emergence

    if not params.get("run"):
        raise UserError("table 'emergence' needs run=RUN (a training run folder)")
    run = roots.resolve(params["run"], "run")
    try:
        threshold = float(params.get("threshold", HEAD_THRESHOLD))
    except (TypeError, ValueError):
        raise UserError("table 'emergence': threshold must be a number") from None
    e = stored_emergence(run, roots.cache_dir())
    metric = params.get("metric", "cosine")
    sc = e.head_scores(metric)
    ranks = {lh: i + 1 for i, lh in enumerate(e.top_heads(e.num_layers * e.num_heads, metric))}
    rows = []
    for (la, h), rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        vals = [float(v) for v in sc[:, la, h]]
        fp = first_pass(e.steps, vals, threshold)
        for i, step in enumerate(e.steps):
            syn = None if e.synopsis is None else float(e.synopsis[i, la, h])
            rows.append([step, la, h, head_name(la, h), vals[i], rank, fp, syn])
    return list(columns.EMERGENCE), rows
