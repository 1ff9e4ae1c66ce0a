"""The columns of the tables the engine serves (GET /tables/NAME), and the values their
parameters take: one definition for the engine's table functions, the TUI's panes and the
tests' fake engine. Standard library only, so the TUI imports it without the engine.

Relations are engine.data.relations.RELATIONS and text categories
engine.text.categories.CATEGORIES; both are torch-free too.
"""

from __future__ import annotations

# --- parameter values -----------------------------------------------------------------------

# The image side of a probe query (`relation->object1`): where in the image attention lands.
IMAGE_CATEGORIES: tuple[str, ...] = ("object1", "object2", "background")
# What a screening table ranks heads by.
SCREEN_METRICS: tuple[str, ...] = ("cosine", "projection", "energy")
# Evaluator metrics in a training run's curves (metrics.jsonl), in the order they are plotted.
CURVE_METRICS: tuple[str, ...] = (
    "color",
    "shape",
    "exist_binding",
    "unique_binding",
    "spatial",
    "overall",
)

# Result kinds GET /checkpoints lists per checkpoint ("results": {kind: [run, ...]}), as the
# workbench's sidebar shows them.
RESULT_KINDS: tuple[str, ...] = ("synopsis", "screening", "ablation", "evaluation")

# --- columns, by table name -----------------------------------------------------------------

HEADS: tuple[str, ...] = (
    "layer",
    "head",
    "score",
    "rank",
    "peak_step",
    "z",
    "n_samples",
    "screen_score",
    "screen_relation",
    "ablation_delta",
    "ablation_ci_low",
    "ablation_ci_high",
)
HEAD_MAP: tuple[str, ...] = ("layer", "head", "value")
HEAD_DETAIL: tuple[str, ...] = ("sample", "prompt", "step", "map")
SAMPLE_IMAGES: tuple[str, ...] = ("sample", "prompt", "image")
SCREENING: tuple[str, ...] = ("layer", "head", "relation", *SCREEN_METRICS, "rank")
SCREEN_MAP: tuple[str, ...] = ("kind", "map")
ABLATIONS: tuple[str, ...] = (
    "run",
    "intervention",
    "metric",
    "baseline",
    "intervened",
    "delta",
    "ci_low",
    "ci_high",
    "n",
)
SWEEPS: tuple[str, ...] = ("run", "sweep", "n", "steps", "created")
SWEEP: tuple[str, ...] = ("layer", "head", "metric", "delta", "ci_low", "ci_high")
CURVES: tuple[str, ...] = ("step", "images_seen", *CURVE_METRICS)
EMERGENCE: tuple[str, ...] = (
    "step",
    "layer",
    "head",
    "name",
    "score",
    "rank",
    "first_pass",
    "synopsis",
)
JOBS: tuple[str, ...] = (
    "id",
    "kind",
    "state",
    "progress",
    "phase",
    "eta_s",
    "created",
    "started",
    "ended",
    "error",
)

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "heads": HEADS,
    "head_map": HEAD_MAP,
    "head_detail": HEAD_DETAIL,
    "sample_images": SAMPLE_IMAGES,
    "screening": SCREENING,
    "screen_map": SCREEN_MAP,
    "ablations": ABLATIONS,
    "sweeps": SWEEPS,
    "sweep": SWEEP,
    "curves": CURVES,
    "emergence": EMERGENCE,
    "jobs": JOBS,
}
