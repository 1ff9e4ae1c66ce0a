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
from engine.core.device import DEVICE_HELP, check_device
from engine.core.errors import UserError
from engine.ops.ablate import CACHE_HELP, CKPT_HELP
from engine.ops.base import Operation, param
from engine.ops.params import Reporter, check_cache_dir, model_size, named_checkpoint
from engine.probe.screening.method import (
    PHRASINGS_CHOICES,
    check_metric,
    check_relation,
    parse_head,
)

_VIEWS = ("best", "tokens", "map_head", "compare")
RELATION_HELP = (
    "above, below, left, right, upper-left, upper-right, lower-left, lower-right, or all."
)
METRIC_HELP = (
    "Rank by cosine (shape of the map vs the ramp), projection (ramp amplitude in logits: the "
    "map rises 2x this across the grid) or energy (signed fraction of the map's spatial "
    "variance along the ramp)."
)
BEST_HELP = (
    "One row per head: its best relation, the mean over relations (high when every relation "
    "word ramps in its own direction: a relation head) and selectivity (best minus the mean of "
    "the others). Ranked by the mean."
)
TOKENS_HELP = (
    "One row per head x relation token: each token of a multi-word phrase ('to the left of') "
    "scored on its own against its relation's ramp."
)
MAP_HELP = (
    "Draw head L.H's 8x8 QK map beside the reference ramp of --relation (all: every "
    "relation). Row 0 is the top of the image."
)
COMPARE_HELP = (
    "Spearman correlation and top-k overlap between this ranking and the newest synopsis "
    "ranking stored for the checkpoint."
)
PHRASINGS_HELP = (
    "first: each relation's first phrasing ('above', 'to the left of'); all: the mean map of "
    "all its phrasings."
)
CONTRAST_HELP = (
    "Score each relation word's map minus the mean map of all eight relation words: only what "
    "tells this relation from the others (an 'above' vs a 'below' caption)."
)


@dataclass
class Screen(Operation):
    kind = "screen"
    heavy = False
    help = "weight-space screening of every head x relation (dit-workbench screen)"

    checkpoint: str = param(path=True, argument="CKPT", aliases=("ckpt",), help=CKPT_HELP)
    # what the result shows (the CLI's modes); the stored screening is the same for all
    relation: str = param("all", flags=("--relation", "-r"), help=RELATION_HELP)
    metric: str = param("cosine", flags=("--metric", "-m"), help=METRIC_HELP)
    best: bool = param(False, help=BEST_HELP)
    tokens: bool = param(False, help=TOKENS_HELP)
    map_head: str | None = param(None, flags=("--map",), help=MAP_HELP)
    compare: bool = param(False, help=COMPARE_HELP)
    query: str = param("relation->object1",
                       help="With --compare: the synopsis category pair that ranks heads "
                       "(text->image).")  # fmt: skip
    synopsis_run: str | None = param(None,
                                     help="With --compare: this synopsis run (default: the "
                                     "newest).")  # fmt: skip
    k: int = param(5, help="With --compare: size of the top-k sets.")
    top: int | None = param(None, help="Show only the first K rows.")
    phrasings: str = param("first", choices=PHRASINGS_CHOICES, help=PHRASINGS_HELP)
    contrast: bool = param(False, help=CONTRAST_HELP)
    recompute: bool = param(False, help="Screen again even if a matching run is stored.")
    no_cache: bool = param(False, help="Neither read nor store screenings (compute in memory).")
    cache: str | None = param(None, path=True, help=CACHE_HELP)
    device: str = param("auto", help=DEVICE_HELP)

    @classmethod
    def normalise(cls, params: dict, cwd: str | None) -> dict:
        return named_checkpoint(params, cwd)

    def check(self, cwd: str | None) -> None:
        from engine.model.checkpoint import read_meta

        self.device = check_device(self.device)
        for name in ("top", "k"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"{self.spelled(name)} must be at least 1 (got {v})")
        check_relation(self.relation)
        check_metric(self.metric)
        views = [v for v in _VIEWS if getattr(self, v)]
        if len(views) > 1:
            every = ", ".join(map(self.spelled, _VIEWS))
            got = " and ".join(map(self.spelled, views))
            raise UserError(f"give one of {every} (got {got})")
        path, _ = read_meta(self.checkpoint)  # a run folder names its `latest`
        self.checkpoint = str(path)
        if self.map_head is not None:
            parse_head(self.map_head, *model_size(path))
        if self.compare and self.no_cache:
            raise UserError(
                f"{self.spelled('compare')} reads the synopsis from the cache; drop "
                f"{self.spelled('no_cache')}"
            )
        check_cache_dir(self.cache, self.spelled)
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
