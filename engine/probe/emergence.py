"""When does the circuit form? Weight-space screening of every kept checkpoint of a run.

Screening needs no sampling (well under a second per checkpoint), so a run whose history was
kept (`train --keep-history`, engine.train.history) gives each head's relation-head score at every
checkpoint for the cost of loading them: the relation head's emergence curve, beside the
evaluator's learning curves from the run's `metrics.jsonl` (engine.train.curves).

Per checkpoint (its history copy, or a full checkpoint still kept when the step has none):
`engine.probe.screening.screen` over all heads x the eight relations, kept as `cosine`,
`projection`, `energy` [S, L, H, R]. A head's score at a step is the mean over relations of the
chosen metric (cosine by default): what `dit-workbench screen --best` ranks by. Optionally
(`synopsis` N > 0) a small attention synopsis per checkpoint (N evaluation prompts, one seed),
stored in that checkpoint's own cache as usual, reduced here to each head's
`relation->object1` score [S, L, H] and the samples' spatial accuracy [S].

**Stored** in the run's cache file `<cache>/<run>-history-<id12>.h5` (id: sha256 of the run
folder's resolved path; root attribute `checkpoint_path` is the run folder), kind `emergence`,
runs `emergence-NNNN`: `steps` [S] int64, `images_seen` [S], `checkpoint_hashes` [S],
`checkpoint_paths` [S], `relations` [R], `cosine`/`projection`/`energy` [S, L, H, R] float32,
with `synopsis_score` [S, L, H] and `synopsis_spatial` [S] when asked; attributes `params`
(JSON: method_version, the screening's params, synopsis settings), `run_path`, `num_layers`,
`num_heads`, plus the store's provenance. A new request reuses every stored step whose checkpoint
hash is unchanged (same params and code version) and screens only the new checkpoints.

**Modules**: this one computes it, stores it as plain arrays and attributes through an
engine.store.cache.Store and reads it back (`stored_emergence`); engine.store.emergence names a
run's own cache file; engine.ops.emergence is the
operation (`dit-workbench emergence`, job kind `emergence`); engine.service.probe_tables serves
the `emergence` table and engine.report its section of the reproduction report.

**First pass**: the first kept step at which a series reaches its threshold; **stays from**: the
first step from which it stays at or above it to the end (engine.train.curves.learned_at).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.core.errors import UserError
from engine.core.sampling import DEFAULT_SAMPLING
from engine.store.cache import Store
from engine.store.emergence import run_store

KIND = "emergence"
METHOD_VERSION = 1
HEAD_THRESHOLD = 0.5  # mean cosine over relations (L2H2 of mini-rte-lr1e-3 at step 4800: 0.61)
METRIC_THRESHOLD = 0.5  # evaluator metrics: the curves' "learned" threshold
RELATION_QUERY = "relation->object1"
EVAL_METRICS = ("color", "shape", "exist_binding", "unique_binding", "spatial", "color_relation")
SYNOPSIS_STEPS = DEFAULT_SAMPLING.steps  # the small per-checkpoint synopsis samples as usual


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


@dataclass
class HeadEmergence:
    run_path: str
    steps: list[int]
    images_seen: list[int]
    hashes: list[str]
    paths: list[str]
    relations: list[str]
    scores: dict[str, np.ndarray]  # metric -> [S, L, H, R]
    synopsis: np.ndarray | None = None  # [S, L, H] relation->object1
    synopsis_spatial: np.ndarray | None = None  # [S]
    params: dict = field(default_factory=dict)
    name: str | None = None  # the stored run
    cache: str | None = None

    @property
    def num_layers(self) -> int:
        return int(self.scores["cosine"].shape[1])

    @property
    def num_heads(self) -> int:
        return int(self.scores["cosine"].shape[2])

    def head_scores(self, metric: str = "cosine") -> np.ndarray:
        """[S, L, H]: each head's mean score over relations at every step."""
        from engine.probe.screening import check_metric

        return self.scores[check_metric(metric)].astype(np.float64).mean(-1)

    def top_heads(self, k: int = 5, metric: str = "cosine") -> list[tuple[int, int]]:
        """The k heads with the highest score at the last kept step (ties: lower layer, head)."""
        last = self.head_scores(metric)[-1]
        order = sorted(np.ndindex(last.shape), key=lambda lh: (-last[lh], lh))
        return [(int(a), int(b)) for a, b in order[: max(0, k)]]

    def arrays(self) -> dict:
        from engine.probe.screening import METRICS

        out = {
            "steps": np.asarray(self.steps, dtype=np.int64),
            "images_seen": np.asarray(self.images_seen, dtype=np.int64),
            "checkpoint_hashes": list(self.hashes),
            "checkpoint_paths": list(self.paths),
            "relations": list(self.relations),
        }
        for m in METRICS:
            out[m] = self.scores[m].astype(np.float32)
        if self.synopsis is not None:
            out["synopsis_score"] = self.synopsis.astype(np.float32)
            out["synopsis_spatial"] = np.asarray(self.synopsis_spatial, dtype=np.float32)
        return out

    @classmethod
    def from_arrays(cls, a: dict, attrs: dict, name: str, cache: str) -> HeadEmergence:
        from engine.probe.screening import METRICS

        try:
            params = json.loads(attrs.get("params", "{}"))
        except (TypeError, ValueError):
            params = {}
        return cls(
            run_path=str(attrs.get("run_path", "")),
            steps=[int(s) for s in a["steps"]],
            images_seen=[int(s) for s in a["images_seen"]],
            hashes=list(a["checkpoint_hashes"]),
            paths=list(a["checkpoint_paths"]),
            relations=list(a["relations"]),
            scores={m: np.asarray(a[m]) for m in METRICS},
            synopsis=np.asarray(a["synopsis_score"]) if "synopsis_score" in a else None,
            synopsis_spatial=(
                np.asarray(a["synopsis_spatial"]) if "synopsis_spatial" in a else None
            ),
            params=params,
            name=name,
            cache=cache,
        )


