"""The screening method's definition: relation names, its constants, the reference ramps
and the metrics of a map against them, and how two head rankings agree (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from engine.core.errors import UserError
from engine.data.relations import DIRECTIONS, RELATIONS

METRICS: tuple[str, ...] = ("cosine", "projection", "energy")
PHRASINGS_CHOICES: tuple[str, ...] = ("first", "all")
METHOD_VERSION = 1
# Template captions: colour words kept, every ordered pair of distinct shapes.
TEMPLATE = "red {s1} is {phrase} blue {s2}"
TEMPLATE_SHAPES: tuple[tuple[str, str], ...] = (
    ("square", "circle"),
    ("circle", "square"),
    ("square", "triangle"),
    ("triangle", "square"),
    ("circle", "triangle"),
    ("triangle", "circle"),
)
APPROXIMATION = (
    "queries = to_q(2D sin-cos position features the model adds to patches) only: no image "
    "content, no earlier sublayers (PixArt's attn2 reads the un-normalised residual stream); "
    "keys = to_k(caption_projection(relation tokens in template captions)) without key bias"
)


def screen_params(
    relations: Sequence[str] = RELATIONS, phrasings: str = "first", contrast: bool = False
) -> dict:
    """What determines a screening besides the checkpoint (stored and matched on)."""
    return {
        "method_version": METHOD_VERSION,
        "relations": list(relations),
        "phrasings": phrasings,
        "contrast": bool(contrast),
        "template": TEMPLATE,
        "template_shapes": [list(p) for p in TEMPLATE_SHAPES],
    }


# --- names and checks ---------------------------------------------------------------------


def check_relation(name: str, allow_all: bool = True) -> str:
    """A relation name (or "all"); a UserError listing the valid names otherwise."""
    valid = (("all",) if allow_all else ()) + RELATIONS
    if name not in valid:
        raise UserError(f"unknown relation {name!r}; use one of {', '.join(valid)}")
    return name


def check_metric(name: str) -> str:
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; use one of {', '.join(METRICS)}")
    return name


def parse_head(value: str, num_layers: int, num_heads: int) -> tuple[int, int]:
    """'L.H' (0-based, as everywhere in the workbench) checked against the model's size."""
    rng = f"layers 0-{num_layers - 1}, heads 0-{num_heads - 1}"
    parts = str(value).strip().split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UserError(f"{value!r} is not a head; write LAYER.HEAD, e.g. 0.1 ({rng})")
    layer, head = int(parts[0]), int(parts[1])
    if not (0 <= layer < num_layers and 0 <= head < num_heads):
        raise UserError(f"head {layer}.{head} is not in this model; it has {rng}")
    return layer, head


# --- reference patterns and metrics (pure numpy) ------------------------------------------


def reference_ramp(relation: str, grid: tuple[int, int] | int = 8) -> np.ndarray:
    """The mean-centred linear ramp of a relation on a [rows, cols] grid (row 0 = top).

    Runs from -1 to +1 across the grid in the relation's direction; diagonals average the
    horizontal and vertical ramps (so they also span [-1, 1]).
    """
    check_relation(relation, allow_all=False)
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    dx, dy = DIRECTIONS[relation]
    xs = _axis(gw)[None, :]
    ys = _axis(gh)[:, None]
    ramp = dx * xs + dy * ys
    if dx and dy:
        ramp = ramp / 2
    return np.broadcast_to(ramp, (gh, gw)).astype(np.float64)


def references(relations: Sequence[str], grid: tuple[int, int] | int = 8) -> np.ndarray:
    return np.stack([reference_ramp(r, grid) for r in relations])


def _axis(n: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)


