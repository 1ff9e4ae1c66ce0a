"""How engine columns are shown in a table: cell formatting, header labels, and which way a
column sorts first."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.text import Text

# columns where "sort" most usefully starts with the largest value first
DESC_FIRST = {
    "score",
    "z",
    "screen_score",
    "cosine",
    "projection",
    "energy",
    "value",
    "n_samples",
    "n",
    "baseline",
    "intervened",
    "progress",
    "step",
    "images_seen",
    "id",
}
# columns where "sort" starts with the smallest value (ablation deltas: biggest drop first)
ASC_FIRST = {"ablation_delta", "delta", "ci_low", "ci_high", "ablation_ci_low", "rank"}


def default_desc(column: str) -> bool:
    return column in DESC_FIRST


def fmt_cell(v: Any) -> Text | str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return Text("–", style="dim", justify="right")
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return Text(str(v), justify="right")
    if isinstance(v, float):
        s = f"{v:.3f}" if abs(v) < 1000 else f"{v:.4g}"
        return Text(s, justify="right")
    if isinstance(v, list | tuple | dict):
        return Text("[…]", style="dim")
    return str(v)


def fmt_signed(v: Any, _row: dict | None = None) -> Text | str:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return fmt_cell(v)
    style = "bold #D55E00" if v < 0 else ""
    return Text(f"{v:+.3f}", style=style, justify="right")


def fmt_ci(
    lo_key: str,
    hi_key: str,
    num: Callable[[float], str] = lambda v: f"{v:+.2f}",
    mark: bool = False,
) -> Callable[[Any, dict], Text | str]:
    """The interval [lo, hi] with each end written by `num`; bold when it excludes 0 (and, with
    `mark`, followed by * so that it shows without colour or bold)."""

    def f(_v: Any, row: dict) -> Text | str:
        lo, hi = row.get(lo_key), row.get(hi_key)
        if not isinstance(lo, int | float) or not isinstance(hi, int | float):
            return Text("–", style="dim", justify="center")
        excludes_zero = lo > 0 or hi < 0
        text = f"[{num(lo)},{num(hi)}]" + (("*" if excludes_zero else " ") if mark else "")
        return Text(text, style="bold" if excludes_zero else "dim")

    return f


@dataclass
class Col:
    """How one engine column is shown: label, formatter (value, row dict) and sort column."""

    key: str
    label: str
    fmt: Callable[[Any, dict], Text | str] | None = None
    uses: tuple[str, ...] = ()  # other engine columns this display column consumes

    def render(self, row: dict) -> Text | str:
        v = row.get(self.key)
        return self.fmt(v, row) if self.fmt else fmt_cell(v)
