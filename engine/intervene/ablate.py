"""Ablation runs: the baseline and each intervention on the same (prompt, seed) samples,
scored by the evaluator, compared per metric with a paired-bootstrap confidence interval.

Samples. `--n N` draws N (prompt, seed) pairs from the prompt set: the prompts are shuffled
once with a generator seeded by `seed` and taken in that order, and the image seed of the k-th
sample is `seed + k // P` (P prompts). So n <= P gives N distinct prompts with seed `seed`;
n = P * S gives every prompt with seeds seed .. seed+S-1. Each sample's initial noise comes
from its (prompt, seed) pair, so the baseline and every intervention start from the same noise.

Scores. Every image is scored by `engine.eval.evaluate` against its original prompt; each metric is a
0/1 value per sample. For metric m: baseline = mean over samples of the baseline's values,
intervened = the same for the intervention, delta = intervened - baseline, and the 95% interval
is the percentile interval of the paired bootstrap: the N per-sample differences are resampled
with replacement `resamples` times (default 2000, generator seeded with 0, the same resampled
indices for every metric) and the 2.5% and 97.5% quantiles of the resampled mean differences
are taken. Flips count samples that went correct -> wrong (`lost`) and wrong -> correct
(`gained`).

Cache. The baseline sample set of (checkpoint, prompts, seeds, steps, cfg, batch size, device)
is stored once as run `baseline-<key>`, reused by later runs and sweeps; each intervention is run
`ablate-NNNN`, each sweep `sweep-NNNN`, with provenance; images up to `IMAGE_BUDGET` bytes a run.

Sweeps. `run_sweep(ckpt, "mask-head *.* tokens=relation", ...)` runs one intervention per head
against the one (cached) baseline: N heads cost N + 1 sample sets, not 2N. Its table
[layer, head, metric] of delta and interval is what `sweep_rows` returns. The heads' sample sets
are packed: several share one forward batch, each head acting on its own rows
(`engine.intervene.sample.sample_packed`; `batch_size` rows per batch on the CPU, as many as
free memory allows on CUDA), and the evaluator scores each batch in a worker thread while the
next one samples. A packed row is the row sampled alone up to the rounding of another batch size
(on the CPU at most one level in a few pixels; docs/performance.md). `SWEEP` switches both off.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engine.core.errors import UserError
from engine.core.sampling import DEFAULT_SAMPLING, SamplingSettings
from engine.data.prompts import Prompt
from engine.eval.evaluate import METRICS, evaluate_arrays
from engine.intervene.base import Composite
from engine.intervene.results import (  # noqa: F401  (re-exported)
    ABLATION_COLUMNS,
    KIND,
    SWEEP_COLUMNS,
    _sweep_cells,
    _write_new,
    ablation_rows,
    head_deltas,
    result_rows,
    sweep_rows,
    sweep_runs,
)
from engine.intervene.sample import preflight
from engine.intervene.spec import expand_sweep, parse_spec
from engine.store.cache import Store

IMAGE_BUDGET = 32 << 20  # bytes of images stored per run
# How sweeps sample (both on by default; benchmarks/ablation_sweep.py times them off):
# "pack": several heads' sample sets share forward batches; "overlap": the evaluator scores one
# forward batch in a worker thread while the next one samples.
SWEEP = {"pack": True, "overlap": True}
DEFAULT_RESAMPLES = 2000
LEVEL = 0.95

Progress = Callable[[int, int], None]  # (images done, images in total)


# samples and statistics


def draw_samples(prompts: Sequence[Prompt], n: int, seed: int) -> tuple[list[Prompt], list[int]]:
    """N (prompt, seed) pairs: a seeded shuffle of the prompts, wrapping with the next seed."""
    if n <= 0:
        raise UserError(f"--n must be positive (got {n})")
    if not prompts:
        raise UserError("the prompt set is empty; give prompts to sample")
    order = np.random.default_rng(seed).permutation(len(prompts))
    chosen = [prompts[int(order[k % len(prompts)])] for k in range(n)]
    return chosen, [seed + k // len(prompts) for k in range(n)]


def paired_bootstrap(
    baseline,
    intervened,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(delta, ci_low, ci_high) of mean(intervened - baseline), per column, paired bootstrap.

    `baseline`, `intervened`: [N] or [N, M] arrays of per-sample values. The N differences are
    resampled with replacement; the interval is the percentile interval at `level`. With no
    difference at all the delta and both ends are exactly 0.
    """
    b = np.asarray(baseline, dtype=np.float64)
    x = np.asarray(intervened, dtype=np.float64)
    if b.shape != x.shape:
        raise ValueError(f"paired samples differ in shape: {b.shape} vs {x.shape}")
    squeeze = b.ndim == 1
    d = (x - b).reshape(len(b), -1)
    n, m = d.shape
    if n == 0:
        raise ValueError("no samples to bootstrap")
    if resamples < 1:
        raise ValueError("resamples must be positive")
    delta = d.mean(axis=0)
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, m))
    chunk = max(1, (1 << 22) // max(n * m, 1))
    for i in range(0, resamples, chunk):
        k = min(chunk, resamples - i)
        idx = rng.integers(0, n, size=(k, n))
        means[i : i + k] = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    lo, hi = np.minimum(lo, delta), np.maximum(hi, delta)  # guard float round-off at the ends
    if squeeze:
        return float(delta[0]), float(lo[0]), float(hi[0])
    return delta, lo, hi


def per_sample_metrics(images, prompts: Sequence[Prompt]) -> np.ndarray:
    """bool [N, len(METRICS)]: each image's evaluator metrics."""
    if len(images) == 0:
        return np.zeros((0, len(METRICS)), dtype=bool)
    arr = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    res = evaluate_arrays(arr, list(prompts))
    return np.array([[bool(r[m]) for m in METRICS] for r in res.per_image], dtype=bool)


def compare(base: np.ndarray, inter: np.ndarray, resamples: int, level: float = LEVEL) -> dict:
    """Per metric: baseline, intervened, delta, ci_low, ci_high, lost, gained."""
    delta, lo, hi = paired_bootstrap(base, inter, resamples, 0, level)
    out = {}
    for j, m in enumerate(METRICS):
        out[m] = {
            "baseline": float(base[:, j].mean()),
            "intervened": float(inter[:, j].mean()),
            "delta": float(delta[j]),
            "ci_low": float(lo[j]),
            "ci_high": float(hi[j]),
            "lost": int((base[:, j] & ~inter[:, j]).sum()),
            "gained": int((~base[:, j] & inter[:, j]).sum()),
        }
    return out


def _summary_arrays(stats: dict) -> dict[str, np.ndarray]:
    keys = ("baseline", "intervened", "delta", "ci_low", "ci_high", "lost", "gained")
    return {k: np.array([stats[m][k] for m in METRICS]) for k in keys}


# the run


class _Context:
    """What one ablation or sweep call shares: model, samples, sampling settings, store,
    progress."""

    def __init__(self, ckpt, prompts, n, sampling: SamplingSettings, store, progress, label):
        from engine.model.checkpoint import load_checkpoint

        if isinstance(ckpt, (str, Path)):
            ckpt = load_checkpoint(ckpt)
        self.ckpt = ckpt
        self.prompts, self.seeds = draw_samples(prompts, n, sampling.seed)
        self.texts = [p.text for p in self.prompts]
        ckpt.text_encoder.tokenize(self.texts)  # unknown words fail before any sampling
        self.n, self.sampling = n, sampling
        self.store, self.label = store, label
        self.progress = progress
        self.done = 0
        self.total = 0
        param = next(ckpt.transformer.parameters())
        dtype = str(param.dtype).removeprefix("torch.")
        if param.device.type == "cuda":  # sampled under autocast: its precision is the key
            from engine.core.device import INFERENCE_PRECISION

            dtype = {"bf16": "bfloat16-autocast"}.get(INFERENCE_PRECISION["cuda"], dtype)
        self.device = f"{param.device.type}:{dtype}"

    def params(self) -> dict:
        s = self.sampling
        return {
            "prompts": self.label,
            "n": self.n,
            "seed": s.seed,
            "steps": s.steps,
            "cfg": s.cfg,
            "batch_size": s.batch_size,
            "device": self.device,
        }

    def baseline_key(self) -> str:
        blob = json.dumps(
            {
                "checkpoint": self.ckpt.hash,
                "texts": self.texts,
                "seeds": self.seeds,
                "steps": self.sampling.steps,
                "cfg": self.sampling.cfg,
                "batch_size": self.sampling.batch_size,
                "device": self.device,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def tick(self, k: int) -> None:
        self.done += k
        if self.progress:
            self.progress(self.done, self.total)

    def sample(self, composite: Composite):
        from engine.intervene.sample import sample_intervened

        return sample_intervened(
            self.ckpt, composite, self.texts, self.seeds, self.sampling, progress=self.tick
        )

    def images_arrays(self, images) -> tuple[dict, bool]:
        arr = images.numpy()
        if arr.nbytes > IMAGE_BUDGET:
            return {}, False
        return {"images": arr}, True

    def cached_baseline(self) -> tuple[str, np.ndarray] | None:
        if self.store is None:
            return None
        name = f"baseline-{self.baseline_key()[:16]}"
        if not self.store.has_run(KIND, name):
            return None
        attrs = self.store.attrs(KIND, name)
        if attrs.get("key") != self.baseline_key():
            return None
        names = self.store.read(KIND, name, "metrics")
        if list(names) != list(METRICS):
            return None
        return name, self.store.read(KIND, name, "per_sample").astype(bool)

    def baseline(self) -> tuple[str | None, np.ndarray, bool]:
        """(run name, per-sample metrics, reused?)"""
        hit = self.cached_baseline()
        if hit is not None:
            return hit[0], hit[1], True
        self.total += len(self.texts)
        images, _ = self.sample(Composite())
        per = per_sample_metrics(images, self.prompts)
        name = None
        if self.store is not None:
            key = self.baseline_key()
            name = f"baseline-{key[:16]}"
            imgs, stored = self.images_arrays(images)
            try:
                self.store.write_run(
                    KIND,
                    {
                        "metrics": list(METRICS),
                        "per_sample": per.astype(np.uint8),
                        "texts": self.texts,
                        "seeds": np.array(self.seeds, dtype=np.int64),
                        "mean": per.mean(axis=0),
                        **imgs,
                    },
                    {
                        "role": "baseline",
                        "key": key,
                        "params": self.params(),
                        "images_stored": stored,
                        **self.params(),
                    },
                    run=name,
                )
            except UserError:
                if not self.store.has_run(KIND, name):  # not a concurrent writer: real error
                    raise
        return name, per, False


def _as_composite(spec, ckpt, steps) -> Composite:
    if isinstance(spec, Composite):
        spec.check(ckpt.num_layers, ckpt.num_heads, steps)
        return spec
    return parse_spec(spec, ckpt.num_layers, ckpt.num_heads, steps)


def _sets_per_intervention(comp: Composite) -> int:
    sources = {p.source for p in comp.parts if p.needs_source}
    return 1 + len(sources)


def run_ablation(
    ckpt,
    specs: Sequence[str | Composite],
    prompts: Sequence[Prompt],
    n: int = 25,
    sampling: SamplingSettings = DEFAULT_SAMPLING,
    store: Store | None = None,
    progress: Progress | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    prompts_label: str = "eval",
) -> dict:
    """Baseline (cached) + one sample set per spec, scored and compared; see the module doc.

    `ckpt` is a loaded checkpoint or its path; `store` where the baseline is cached and
    the run written (None: neither). Returns a JSON-ready dict; `result["interventions"][i]["metrics"][m]`
    has baseline, intervened, delta, ci_low, ci_high, lost and gained.
    """
    if not specs:
        raise UserError("give at least one --intervention SPEC (or a --sweep)")
    ctx = _Context(ckpt, prompts, n, sampling, store, progress, prompts_label)
    ckpt = ctx.ckpt
    comps = [
        _as_composite(s, ckpt, sampling.steps) for s in specs
    ]  # every spec checked before sampling
    for comp in comps:
        preflight(ckpt.text_encoder, comp, ctx.texts)
    ctx.total = sum(_sets_per_intervention(c) for c in comps) * len(ctx.texts)
    base_run, base, reused = ctx.baseline()
    out = _result_head(ctx, base_run, base, reused, resamples)
    out["interventions"] = []
    for comp in comps:
        t0 = time.perf_counter()
        images, captions = ctx.sample(comp)
        inter = per_sample_metrics(images, ctx.prompts)
        stats = compare(base, inter, resamples)
        entry = {"intervention": comp.text(), "run": None, "metrics": stats}
        if store is not None:
            imgs, stored = ctx.images_arrays(images)
            entry["run"] = _write_new(
                store,
                "ablate",
                {
                    "metrics": list(METRICS),
                    "per_sample": inter.astype(np.uint8),
                    "texts": ctx.texts,
                    "captions": captions,
                    "seeds": np.array(ctx.seeds, dtype=np.int64),
                    **_summary_arrays(stats),
                    **imgs,
                },
                {
                    "role": "intervention",
                    "intervention": comp.text(),
                    "baseline_run": base_run or "",
                    "resamples": resamples,
                    "level": LEVEL,
                    "seconds": round(time.perf_counter() - t0, 3),
                    "images_stored": stored,
                    "params": ctx.params(),
                    **ctx.params(),
                },
            )
        out["interventions"].append(entry)
    return out


def _result_head(ctx: _Context, base_run, base: np.ndarray, reused: bool, resamples) -> dict:
    return {
        "checkpoint": str(ctx.ckpt.path),
        "checkpoint_hash": ctx.ckpt.hash,
        **ctx.params(),
        "resamples": resamples,
        "level": LEVEL,
        "baseline_run": base_run,
        "baseline_reused": reused,
        "baseline": {m: float(base[:, j].mean()) for j, m in enumerate(METRICS)},
    }


def run_sweep(
    ckpt,
    template: str,
    prompts: Sequence[Prompt],
    n: int = 25,
    sampling: SamplingSettings = DEFAULT_SAMPLING,
    store: Store | None = None,
    progress: Progress | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    prompts_label: str = "eval",
) -> dict:
    """One intervention per head of the template's "*" against one cached baseline.

    Returns the result head of `run_ablation` plus `sweep` (the template), `run` (the stored
    sweep run), `sample_sets` (sets sampled by this call) and `cells`: one row per covered
    (layer, head, metric) with delta, ci_low, ci_high, baseline, intervened, lost, gained.
    """
    ctx = _Context(ckpt, prompts, n, sampling, store, progress, prompts_label)
    ckpt = ctx.ckpt
    cells = expand_sweep(template, ckpt.num_layers, ckpt.num_heads, sampling.steps)
    preflight(ckpt.text_encoder, cells[0][2], ctx.texts)
    per_set = _sets_per_intervention(cells[0][2])
    ctx.total = len(cells) * per_set * len(ctx.texts)
    base_run, base, reused = ctx.baseline()
    t0 = time.perf_counter()
    shape = (ckpt.num_layers, ckpt.num_heads, len(METRICS))
    tables = {k: np.full(shape, np.nan) for k in ("intervened", "delta", "ci_low", "ci_high")}
    flips = {k: np.zeros(shape, dtype=np.int64) for k in ("lost", "gained")}
    covered = np.zeros(shape[:2], dtype=bool)
    specs = []
    scored = _scored_sets(ctx, [comp for _, _, comp in cells])
    for (layer, head, comp), inter in zip(cells, scored, strict=True):
        stats = compare(base, inter, resamples)
        for j, m in enumerate(METRICS):
            for k in tables:
                tables[k][layer, head, j] = stats[m][k]
            for k in flips:
                flips[k][layer, head, j] = stats[m][k]
        covered[layer, head] = True
        specs.append(comp.text())
    out = _result_head(ctx, base_run, base, reused, resamples)
    out.update(
        sweep=template,
        run=None,
        sample_sets=len(cells) * per_set + (0 if reused else 1),
        seconds=round(time.perf_counter() - t0, 3),
    )
    if store is not None:
        out["run"] = _write_new(
            store,
            "sweep",
            {
                "metrics": list(METRICS),
                "baseline": base.mean(axis=0),
                "covered": covered,
                "specs": specs,
                **tables,
                **flips,
            },
            {
                "role": "sweep",
                "sweep": template,
                "baseline_run": base_run or "",
                "resamples": resamples,
                "level": LEVEL,
                "cells": len(cells),
                "seconds": out["seconds"],
                "params": ctx.params(),
                **ctx.params(),
            },
        )
    out["cells"] = _sweep_cells(
        METRICS, covered, tables, flips, base.mean(axis=0), ctx.n, out["run"], template
    )
    return out


def _scored_sets(ctx: _Context, comps: Sequence[Composite]) -> Iterator[np.ndarray]:
    """Each composite's per-sample metrics [N, len(METRICS)], in order.

    With SWEEP["pack"], sets share forward batches (`engine.intervene.sample.sample_packed`);
    with SWEEP["overlap"], one worker thread scores each forward batch while the next one is
    sampled. Each image is scored on its own, so neither changes a value.
    """
    if not SWEEP["pack"]:
        for comp in comps:
            images, _ = ctx.sample(comp)
            yield per_sample_metrics(images, ctx.prompts)
        return
    from engine.intervene.sample import sample_packed

    n = len(ctx.texts)
    per = [np.zeros((n, len(METRICS)), dtype=bool) for _ in comps]
    left = [n] * len(comps)
    ready: dict[int, np.ndarray] = {}
    pending: deque = deque()
    nxt = 0

    def score(pieces, images) -> list:
        prompts = [ctx.prompts[k] for p in pieces for k in range(p.start, p.stop)]
        return [pieces, per_sample_metrics(images, prompts)]

    def collect(result) -> None:
        pieces, values = result
        row = 0
        for p in pieces:
            per[p.set][p.start : p.stop] = values[row : row + p.size]
            row += p.size
            left[p.set] -= p.size
            if left[p.set] == 0:
                ready[p.set] = per[p.set]

    batches = sample_packed(ctx.ckpt, comps, ctx.texts, ctx.seeds, ctx.sampling, progress=ctx.tick)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ablate-eval") as pool:
        for pieces, images in batches:
            if SWEEP["overlap"]:
                pending.append(pool.submit(score, pieces, images))
                while len(pending) > 1:  # batch k scored while k + 1 samples, no further ahead
                    collect(pending.popleft().result())
            else:
                collect(score(pieces, images))
            while nxt in ready:
                yield ready.pop(nxt)
                nxt += 1
        while pending:
            collect(pending.popleft().result())
    while nxt in ready:
        yield ready.pop(nxt)
        nxt += 1
