"""Ranked head tables from a stored synopsis run (numpy and the store only: no model, no torch).

A query names where attention flows: "TEXT->IMAGE" for cross-attention (a text category to an
image category, e.g. relation->object1: how much the tokens of object 1 read the relation
words) or "self:IMAGE->IMAGE" for self-attention (stored with --self-attn).

Score of a head (the paper's default): for each sample, the maximum over the chosen denoising
steps (or the mean, --agg mean), then the mean over samples. The peak step is the step where
the mean over samples is largest; z is the score's z-score among all heads; n_samples counts
the samples where the image category exists (an image with no red pixels has no object 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from engine.core.errors import UserError
from engine.probe.synopsis import BRANCHES, IMAGE_CATS, KIND, TEXT_CATS
from engine.store.cache import Store

HEAD_COLUMNS = ["layer", "head", "score", "rank", "peak_step", "z", "n_samples"]
CORRECT_METRIC = "spatial"  # --correct-only keeps samples the evaluator scores right on this


@dataclass(frozen=True)
class Query:
    attn: str  # "cross" or "self"
    source: str  # text category (cross) or query image category (self)
    target: str  # image category (cross: the attending image tokens) or key image category

    @property
    def text(self) -> str:
        if self.attn == "self":
            return f"self:{self.target}->{self.source}"
        return f"{self.source}->{self.target}"


def query_help() -> str:
    return (
        f"TEXT->IMAGE with TEXT one of {', '.join(TEXT_CATS)} and IMAGE one of "
        f"{', '.join(IMAGE_CATS)} (e.g. relation->object1), or self:IMAGE->IMAGE "
        "(self-attention from the first image category to the second; needs --self-attn)"
    )


def parse_query(text: str) -> Query:
    raw = (text or "").strip()
    attn = "cross"
    if raw.startswith("self:"):
        attn, raw = "self", raw[5:]
    a, sep, b = raw.partition("->")
    a, b = a.strip(), b.strip()
    if attn == "cross" and sep and a in TEXT_CATS and b in IMAGE_CATS:
        return Query("cross", a, b)
    if attn == "self" and sep and a in IMAGE_CATS and b in IMAGE_CATS:
        # stored as [query image cat, key image cat]: a attends to b
        return Query("self", b, a)
    raise UserError(f"unknown query {text!r}; use {query_help()}")


def parse_steps(text: str | None, n_steps: int) -> list[int]:
    """ "0-3", "0,2,5-7" or None (all steps) -> sorted step indices within 0..n_steps-1."""
    if text is None or str(text).strip() in ("", "all"):
        return list(range(n_steps))
    out: set[int] = set()
    try:
        for part in str(text).split(","):
            lo, _, hi = part.strip().partition("-")
            lo_i, hi_i = int(lo), int(hi) if hi else int(lo)
            if lo_i > hi_i:
                raise ValueError
            out.update(range(lo_i, hi_i + 1))
    except ValueError:
        raise UserError(f"bad --steps {text!r}; use e.g. 0-3 or 0,2,5-7") from None
    bad = [s for s in out if not 0 <= s < n_steps]
    if bad:
        raise UserError(f"--steps {text!r} is outside the run's steps 0-{n_steps - 1}")
    return sorted(out)


def resolve_run(store: Store, run: str | None) -> str:
    """`run`, or the newest complete synopsis run; a clear error if there is none."""
    if run:
        if not store.has_run(KIND, run):
            have = ", ".join(store.runs(KIND)) or "none"
            raise UserError(f"no synopsis run {run!r} in {store.path} (runs: {have})")
        return run
    found = store.latest_run(KIND, complete=True)
    if found is None:
        raise UserError(
            f"no complete synopsis run in {store.path}; run `dit-workbench synopsis CKPT` first"
        )
    return found


def query_values(store: Store, run: str, query: Query, branch: str = "cond") -> np.ndarray:
    """[sample, step, layer, head] values of the query (NaN where the image category is empty)."""
    b = BRANCHES.index(branch)
    if query.attn == "cross":
        name = _flows(store, run, "cross", len(TEXT_CATS))
        idx = (IMAGE_CATS.index(query.target), TEXT_CATS.index(query.source))
    else:
        if "self" not in store.datasets(KIND, run):
            raise UserError(
                f"synopsis run {run!r} has no self-attention summary; "
                "run `dit-workbench synopsis CKPT --self-attn`"
            )
        name = _flows(store, run, "self", len(IMAGE_CATS))
        idx = (IMAGE_CATS.index(query.target), IMAGE_CATS.index(query.source))
    everything = slice(None)
    vals = store.read(KIND, run, name, index=(everything,) * 3 + (b, everything, *idx))
    return np.asarray(vals, dtype=np.float32)


def _flows(store: Store, run: str, name: str, sources: int) -> str:
    """The synopsis flow dataset `name`, checked to be numbers of shape [sample, step, layer,
    branch, head, image category, source category] before it is read: a cache damaged or
    written by something else gives one line naming the file and the dataset."""
    shape, dtype = store.datasets(KIND, run).get(name, (None, None))
    want = (len(BRANCHES), len(IMAGE_CATS), sources)
    if (
        shape is None
        or len(shape) != 7
        or (shape[3], *shape[5:]) != want
        or dtype.kind not in "fiu"
    ):
        got = f"shape {shape}, {dtype}" if shape is not None else "missing"
        raise UserError(
            f"cannot read /{KIND}/{run}/{name} in cache {store.source(KIND, run)}: {got}, "
            f"expected numbers [sample, step, layer, {want[0]}, head, {want[1]}, {want[2]}]; "
            "the file is damaged or not a synopsis: move it away to rebuild it"
        )
    return name


def _sample_filter(store: Store, run: str, correct_only: bool) -> np.ndarray | None:
    if not correct_only:
        return None
    return np.asarray(store.read(KIND, run, f"eval/{CORRECT_METRIC}"), dtype=bool)


def rank_heads(
    store: Store,
    run: str | None = None,
    query: str = "relation->object1",
    steps: str | None = None,
    agg: str = "max",
    correct_only: bool = False,
    branch: str = "cond",
) -> list[dict]:
    """One row per layer x head: HEAD_COLUMNS, best first."""
    if agg not in ("max", "mean"):
        raise UserError(f"--agg must be max or mean (got {agg!r})")
    if branch not in BRANCHES:
        raise UserError(f"branch must be one of {', '.join(BRANCHES)} (got {branch!r})")
    q = parse_query(query)
    run = resolve_run(store, run)
    vals = query_values(store, run, q, branch)  # [N, S, L, H]
    keep = _sample_filter(store, run, correct_only)
    if keep is not None:
        vals = vals[keep[: len(vals)]]
    if len(vals) == 0:
        raise UserError(
            f"no samples left in run {run!r}"
            + (
                f" (none scored correct on {CORRECT_METRIC}; drop --correct-only)"
                if correct_only
                else ""
            )
        )
    sel = parse_steps(steps, vals.shape[1])
    v = vals[:, sel]
    with np.errstate(all="ignore"), _quiet():
        per_sample = np.nanmax(v, axis=1) if agg == "max" else np.nanmean(v, axis=1)
        score = np.nanmean(per_sample, axis=0)  # [L, H]
        by_step = np.nanmean(v, axis=0)  # [S', L, H]
    n = np.sum(~np.isnan(per_sample), axis=0)
    finite = score[np.isfinite(score)]
    mu, sd = (finite.mean(), finite.std()) if finite.size else (np.nan, np.nan)
    layers, heads = score.shape
    rows = []
    for layer in range(layers):
        for head in range(heads):
            s = float(score[layer, head])
            col = by_step[:, layer, head]
            peak = sel[int(np.nanargmax(col))] if np.isfinite(col).any() else None
            z = (s - mu) / sd if sd and np.isfinite(s) else 0.0
            rows.append({"layer": layer, "head": head, "score": s, "peak_step": peak,
                         "z": float(z), "n_samples": int(n[layer, head])})  # fmt: skip
    rows.sort(key=lambda r: -r["score"] if np.isfinite(r["score"]) else np.inf)
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return [{c: r[c] for c in HEAD_COLUMNS} for r in rows]


def head_map(store: Store, run: str | None, query: str, step: str | int = "all", agg: str = "max"):
    """[layer, head] matrix of the query at one step (mean over samples), or ("all") the score."""
    run = resolve_run(store, run)
    if str(step) == "all":
        rows = rank_heads(store, run, query, agg=agg)
        layers = 1 + max(r["layer"] for r in rows)
        heads = 1 + max(r["head"] for r in rows)
        m = np.full((layers, heads), np.nan)
        for r in rows:
            m[r["layer"], r["head"]] = r["score"]
        return m
    vals = query_values(store, run, parse_query(query))
    (s,) = parse_steps(str(step), vals.shape[1]) if str(step).isdigit() else (None,)
    if s is None:
        raise UserError(f"step must be an integer or 'all' (got {step!r})")
    with np.errstate(all="ignore"), _quiet():
        return np.nanmean(vals[:, s], axis=0)


def head_detail(store: Store, run: str | None, layer: int, head: int, category: str = "relation"):
    """Rows (sample, prompt, step, map 8x8) of the stored per-token maps of one head."""
    run = resolve_run(store, run)
    if category not in TEXT_CATS:
        raise UserError(f"unknown text category {category!r}; use one of {', '.join(TEXT_CATS)}")
    attrs = store.attrs(KIND, run)
    layers, heads = int(attrs["layers"]), int(attrs["heads"])
    if not (0 <= layer < layers and 0 <= head < heads):
        raise UserError(f"head {layer}.{head} is out of range: layers 0-{layers - 1}, "
                        f"heads 0-{heads - 1}")  # fmt: skip
    if "detail_maps" not in store.datasets(KIND, run):
        return []
    every = slice(None)
    index = (every, every, layer, head, every, TEXT_CATS.index(category))
    maps = np.asarray(store.read(KIND, run, "detail_maps", index=index), dtype=np.float32)
    prompts = store.read(KIND, run, "prompts")[: len(maps)]
    side = int(round(maps.shape[-1] ** 0.5))
    return [
        {
            "sample": i,
            "prompt": prompts[i],
            "step": s,
            "map": maps[i, s].reshape(side, side).round(5).tolist(),
        }  # fmt: skip
        for i in range(maps.shape[0])
        for s in range(maps.shape[1])
    ]


def sample_images(store: Store, run: str | None) -> list[dict]:
    run = resolve_run(store, run)
    if "detail_images" not in store.datasets(KIND, run):
        return []
    imgs = store.read(KIND, run, "detail_images")
    prompts = store.read(KIND, run, "prompts")[: len(imgs)]
    return [
        {"sample": i, "prompt": prompts[i], "image": imgs[i].tolist()} for i in range(len(imgs))
    ]


def run_summary(store: Store, run: str) -> dict:
    a = store.attrs(KIND, run)
    return {
        k: a.get(k) for k in ("n_samples", "steps", "cfg", "encoder", "complete", "created")
    } | {"image_categories": json.loads(a.get("image_categories", "[]"))}


class _quiet:
    """Silence numpy's all-NaN-slice warnings: NaN results are the answer there."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
