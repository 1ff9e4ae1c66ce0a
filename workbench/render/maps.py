"""Head attention maps as terminal cells: an 8x8 map drawn in half blocks, and how alike two maps are."""

from __future__ import annotations

from rich.text import Text

from workbench.render.draw import (
    cmap,
    halfblock_image,
    norm,
)

ZOOM_FACTORS = {1: 1, 2: 2, 3: 4}  # map cell -> pixels; 8x8 map is 8*f columns wide


def map_image(
    m: list[list[float]], lo: float, hi: float, f: int
) -> list[list[tuple[int, int, int]]]:
    """An 8x8 map as an RGB image upsampled f times (nearest), for half-block drawing."""
    out = []
    for row in m:
        line = []
        for v in row:
            line.extend([cmap(norm(v, lo, hi))] * f)
        out.extend([list(line) for _ in range(f)])
    return out


def draw_map(m: list[list[float]], lo: float, hi: float, f: int) -> list[Text]:
    w = len(m[0]) * f if m and m[0] else 8 * f
    return halfblock_image(map_image(m, lo, hi, f), width=w)


def cosine(a: list[list[float]], b: list[list[float]]) -> float | None:
    xs = [v for row in a for v in row]
    ys = [v for row in b for v in row]
    if len(xs) != len(ys) or not xs:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    den = (sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys)) ** 0.5
    return num / den if den else None
