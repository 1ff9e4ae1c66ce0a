"""What the report says about one checkpoint, read from its cache (None where missing), and the
paper's figures it is compared with."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from engine.core.errors import UserError
from engine.store.cache import Store

PAPER = {
    "relation_accuracy": {
        "DiT-B T5": 0.89,
        "DiT-B RTE": 0.86,
        "DiT-B RTE-nopos": 0.15,
        "nano RTE": 0.05,
    },  # fmt: skip
    "relation_head": "L2H8 (reads relation words at the first step)",
    "object_head": "L4H3 (binds object positions to shape words, steps 4-8)",
    "relation_ablation": "masking L2H8 from relation tokens: relation accuracy 67% -> 33%",
    "object_ablation": "masking L4H3: shape accuracy 90% -> 76%",
    "variance": "T5: shape2 37.5%, relation 12.1% (21.3% after the caption projection)",
    "order": "colour, shape, binding, relation",
    "scale": "DiT-B (12 layers x 12 heads, width 768), batch 256, 160k steps (41M images) on an "
    "H100, 4x16x16 VAE latents of 128 px images",
}
RELATION_QUERY = "relation->object1"
OBJECT_QUERY = "shape1->object1"
SIDE_METRICS = ("shape", "unique_binding")  # what else a head's masking costs


def _run_dir(ckpt_path: Path) -> Path | None:
    """The training run a checkpoint came from, if its metrics.jsonl is beside it."""
    for d in (ckpt_path, ckpt_path.parent):
        if (d / "metrics.jsonl").is_file():
            return d
    return None


def checkpoint_facts(ckpt: str | os.PathLike, cache_dir, curves: str | None = None) -> dict:
    """Everything the report says about one checkpoint, from its cache (None where missing)."""
    from engine.model.checkpoint import describe, read_meta, store_for_path

    path, meta = read_meta(ckpt)
    info = describe(path)
    store = store_for_path(path, cache_dir)
    facts: dict = {
        "path": str(path),
        "info": info,
        "cache": str(store.path),
        "missing": [],
        "images_seen": meta.get("images_seen"),
        "shipped": str(store.base or ""),
        "train": meta.get("train"),
    }
    facts["synopsis"] = _synopsis_facts(store, facts["missing"])
    facts["screening"] = _screening_facts(store, facts, facts["missing"])
    facts["ablation"] = _ablation_facts(store, facts, facts["missing"])
    facts["variance"] = _variance_facts(store, facts["missing"])
    facts["words"] = _word_facts(store)
    run = Path(curves) if curves else _run_dir(path)
    facts["curves"] = _curve_facts(run, facts["missing"]) if run else None
    if run is None:
        facts["missing"].append("learning curves: no metrics.jsonl beside the checkpoint")
    return facts


def _synopsis_facts(store: Store, missing: list) -> dict | None:
    from engine.probe.ranking import rank_heads
    from engine.probe.synopsis import KIND

    run = store.latest_run(KIND, complete=True)
    if run is None:
        missing.append("synopsis: run `dit-workbench synopsis CKPT`")
        return None
    a = store.attrs(KIND, run)
    from engine.data.prompts import parse_prompt
    from engine.eval.evaluate import relation_signal

    metrics, signal = {}, None
    stored = store.datasets(KIND, run)
    evals = sorted(name for name in stored if name.startswith("eval/"))
    for name, values in store.read_some(KIND, run, evals).items():
        metrics[name.removeprefix("eval/")] = float(np.mean(values))
    if "color_centres" in stored:
        d = store.read_some(KIND, run, ["prompts", "color_centres"])
        rel = [parse_prompt(t).relation for t in d["prompts"]]
        signal = relation_signal(d["color_centres"], rel)
    if signal is None:
        missing.append("colour placement: the synopsis predates it; run `dit-workbench synopsis` "
                       "again")  # fmt: skip
    return {
        "signal": signal,
        "run": run,
        "n": int(a["n_samples"]),
        "steps": a.get("steps"),
        "cfg": a.get("cfg"),
        "metrics": metrics,
        "relation": rank_heads(store, run, RELATION_QUERY),
        "relation_first_step": rank_heads(store, run, RELATION_QUERY, steps="0"),
        "object": rank_heads(store, run, OBJECT_QUERY),
    }


def _screening_facts(store: Store, facts: dict, missing: list) -> dict | None:
    from engine.probe.screening import KIND, best_rows, compare_rankings, load_screening

    run = store.latest_run(KIND)
    if run is None:
        missing.append("screening: run `dit-workbench screen CKPT`")
        return None
    rows = best_rows(load_screening(store, run))
    out = {"run": run, "rows": rows, "agreement": None}
    syn = facts.get("synopsis")
    if syn:
        a = {(r["layer"], r["head"]): r["mean"] for r in rows}
        b = {(r["layer"], r["head"]): r["score"] for r in syn["relation"]}
        try:
            out["agreement"] = compare_rankings(a, b, k=3)
        except UserError:
            pass
    return out


def _ablation_facts(store: Store, facts: dict, missing: list) -> dict | None:
    from engine.intervene.results import sweep_rows, sweep_runs

    sweeps = sweep_runs(store)
    if not sweeps:
        missing.append('ablation sweeps: run `dit-workbench ablate CKPT --sweep "mask-head *.* '
                       'tokens=relation"` (and tokens=shape1,shape2)')  # fmt: skip
        return None
    out = {}
    for label, token, metric, query in (("relation", "relation", "spatial", "relation"),
                                        ("object", "shape", "shape", "object")):  # fmt: skip
        runs = [s for s in sweeps if f"tokens={token}" in (s["sweep"] or "")]
        if not runs:
            continue
        sweep = runs[-1]
        rows = [r for r in sweep_rows(store, sweep["run"], metric)]
        cells = {(r["layer"], r["head"]): r for r in rows}
        syn = facts.get("synopsis")
        top = syn[query][0] if syn else None
        top_cell = cells.get((top["layer"], top["head"])) if top else None
        worst = min(rows, key=lambda r: r["delta"] if not math.isnan(r["delta"]) else 1e9)
        # Every head whose interval excludes zero, on the paper's metric and (for relations)
        # on the shape-blind colour-placement diagnostic.
        checked = (metric, "color_relation") if label == "relation" else (metric,)
        significant = [r for m in checked for r in sweep_rows(store, sweep["run"], m)
                       if r["ci_low"] > 0 or r["ci_high"] < 0]  # fmt: skip
        by_metric = {m: {(r["layer"], r["head"]): r for r in sweep_rows(store, sweep["run"], m)}
                     for m in dict.fromkeys((*checked, *SIDE_METRICS))}  # fmt: skip
        out[label] = {"sweep": sweep, "metric": metric, "top_synopsis_head": top,
                      "cells": by_metric,
                      "top_cell": top_cell, "largest_drop": worst, "checked": checked,
                      "significant": significant}  # fmt: skip
    return out


# Word-level interventions the report reads (the paper's robustness contrast): any stored
# single-intervention run whose spec starts with one of these.
WORD_KINDS = ("insert-filler", "drop-words", "swap-words", "embed-add")


def _word_facts(store: Store) -> list[dict]:
    """Stored word-level interventions: one row per (intervention, metric), newest run wins."""
    from engine.intervene.results import ablation_rows

    rows = {}
    for r in ablation_rows(store):
        if r["intervention"].split(" ")[0] in WORD_KINDS:
            rows[(r["intervention"], r["metric"])] = r
    return list(rows.values())


def _variance_facts(store: Store, missing: list) -> dict | None:
    runs = store.runs("variance")
    if not runs:
        missing.append("variance decomposition: run `dit-workbench variance CKPT`")
        return None
    run = runs[-1]
    d = store.read("variance", run)
    names = list(d["share_names"])
    out = {"run": run}
    for stage, view, shares in zip(d["stage"], d["view"], d["shares"], strict=True):
        if view == "all":
            out[stage] = dict(zip(names, map(float, shares), strict=True))
    return out


def _curve_facts(run: Path, missing: list) -> dict | None:
    from engine.train.curves import learning_order, order_matches_paper, read_curves

    try:
        records = read_curves(run)
    except UserError as e:
        missing.append(f"learning curves: {e}")
        return None
    order = learning_order(records)
    return {"run": str(run), "records": records, "order": order,
            "matches": order_matches_paper(order)}  # fmt: skip
