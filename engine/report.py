"""The reproduction report: every figure the caches hold, next to the paper's.

Reads only what earlier commands stored (synopsis, screening, ablation sweeps, variance) and the
training run's metrics.jsonl; computes nothing new, so the report says exactly what was
measured and where a figure is missing, which command would produce it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from engine.errors import UserError

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


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _pts(x) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.1f} pts"


def _head(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _run_dir(ckpt_path: Path) -> Path | None:
    """The training run a checkpoint came from, if its metrics.jsonl is beside it."""
    for d in (ckpt_path, ckpt_path.parent):
        if (d / "metrics.jsonl").is_file():
            return d
    return None


def checkpoint_facts(ckpt: str | os.PathLike, cache_dir, curves: str | None = None) -> dict:
    """Everything the report says about one checkpoint, from its cache (None where missing)."""
    from engine.model.checkpoint import describe, read_meta
    from engine.store import store_for_path

    path, meta = read_meta(ckpt)
    info = describe(path)
    store = store_for_path(path, cache_dir)
    facts: dict = {"path": str(path), "info": info, "cache": str(store.path), "missing": []}
    facts["synopsis"] = _synopsis_facts(store, facts["missing"])
    facts["screening"] = _screening_facts(store, facts, facts["missing"])
    facts["ablation"] = _ablation_facts(store, facts, facts["missing"])
    facts["variance"] = _variance_facts(store, facts["missing"])
    run = Path(curves) if curves else _run_dir(path)
    facts["curves"] = _curve_facts(run, facts["missing"]) if run else None
    if run is None:
        facts["missing"].append("learning curves: no metrics.jsonl beside the checkpoint")
    return facts


def _synopsis_facts(store, missing: list) -> dict | None:
    from engine.probe.ranking import rank_heads
    from engine.probe.synopsis import KIND

    run = store.latest_run(KIND, complete=True)
    if run is None:
        missing.append("synopsis: run `dit-workbench synopsis CKPT`")
        return None
    a = store.attrs(KIND, run)
    metrics = {}
    with store.open() as f:
        for m, ds in f[KIND][run]["eval"].items():
            metrics[m] = float(np.mean(ds[()]))
    return {
        "run": run,
        "n": int(a["n_samples"]),
        "steps": a.get("steps"),
        "cfg": a.get("cfg"),
        "metrics": metrics,
        "relation": rank_heads(store, run, RELATION_QUERY),
        "relation_first_step": rank_heads(store, run, RELATION_QUERY, steps="0"),
        "object": rank_heads(store, run, OBJECT_QUERY),
    }


def _screening_facts(store, facts: dict, missing: list) -> dict | None:
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


def _ablation_facts(store, facts: dict, missing: list) -> dict | None:
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
        out[label] = {"sweep": sweep, "metric": metric, "top_synopsis_head": top,
                      "top_cell": top_cell, "largest_drop": worst}  # fmt: skip
    return out


def _variance_facts(store, missing: list) -> dict | None:
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
    from engine.curves import learning_order, order_matches_paper, read_curves

    try:
        records = read_curves(run)
    except UserError as e:
        missing.append(f"learning curves: {e}")
        return None
    order = learning_order(records)
    return {"run": str(run), "records": records, "order": order,
            "matches": order_matches_paper(order)}  # fmt: skip


def render(all_facts: list[dict]) -> str:
    """Markdown: a summary table across checkpoints, then one section per checkpoint."""
    lines = ["# Reproduction report", "",
             "Generated by `dit-workbench report` from the checkpoints' HDF5 caches; every number "
             "below was measured by this project's commands (the paper's numbers are quoted for "
             "comparison). Regenerate with the command at the end.", "",
             "## Relation accuracy per encoder", "",
             "| checkpoint | preset | encoder | samples | colour | shape | binding | relation (spatial) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in all_facts:
        s, i = f["synopsis"], f["info"]
        m = s["metrics"] if s else {}
        lines.append(f"| `{Path(f['path']).name}` | {i['preset']} | {i['text']} | "
                     f"{s['n'] if s else 'n/a'} | {_pct(m.get('color'))} | {_pct(m.get('shape'))} | "
                     f"{_pct(m.get('unique_binding'))} | {_pct(m.get('spatial'))} |")  # fmt: skip
    paper = ", ".join(f"{k} {_pct(v)}" for k, v in PAPER["relation_accuracy"].items())
    lines += ["", f"Paper: {paper}.", ""]
    for f in all_facts:
        lines += _section(f)
    return "\n".join(lines) + "\n"


def _section(f: dict) -> list[str]:
    i = f["info"]
    out = [f"## `{f['path']}`", "",
           f"{i['preset']} ({i['layers']} layers x {i['heads']} heads, width {i['width']}), "
           f"encoder {i['text']}, codec {i['codec']} at {i['res']} px, step {i['step']}; "
           f"cache `{f['cache']}`.", ""]  # fmt: skip
    s = f["synopsis"]
    out += ["### Relation head by synopsis", ""]
    if s:
        top, first = s["relation"][0], s["relation_first_step"][0]
        out.append(f"Synopsis run `{s['run']}`: {s['n']} samples, {s['steps']} steps, CFG "
                   f"{s['cfg']}. Query `{RELATION_QUERY}` (max over steps, mean over samples): "
                   f"top head **{_head(top['layer'], top['head'])}** (score {top['score']:.3f}, "
                   f"z {top['z']:.2f}, peak step {top['peak_step']}); at the first step alone: "
                   f"{_head(first['layer'], first['head'])} (score {first['score']:.3f}). "
                   f"Paper: {PAPER['relation_head']}.")  # fmt: skip
        obj = s["object"][0]
        out += ["", f"Object head, query `{OBJECT_QUERY}`: **{_head(obj['layer'], obj['head'])}** "
                f"(score {obj['score']:.3f}, peak step {obj['peak_step']}). Paper: "
                f"{PAPER['object_head']}.", ""]  # fmt: skip
    else:
        out += ["Not computed.", ""]
    sc = f["screening"]
    out += ["### Relation head by weight-space screening", ""]
    if sc:
        top = sc["rows"][0]
        out.append(f"Screening run `{sc['run']}`: top head **{_head(top['layer'], top['head'])}** "
                   f"(mean cosine over the 8 relations {top['mean']:.3f}; best relation "
                   f"{top['best_relation']} at {top['best']:.3f}).")  # fmt: skip
        ag = sc["agreement"]
        if ag:
            out.append(f"Agreement with the synopsis ranking over {ag['n_heads']} heads: Spearman "
                       f"{ag['spearman']:.2f}, top-{ag['k']} overlap {ag['topk_overlap']:.2f} "
                       f"(chance {ag['topk_chance']:.2f}).")  # fmt: skip
        out.append("")
    else:
        out += ["Not computed.", ""]
    ab = f["ablation"]
    out += ["### Ablations (paired seeds, 95% paired-bootstrap intervals)", ""]
    if ab:
        for label, paper in (("relation", PAPER["relation_ablation"]),
                             ("object", PAPER["object_ablation"])):  # fmt: skip
            a = ab.get(label)
            if not a:
                out.append(f"- {label} head: no sweep stored.")
                continue
            c, w, m = a["top_cell"], a["largest_drop"], a["metric"]
            if c:
                out.append(f"- {label} head {_head(c['layer'], c['head'])} (top by synopsis), "
                           f"sweep `{a['sweep']['sweep']}`: {m} {_pct(c['baseline'])} -> "
                           f"{_pct(c['intervened'])}, delta {_pts(c['delta'])} "
                           f"[{_pts(c['ci_low'])}, {_pts(c['ci_high'])}], n={c['n']}.")  # fmt: skip
            out.append(f"- largest {m} drop in that sweep: {_head(w['layer'], w['head'])}, delta "
                       f"{_pts(w['delta'])} [{_pts(w['ci_low'])}, {_pts(w['ci_high'])}]. "
                       f"Paper: {paper}.")  # fmt: skip
        out.append("")
    else:
        out += ["Not computed.", ""]
    v = f["variance"]
    out += ["### Text-embedding variance decomposition (all tokens pooled)", ""]
    if v:
        for stage in ("encoder", "projected"):
            if stage in v:
                sh = v[stage]
                out.append(f"- {stage}: " + ", ".join(f"{k} {_pct(x)}" for k, x in sh.items()))
        out += [f"- Paper: {PAPER['variance']}.", ""]
    else:
        out += ["Not computed.", ""]
    c = f["curves"]
    out += ["### Learning order", ""]
    if c:
        rows = ", ".join(f"{r['skill']} at step {r['learned_at']}" if r["learned_at"] is not None
                         else f"{r['skill']} not yet (final {_pct(r['final'])})"
                         for r in c["order"])  # fmt: skip
        verdict = {True: "matches the paper's order", False: "differs from the paper's order",
                   None: "cannot be judged: not every skill was learned"}[c["matches"]]  # fmt: skip
        out += [f"From `{c['run']}/metrics.jsonl` ({len(c['records'])} checkpoints; a skill is "
                f"learned once its metric stays >= 50%): {rows}. This {verdict} "
                f"({PAPER['order']}).", ""]  # fmt: skip
    else:
        out += ["No training curves found.", ""]
    out += ["### Scale", "",
            f"This checkpoint: {i['preset']} ({i['params']} parameters), {i['res']} px "
            f"{i['codec']} images, trained to step {i['step']} on CPU. The paper: "
            f"{PAPER['scale']}. Figures here are from a model orders of magnitude smaller and "
            "less trained; where they differ from the paper, scale is the first suspect.", ""]  # fmt: skip
    if f["missing"]:
        out += ["Missing: " + "; ".join(f["missing"]) + ".", ""]
    return out


def build_report(checkpoints: list[str], cache_dir=None, curves: list[str] | None = None) -> str:
    if not checkpoints:
        raise UserError("give at least one checkpoint")
    curves = list(curves or [])
    if curves and len(curves) != len(checkpoints):
        raise UserError("give one --curves RUN per checkpoint, or none")
    facts = [checkpoint_facts(c, cache_dir, curves[k] if curves else None)
             for k, c in enumerate(checkpoints)]  # fmt: skip
    return render(facts)
