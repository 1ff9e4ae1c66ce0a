"""screen: weight-space screening of every cross-attention head x relation (CPU, under a second).

The screening itself is engine.probe.screening; this operation finds or computes one for a
checkpoint (a stored run with the same params and code version is reused unless `recompute`),
stores it in the checkpoint's cache, and returns the view `dit-workbench screen` prints: ranked
rows (head x relation, `best` per head, or `tokens`), one head's maps (`map_head`), or the
agreement with a stored synopsis ranking (`compare`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.core import roots
from engine.core.device import check_device
from engine.core.errors import UserError
from engine.ops.base import Operation, param
from engine.ops.params import Reporter, check_cache_dir, model_size, named_checkpoint
from engine.probe.screening.method import (
    METRICS,
    PHRASINGS_CHOICES,
    check_metric,
    check_relation,
    parse_head,
)

_VIEWS = ("best", "tokens", "map_head", "compare")


@dataclass
class Screen(Operation):
    kind = "screen"
    heavy = False
    help = "weight-space screening of every head x relation (dit-workbench screen)"

    checkpoint: str = param(path=True, help="checkpoint or training run folder (or its name)")
    phrasings: str = param("first", choices=PHRASINGS_CHOICES, help="first or all phrasings")
    contrast: bool = param(False, help="score each map minus the mean over relation words")
    recompute: bool = param(False, help="screen again even if a matching run is stored")
    no_cache: bool = param(False, help="neither read nor store screenings")
    cache: str | None = param(None, path=True, help="cache folder (default: the engine's)")
    device: str = param("auto", help="where the weights load (screening itself is tiny)")
    # what the result shows (the CLI's modes); the stored screening is the same for all
    relation: str = param("all", help="one relation, or all")
    metric: str = param("cosine", help="what rows are ranked by: " + ", ".join(METRICS))
    best: bool = param(False, help="one row per head: best relation, mean, selectivity")
    tokens: bool = param(False, help="one row per head x relation token")
    map_head: str | None = param(None, help="L.H: that head's maps beside the reference ramps")
    compare: bool = param(False, help="agreement with a stored synopsis ranking")
    query: str = param("relation->object1", help="with compare: the synopsis query")
    synopsis_run: str | None = param(None, help="with compare: this synopsis run")
    k: int = param(5, help="with compare: the size of the top-k sets")
    top: int | None = param(None, help="only the first K rows")

    @classmethod
    def normalise(cls, params: dict, cwd: str | None) -> dict:
        if isinstance(params, dict) and "ckpt" in params and "checkpoint" not in params:
            params = {**params, "checkpoint": params["ckpt"]}
            del params["ckpt"]
        return named_checkpoint(params, cwd)

    def check(self, cwd: str | None) -> None:
        from engine.model.checkpoint import read_meta

        self.device = check_device(self.device)
        for name in ("top", "k"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"param {name!r} must be at least 1 (got {v})")
        check_relation(self.relation)
        check_metric(self.metric)
        views = [v for v in _VIEWS if getattr(self, v)]
        if len(views) > 1:
            raise UserError(f"give one of {', '.join(_VIEWS)} (got {' and '.join(views)})")
        path, _ = read_meta(self.checkpoint)  # a run folder names its `latest`
        self.checkpoint = str(path)
        if self.map_head is not None:
            parse_head(self.map_head, *model_size(path))
        if self.compare and self.no_cache:
            raise UserError(
                "param 'compare' reads the synopsis from the cache; drop param 'no_cache'"
            )
        check_cache_dir(self.cache)
        self.cache = self.cache or str(roots.cache_dir())

    def run(self, report: Reporter) -> dict:
        from engine.probe.screening import results as R

        s, store, seconds = self._screening(report)
        out = {
            "run": s.run,
            "cache": None if store is None else str(store.path),
            "seconds": seconds,  # None: a stored run was reused
            "params": s.params,
            "num_layers": s.num_layers,
            "num_heads": s.num_heads,
        }
        if self.map_head is not None:
            layer, head = parse_head(self.map_head, s.num_layers, s.num_heads)
            rels = list(s.relations) if self.relation == "all" else [self.relation]
            out["maps"] = [R.map_detail(s, layer, head, r) for r in rels]
        elif self.compare:
            out["compare"] = R.compare_with_synopsis(
                s, store, self.relation, self.metric, self.query, self.synopsis_run, self.k
            )
        else:
            if self.best:
                rows = R.best_rows(s, self.metric)
            elif self.tokens:
                rows = R.token_rows(s, self.relation, self.metric)
            else:
                rows = R.relation_rows(s, self.relation, self.metric)
            out["rows"] = rows[: self.top] if self.top is not None else rows
        report.progress(1.0, "done")
        return out

    def _screening(self, report: Reporter):
        """(Screening, store or None, seconds screened or None when a stored run was used)."""
        from engine.data.relations import RELATIONS
        from engine.model.checkpoint import load_checkpoint, read_meta, store_for_path
        from engine.probe.screening import results as R
        from engine.probe.screening.method import screen_params

        store = None if self.no_cache else store_for_path(self.checkpoint, self.cache)
        if store is not None and not self.recompute:
            _, meta = read_meta(self.checkpoint)
            want = screen_params(RELATIONS, self.phrasings, self.contrast)
            want["text_encoder"] = meta.get("text")
            run = R.find_screening(store, want)
            if run is not None:
                report.log(f"reusing screening run {run} in {store.path}")
                return R.load_screening(store, run), store, None
        from engine.probe.screening.weights import screen

        report.progress(0.0, "load")
        ckpt = load_checkpoint(self.checkpoint, device=self.device)
        report.progress(0.5, "screen")
        t = time.perf_counter()
        s = screen(ckpt, RELATIONS, self.phrasings, self.contrast)
        seconds = time.perf_counter() - t
        where = "not stored"
        if store is not None:
            R.save_screening(store, s)
            where = f"stored as {s.run} in {store.path}"
        report.log(
            f"screened {s.num_layers * s.num_heads} heads x {len(s.relations)} relations in "
            f"{seconds:.3f} s; {where}"
        )
        return s, store, seconds

    def summary(self, result: dict) -> dict:
        """The job record keeps where the run is, not its rows or maps (the tables serve them)."""
        return {k: v for k, v in result.items() if k not in ("rows", "maps", "params")}
