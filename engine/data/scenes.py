"""Scene sampling and captions, as in the paper's generator.

Two objects of different shapes; object 1 red, object 2 blue; centres uniform on the integer
grid [17, 111]^2 of the 128x128 canvas, overlap allowed, pairs inside the dead zone resampled.
Each scene is drawn from its own seed (dataset seed, index), so any slice of a dataset can be
regenerated alone and in any order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.data.relations import PHRASINGS, RELATIONS, relation_of

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {"red": (255, 0, 0), "blue": (0, 0, 255)}
BACKGROUND: tuple[int, int, int] = (128, 128, 128)
CANVAS = 128
CENTRE_MIN, CENTRE_MAX = 17, 111
COLOR_KEEP_P = 0.5


@dataclass(frozen=True)
class Scene:
    """Everything needed to redraw an image and rederive its caption."""

    shape1: str
    shape2: str
    x1: int
    y1: int
    x2: int
    y2: int
    relation: str
    phrase: str
    keep_color1: bool
    keep_color2: bool
    color1: str = "red"
    color2: str = "blue"

    @property
    def caption(self) -> str:
        return make_caption(
            self.shape1,
            self.shape2,
            self.phrase,
            self.color1 if self.keep_color1 else None,
            self.color2 if self.keep_color2 else None,
        )

    def to_record(self) -> dict:
        rec = asdict(self)
        rec["caption"] = self.caption
        return rec

    @classmethod
    def from_record(cls, rec: dict) -> Scene:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in rec.items() if k in fields})


def make_caption(
    shape1: str, shape2: str, phrase: str, color1: str | None, color2: str | None
) -> str:
    """'{c1} {shape1} is {phrase} {c2} {shape2}', a colour word left out when None."""
    a = f"{color1} {shape1}" if color1 else shape1
    b = f"{color2} {shape2}" if color2 else shape2
    return f"{a} is {phrase} {b}"


def sample_scene(rng: np.random.Generator) -> Scene:
    i, j = rng.choice(len(SHAPES), size=2, replace=False)
    while True:
        x1, y1, x2, y2 = (int(v) for v in rng.integers(CENTRE_MIN, CENTRE_MAX + 1, size=4))
        relation = relation_of(x1 - x2, y1 - y2)
        if relation is not None:
            break
    options = PHRASINGS[relation]
    phrase = options[int(rng.integers(len(options)))]
    keep1, keep2 = (bool(v) for v in rng.random(2) < COLOR_KEEP_P)
    return Scene(SHAPES[i], SHAPES[j], x1, y1, x2, y2, relation, phrase, keep1, keep2)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def sample_scenes(n: int, seed: int = 0, start: int = 0) -> list[Scene]:
    """Scenes start .. start+n-1 of the dataset with this seed."""
    return [sample_scene(scene_rng(seed, i)) for i in range(start, start + n)]


def relation_counts(scenes: list[Scene]) -> dict[str, int]:
    counts = dict.fromkeys(RELATIONS, 0)
    for s in scenes:
        counts[s.relation] += 1
    return counts