# --- where things are -------------------------------------------------------------------------


def run_folder(run: str | os.PathLike) -> Path:
    p = Path(run)
    if not p.is_dir():
        raise UserError(
            f"run folder {str(run)!r} does not exist; give a training run folder "
            "(trained with --keep-history for a checkpoint per evaluation)"
        )
    return p


def kept_checkpoints(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint a run still has: its history copies (float16), and
    full checkpoints `step-N/` for steps the history lacks."""
    from engine.train.history import history_steps

    p = run_folder(run)
    found = dict(history_steps(p))
    for d in p.glob("step-*"):
        m = re.match(r"^step-(\d+)$", d.name)
        if m and d.is_dir() and (d / "workbench.json").is_file():
            found.setdefault(int(m.group(1)), d)
    if not found:
        raise UserError(
            f"{str(run)!r} has no checkpoints (no history/step-N/ or step-N/ folders); give a "
            "training run folder, trained with --keep-history to keep every checkpoint"
        )
    return sorted(found.items())


def emergence_params(synopsis: int = 0, synopsis_steps: int = SYNOPSIS_STEPS) -> dict:
    from engine.data.relations import RELATIONS
    from engine.probe.screening import screen_params

    return {
        "method_version": METHOD_VERSION,
        "screening": screen_params(RELATIONS, "first", False),
        "synopsis": int(synopsis),
        "synopsis_steps": int(synopsis_steps) if synopsis else None,
        "synopsis_query": RELATION_QUERY if synopsis else None,
    }


def params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def load_emergence(store: Store, name: str | None = None) -> HeadEmergence | None:
    """A stored emergence run (default: the newest), or None when there is none."""
    name = name or store.latest_run(KIND)
    if name is None:
        return None
    return HeadEmergence.from_arrays(
        store.read(KIND, name), store.attrs(KIND, name), name, str(store.path)
    )


def stored_emergence(run: str | os.PathLike, cache_dir=None) -> HeadEmergence:
    """The newest stored emergence of a run, or a UserError saying how to make it."""
    store = run_store(run_folder(run), cache_dir)
    e = load_emergence(store) if store.path.exists() else None
    if e is None:
        raise UserError(
            f"no emergence stored for {str(run)!r}; run `dit-workbench emergence {run}`"
        )
    return e


# --- computing -----------------------------------------------------------------------------


def _synopsis_of(ckpt, n: int, steps: int, store: Store) -> tuple[np.ndarray, float]:
    """A small synopsis (n evaluation prompts, one seed) stored in `store` (the checkpoint's
    own cache); each head's relation->object1 score [L, H] and the samples' spatial accuracy."""
    from engine.core.sampling import SamplingSettings
    from engine.data.prompts import eval_prompts
    from engine.probe.ranking import rank_heads
    from engine.probe.synopsis import run_synopsis

    ps = eval_prompts()
    prompts = ps[:: max(1, len(ps) // n)][:n]
    name = run_synopsis(ckpt, prompts, 1, SamplingSettings(steps=steps), store=store, detail=0)
    score = np.full((ckpt.num_layers, ckpt.num_heads), np.nan)
    for r in rank_heads(store, name, query=RELATION_QUERY):
        score[r["layer"], r["head"]] = r["score"]
    spatial = float(np.mean(np.asarray(store.read("synopsis", name, "eval/spatial"), dtype=bool)))
    return score, spatial


def compute_emergence(
    run: str | os.PathLike,
    store: Store,
    synopsis: int = 0,
    synopsis_steps: int = SYNOPSIS_STEPS,
    recompute: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    device: str = "auto",
    checkpoint_store: Callable[[object], Store] | None = None,
) -> HeadEmergence:
    """Screen every kept checkpoint of `run` (reusing stored steps with unchanged hashes) and
    store the result in `store` (the run's own cache: engine.store.emergence.run_store) as a new
    emergence run unless it equals the newest stored one. Screening runs on the CPU (float32,
    exact); the optional synopsis samples on `device` into `checkpoint_store(ckpt)`, each
    checkpoint's own cache."""
    from engine import __version__
    from engine.core.device import check_device, resolve_device
    from engine.data.relations import RELATIONS
    from engine.model.checkpoint import load_checkpoint, read_meta
    from engine.probe.screening import METRICS, screen

    if synopsis < 0 or synopsis_steps <= 0:
        raise UserError("--synopsis must be >= 0 and --synopsis-steps positive")
    if synopsis and checkpoint_store is None:
        raise ValueError("a synopsis per checkpoint needs checkpoint_store")
    dev = resolve_device(check_device(device)) if synopsis else None
    run = run_folder(run)
    kept = kept_checkpoints(run)
    params = emergence_params(synopsis, synopsis_steps)
    old = None
    if not recompute and store.path.exists():
        name = store.latest_run(KIND, params=params_key(params), code_version=__version__)
        old = load_emergence(store, name) if name else None
    reuse = {}
    if old is not None:
        for i, (s, h) in enumerate(zip(old.steps, old.hashes, strict=True)):
            reuse[(s, h)] = i
    steps, seen, hashes, paths = [], [], [], []
    per = {m: [] for m in METRICS}
    syn, syn_sp = [], []
    relations = list(RELATIONS)
    for k, (step, path) in enumerate(kept):
        p, meta = read_meta(path)
        h = meta["hashes"]["transformer"]
        i = reuse.get((step, h))
        if i is not None:
            for m in METRICS:
                per[m].append(old.scores[m][i])
            if synopsis:
                syn.append(old.synopsis[i])
                syn_sp.append(old.synopsis_spatial[i])
        else:
            ckpt = load_checkpoint(p)
            s = screen(ckpt, RELATIONS)
            relations = s.relations
            for m in METRICS:
                per[m].append(s.scores[m])
            if synopsis:
                if dev.type != "cpu":
                    ckpt.to(dev)
                sc, sp = _synopsis_of(ckpt, synopsis, synopsis_steps, checkpoint_store(ckpt))
                syn.append(sc)
                syn_sp.append(sp)
        steps.append(step)
        seen.append(int(meta.get("images_seen") or 0))
        hashes.append(h)
        paths.append(str(p.resolve()))
        if progress:
            progress(k + 1, len(kept), step)
    e = HeadEmergence(
        run_path=str(run.resolve()),
        steps=steps,
        images_seen=seen,
        hashes=hashes,
        paths=paths,
        relations=relations,
        scores={m: np.stack(v).astype(np.float32) for m, v in per.items()},
        synopsis=np.stack(syn).astype(np.float32) if synopsis else None,
        synopsis_spatial=np.asarray(syn_sp, dtype=np.float32) if synopsis else None,
        params=params,
        cache=str(store.path),
    )
    if old is not None and old.steps == e.steps and old.hashes == e.hashes:
        e.name = old.name  # nothing new: the stored run already says all this
        return e
    attrs = {
        "params": params_key(params),
        "run_path": e.run_path,
        "num_layers": e.num_layers,
        "num_heads": e.num_heads,
        "n_checkpoints": len(steps),
    }
    e.name = store.write_run(KIND, e.arrays(), attrs, run=store.new_run_name(KIND, "emergence"))
    return e


# --- tables ----------------------------------------------------------------------------------


def first_pass(steps: list[int], values, threshold: float) -> int | None:
    """The first step at which a value reaches `threshold` (None: never)."""
    for s, v in zip(steps, values, strict=True):
        if v is not None and np.isfinite(v) and v >= threshold:
            return int(s)
    return None


def _stays_from(steps: list[int], values, threshold: float) -> int | None:
    from engine.train.curves import learned_at

    recs = [
        {"step": s, "v": None if v is None else float(v)}
        for s, v in zip(steps, values, strict=True)
    ]
    return learned_at(recs, "v", threshold)


def step_rows(e: HeadEmergence, metric: str = "cosine", heads=None, curves=None) -> list[dict]:
    """One row per kept step: step, images_seen, a column per head (its mean `metric` over
    relations; all heads unless `heads` is given) and the evaluator metrics at that step."""
    sc = e.head_scores(metric)
    heads = heads if heads is not None else list(np.ndindex(sc.shape[1:]))
    by_step = {r["step"]: r for r in curves or []}
    rows = []
    for i, step in enumerate(e.steps):
        row = {"step": step, "images_seen": e.images_seen[i]}
        for la, h in heads:
            row[head_name(la, h)] = round(float(sc[i, la, h]), 4)
        for m in EVAL_METRICS:
            if any(m in r for r in by_step.values()):
                v = by_step.get(step, {}).get(m)
                row[m] = round(float(v), 4) if isinstance(v, int | float) else None
        rows.append(row)
    return rows


def pass_rows(
    e: HeadEmergence,
    curves: list[dict],
    threshold: float = HEAD_THRESHOLD,
    metric_threshold: float = METRIC_THRESHOLD,
    top: int = 5,
    metric: str = "cosine",
) -> list[dict]:
    """The top heads (by score at the last step) and each evaluator metric: the threshold, the
    first step it is reached, the step from which it stays, and the last value."""
    sc = e.head_scores(metric)
    rows = []
    for la, h in e.top_heads(top, metric):
        vals = [float(v) for v in sc[:, la, h]]
        rows.append(
            {
                "series": head_name(la, h),
                "kind": "screening",
                "threshold": threshold,
                "first_pass": first_pass(e.steps, vals, threshold),
                "stays_from": _stays_from(e.steps, vals, threshold),
                "final": round(vals[-1], 4),
            }
        )
    csteps = [r["step"] for r in curves]
    for m in EVAL_METRICS:
        if not any(isinstance(r.get(m), int | float) for r in curves):
            continue
        vals = [r.get(m) if isinstance(r.get(m), int | float) else None for r in curves]
        rows.append(
            {
                "series": m,
                "kind": "evaluator",
                "threshold": metric_threshold,
                "first_pass": first_pass(csteps, vals, metric_threshold),
                "stays_from": _stays_from(csteps, vals, metric_threshold),
                "final": None if vals[-1] is None else round(float(vals[-1]), 4),
            }
        )
    return rows


def run_curves(run: str | os.PathLike) -> list[dict]:
    """The run's metrics.jsonl records ([] when it has none)."""
    from engine.train.curves import read_curves

    try:
        return read_curves(run)
    except UserError:
        return []
