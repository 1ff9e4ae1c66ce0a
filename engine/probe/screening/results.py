"""A screening's result: the `Screening` arrays, how a store keeps them (any object with the
engine.store.cache.Store methods used here), the rows the tables and the CLI show, and the
agreement with a stored synopsis ranking."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from engine.core.errors import UserError
from engine.probe.screening.method import (
    APPROXIMATION,
    METRICS,
    check_metric,
    check_relation,
    compare_rankings,
    direction_of,
    head_summary,
)
from engine.store.cache import Store

KIND = "screening"


@dataclass
class Screening:
    """One screening of a checkpoint; arrays are float32 unless noted."""

    relations: list[str]
    phrases: list[list[str]]
    grid: tuple[int, int]
    maps: np.ndarray  # [L, H, R, gh, gw] phrase map of each relation word
    refs: np.ndarray  # [R, gh, gw]
    scores: dict[str, np.ndarray]  # metric -> [L, H, R]
    fit: np.ndarray  # [L, H, R, 2] fitted slopes (a, b) of each map (x right, y down)
    token_maps: np.ndarray  # [L, H, T, gh, gw]
    token_scores: dict[str, np.ndarray]  # metric -> [L, H, T], against the token's relation
    token_relation: list[int]
    token_phrase: list[str]
    token_text: list[str]
    params: dict = field(default_factory=dict)
    run: str | None = None

    @property
    def num_layers(self) -> int:
        return self.maps.shape[0]

    @property
    def num_heads(self) -> int:
        return self.maps.shape[1]

    def relation_index(self, relation: str) -> int:
        check_relation(relation, allow_all=False)
        if relation not in self.relations:
            raise UserError(
                f"relation {relation!r} was not screened (screened: {', '.join(self.relations)})"
            )
        return self.relations.index(relation)

    def summary(self, metric: str = "cosine") -> dict[str, np.ndarray]:
        return head_summary(self.scores[check_metric(metric)])

    # storage

    def arrays(self) -> dict:
        out = {
            "relations": list(self.relations),
            "phrases": [" | ".join(p) for p in self.phrases],
            "maps": self.maps.astype(np.float32),
            "references": self.refs.astype(np.float32),
            "fit": self.fit.astype(np.float32),
            "token_maps": self.token_maps.astype(np.float32),
            "token_relation": np.asarray(self.token_relation, dtype=np.int32),
            "token_phrase": list(self.token_phrase),
            "token_text": list(self.token_text),
        }
        for m in METRICS:
            out[m] = self.scores[m].astype(np.float32)
            out[f"token_{m}"] = self.token_scores[m].astype(np.float32)
        return out

    @classmethod
    def from_arrays(cls, a: dict, params: dict | None = None, run: str | None = None) -> Screening:
        maps = np.asarray(a["maps"])
        return cls(
            relations=list(a["relations"]),
            phrases=[p.split(" | ") for p in a["phrases"]],
            grid=(maps.shape[-2], maps.shape[-1]),
            maps=maps,
            refs=np.asarray(a["references"]),
            scores={m: np.asarray(a[m]) for m in METRICS},
            fit=np.asarray(a["fit"]),
            token_maps=np.asarray(a["token_maps"]),
            token_scores={m: np.asarray(a[f"token_{m}"]) for m in METRICS},
            token_relation=[int(i) for i in a["token_relation"]],
            token_phrase=list(a["token_phrase"]),
            token_text=list(a["token_text"]),
            params=params or {},
            run=run,
        )


# --- the cache ----------------------------------------------------------------------------


def _params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def save_screening(store: Store, s: Screening, run: str | None = None) -> str:
    """Store a screening as a new run of kind "screening" (atomic, with provenance)."""
    attrs = {
        "params": _params_key(s.params),
        "num_layers": s.num_layers,
        "num_heads": s.num_heads,
        "grid": f"{s.grid[0]}x{s.grid[1]}",
        "approximation": APPROXIMATION,
        "metrics": ",".join(METRICS),
    }
    if s.params.get("text_encoder"):
        attrs["text_encoder"] = s.params["text_encoder"]
    name = store.write_run(KIND, s.arrays(), attrs, run=run or store.new_run_name(KIND, "screen"))
    s.run = name
    return name


def load_screening(store: Store, run: str) -> Screening:
    attrs = store.attrs(KIND, run)
    try:
        params = json.loads(attrs.get("params", "{}"))
    except (TypeError, ValueError):
        params = {}
    return Screening.from_arrays(store.read(KIND, run), params, run)


def find_screening(store: Store, params: dict) -> str | None:
    """The newest stored run screened with these params, or None."""
    from engine import __version__

    return store.latest_run(KIND, params=_params_key(params), code_version=__version__)


# --- rows for tables ----------------------------------------------------------------------


def _rank(rows: list[dict], key: str) -> list[dict]:
    rows.sort(key=lambda r: (-r[key], r["layer"], r["head"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows


def relation_rows(s: Screening, relation: str = "all", metric: str = "cosine") -> list[dict]:
    """One row per head x relation (or one relation), ranked by `metric` (best first)."""
    check_metric(metric)
    rels = list(s.relations) if check_relation(relation) == "all" else [relation]
    idx = [s.relation_index(r) for r in rels]
    rows = []
    for layer in range(s.num_layers):
        for head in range(s.num_heads):
            for i in idx:
                rows.append(
                    {
                        "layer": layer,
                        "head": head,
                        "relation": s.relations[i],
                        **{m: float(s.scores[m][layer, head, i]) for m in METRICS},
                    }
                )
    return _rank(rows, metric)


def best_rows(s: Screening, metric: str = "cosine") -> list[dict]:
    """One row per head, ranked by the mean of `metric` over relations (the relation-head
    score), with the best relation, its score and the selectivity (best minus the mean of the
    other relations)."""
    summ = s.summary(metric)
    rows = []
    for layer in range(s.num_layers):
        for head in range(s.num_heads):
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "mean": float(summ["mean"][layer, head]),
                    "best_relation": s.relations[int(summ["best"][layer, head])],
                    "best": float(summ["best_score"][layer, head]),
                    "selectivity": float(summ["selectivity"][layer, head]),
                }
            )
    return _rank(rows, "mean")


def token_rows(s: Screening, relation: str = "all", metric: str = "cosine") -> list[dict]:
    """One row per head x relation token (each token scored against its relation's ramp)."""
    check_metric(metric)
    check_relation(relation)
    rows = []
    for t, ri in enumerate(s.token_relation):
        rel = s.relations[ri]
        if relation != "all" and rel != relation:
            continue
        for layer in range(s.num_layers):
            for head in range(s.num_heads):
                rows.append(
                    {
                        "layer": layer,
                        "head": head,
                        "relation": rel,
                        "phrase": s.token_phrase[t],
                        "token": s.token_text[t],
                        **{m: float(s.token_scores[m][layer, head, t]) for m in METRICS},
                    }
                )
    return _rank(rows, metric)


def head_scores(s: Screening, relation: str = "all", metric: str = "cosine") -> dict:
    """{(layer, head): score} for ranking heads: one relation's score, or (all) the mean over
    relations, which is what marks a relation head."""
    check_metric(metric)
    if check_relation(relation) == "all":
        vals = s.scores[metric].mean(-1)
    else:
        vals = s.scores[metric][..., s.relation_index(relation)]
    return {
        (layer, head): float(vals[layer, head])
        for layer in range(s.num_layers)
        for head in range(s.num_heads)
    }


def map_detail(s: Screening, layer: int, head: int, relation: str) -> dict:
    """The QK map of one head and relation word, its reference ramp, scores and fitted slope."""
    i = s.relation_index(relation)
    nearest, angle = direction_of(s.fit[layer, head, i])
    return {
        "layer": layer,
        "head": head,
        "relation": relation,
        "phrases": s.phrases[i],
        "qk": s.maps[layer, head, i].astype(float).tolist(),
        "reference": s.refs[i].astype(float).tolist(),
        **{m: float(s.scores[m][layer, head, i]) for m in METRICS},
        "fitted_direction": nearest,
        "fitted_angle_deg": angle,
    }


def synopsis_head_scores(store: Store, run: str | None = None, query: str = "relation->object1"):
    """(run, {(layer, head): score}) of a stored synopsis ranking for `query` (default run: the
    newest complete one)."""
    from engine.probe.ranking import rank_heads

    if run is None:
        run = store.latest_run("synopsis", complete=True)
        if run is None:
            raise UserError(
                f"no synopsis run in {store.path}; run `dit-workbench synopsis CKPT` first "
                "(or give --cache where it is stored)"
            )
    rows = rank_heads(store, run, query=query)
    return run, {(int(r["layer"]), int(r["head"])): float(r["score"]) for r in rows}


def compare_with_synopsis(
    s: Screening,
    store: Store,
    relation: str = "all",
    metric: str = "cosine",
    query: str = "relation->object1",
    synopsis_run: str | None = None,
    k: int = 5,
) -> dict:
    """Agreement between this screening's head ranking and a stored synopsis ranking."""
    run, syn = synopsis_head_scores(store, synopsis_run, query)
    res = compare_rankings(head_scores(s, relation, metric), syn, k)
    res["synopsis_run"] = run
    return res
