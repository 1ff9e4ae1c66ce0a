"""The eight spatial relations, the 5 px dead-zone rule, and the paper's 22 phrasings.

Coordinates are pixels of the 128x128 canvas with image y growing downward, so object 1 is
"above" object 2 when y1 < y2.
"""

from __future__ import annotations

RELATIONS: tuple[str, ...] = (
    "above",
    "below",
    "left",
    "right",
    "upper-left",
    "upper-right",
    "lower-left",
    "lower-right",
)

DEAD_ZONE = 5.0

# 22 phrasings, as in the paper: three for each vertical and diagonal relation, two for left and
# right. Order matters only for reproducibility of sampled captions.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "above": ("above", "directly above", "higher than"),
    "below": ("below", "directly below", "lower than"),
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "upper-left": (
        "to the upper left of",
        "above and to the left of",
        "diagonally up and left from",
    ),
    "upper-right": (
        "to the upper right of",
        "above and to the right of",
        "diagonally up and right from",
    ),
    "lower-left": (
        "to the lower left of",
        "below and to the left of",
        "diagonally down and left from",
    ),
    "lower-right": (
        "to the lower right of",
        "below and to the right of",
        "diagonally down and right from",
    ),
}

ALL_PHRASES: tuple[tuple[str, str], ...] = tuple(
    (phrase, rel) for rel in RELATIONS for phrase in PHRASINGS[rel]
)
PHRASE_TO_RELATION: dict[str, str] = dict(ALL_PHRASES)

# Unit direction of each relation (object 1 seen from object 2), y downward.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "above": (0, -1),
    "below": (0, 1),
    "left": (-1, 0),
    "right": (1, 0),
    "upper-left": (-1, -1),
    "upper-right": (1, -1),
    "lower-left": (-1, 1),
    "lower-right": (1, 1),
}


def relation_of(dx: float, dy: float, dead_zone: float = DEAD_ZONE) -> str | None:
    """Relation of object 1 to object 2 from dx = x1 - x2, dy = y1 - y2 (canvas pixels).

    Each axis has its own dead zone: |dx| <= dead_zone gives no horizontal component, |dy| <=
    dead_zone no vertical one; with neither the pair has no relation (None).
    """
    h = "" if abs(dx) <= dead_zone else ("left" if dx < 0 else "right")
    v = "" if abs(dy) <= dead_zone else ("upper" if dy < 0 else "lower")
    if h and v:
        return f"{v}-{h}"
    if v:
        return "above" if v == "upper" else "below"
    return h or None
