"""A head's score over training as a sparkline on a curve plot's x axis."""

from __future__ import annotations

from rich.text import Text

SPARK = "▁▂▃▄▅▆▇█"


HEAD_THRESHOLD = 0.5  # the emergence table's default: mean cosine over relations


def step_column(step: float, x0: float, x1: float, width: int) -> int:
    """The plot column of a step, as braille_plot places it (two dots per cell)."""
    if x1 <= x0:
        return 0
    return int(round((step - x0) / (x1 - x0) * (2 * width - 1))) // 2


def head_sparkline(
    points: list[tuple[float, float]],
    x0: float,
    x1: float,
    width: int,
    first_pass: float | None,
    color: str,
    threshold: float = HEAD_THRESHOLD,
) -> Text:
    """One head's score per kept step as a sparkline `width` columns wide on the plot's x axis:
    each column shows the last kept step at or before it (blank before the first); at or above
    the threshold in `color`, below it dim; the first-pass step's column reversed."""
    cols: list[float | None] = [None] * width
    for step, v in sorted(points):
        c = step_column(step, x0, x1, width)
        for k in range(max(c, 0), width):
            cols[k] = v
    mark = step_column(first_pass, x0, x1, width) if first_pass is not None else None
    t = Text()
    for k, v in enumerate(cols):
        if v is None:
            t.append(" ")
            continue
        ch = SPARK[min(len(SPARK) - 1, max(0, int(v * len(SPARK))))]
        style = color if v >= threshold else "grey50"
        t.append(ch, style=f"bold reverse {color}" if k == mark else style)
    return t