def score_maps(maps: np.ndarray, refs: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of maps [..., R, gh, gw] against references [R, gh, gw] (broadcast over ...).

    Returns {"cosine", "projection", "energy"}: arrays [..., R] (float32 in, float32 out;
    float64 otherwise).
    """
    maps = np.asarray(maps)
    dtype = np.float32 if maps.dtype == np.float32 else np.float64
    m = maps.reshape(*maps.shape[:-2], -1).astype(dtype, copy=False)
    r = np.asarray(refs, dtype=np.float64).reshape(np.shape(refs)[0], -1)
    r = (r - r.mean(-1, keepdims=True)).astype(dtype)
    m = m - m.mean(-1, keepdims=True)
    dot = np.einsum("...rn,rn->...r", m, r)
    m_norm = np.sqrt(np.einsum("...n,...n->...", m, m))
    r_sq = np.einsum("rn,rn->r", r, r)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(m_norm > 0, dot / (m_norm * np.sqrt(r_sq)), 0).astype(dtype)
    cos = np.clip(cos, -1.0, 1.0)
    return {
        "cosine": cos,
        "projection": (dot / r_sq).astype(dtype),
        "energy": np.sign(cos) * cos * cos,
    }


def fit_plane(maps: np.ndarray) -> np.ndarray:
    """Least-squares slopes (a, b) of maps [..., gh, gw] ~ a*x + b*y + c, x and y in [-1, 1]
    (y downward). Returns [..., 2]."""
    maps = np.asarray(maps, dtype=np.float64)
    gh, gw = maps.shape[-2:]
    xs = np.broadcast_to(_axis(gw)[None, :], (gh, gw))
    ys = np.broadcast_to(_axis(gh)[:, None], (gh, gw))
    out = []
    for g in (xs, ys):
        g = g - g.mean()
        den = (g * g).sum()
        out.append((maps * g).sum((-2, -1)) / den if den > 0 else np.zeros(maps.shape[:-2]))
    return np.stack(out, -1)


def direction_of(slope: Sequence[float]) -> tuple[str, float]:
    """Nearest relation to a fitted slope (a, b) and its angle in degrees (0 = right, 90 = up)."""
    a, b = float(slope[0]), float(slope[1])
    angle = math.degrees(math.atan2(-b, a))
    best, best_d = RELATIONS[0], 1e9
    for rel in RELATIONS:
        dx, dy = DIRECTIONS[rel]
        d = abs((math.degrees(math.atan2(-dy, dx)) - angle + 180) % 360 - 180)
        if d < best_d:
            best, best_d = rel, d
    return best, angle


def head_summary(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per head from scores [L, H, R]: best relation index, best, mean, selectivity."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[-1]
    best = scores.argmax(-1)
    top = scores.max(-1)
    mean = scores.mean(-1)
    rest = (scores.sum(-1) - top) / (n - 1) if n > 1 else np.zeros_like(top)
    return {"best": best, "best_score": top, "mean": mean, "selectivity": top - rest}


# --- agreement with a sampling-based ranking ----------------------------------------------


def compare_rankings(a: dict, b: dict, k: int = 5) -> dict:
    """Agreement of two head rankings given as {head: score} (higher = more relevant).

    Spearman's rank correlation over the heads both score (ties get average ranks) and the
    overlap of their top-k heads (|A_k & B_k| / k), with the top-k lists themselves.
    """
    from scipy.stats import spearmanr

    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise UserError(
            f"the two rankings share {len(common)} heads; need at least 2 to compare "
            "(were they made for the same checkpoint?)"
        )
    x = np.array([a[h] for h in common], dtype=np.float64)
    y = np.array([b[h] for h in common], dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        rho = float("nan")
    else:
        rho = float(spearmanr(x, y).statistic)
    k = max(1, min(int(k), len(common)))
    top_a = sorted(common, key=lambda h: -a[h])[:k]
    top_b = sorted(common, key=lambda h: -b[h])[:k]
    # a random ranking's expected overlap is k / n
    return {
        "n_heads": len(common),
        "k": k,
        "spearman": rho,
        "topk_overlap": len(set(top_a) & set(top_b)) / k,
        "topk_chance": k / len(common),
        "top_a": top_a,
        "top_b": top_b,
    }
