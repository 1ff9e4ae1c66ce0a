"""The top heads' scores over training, one sparkline each under the curve plot."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from workbench.render.sparks import HEAD_THRESHOLD, head_sparkline


class HeadSparks(Widget):
    """The top heads' screening scores over the kept checkpoints, one sparkline per head,
    columns aligned with the CurvePlot above (same x range, same 7-column y-label margin)."""

    DEFAULT_CSS = """
    HeadSparks { height: auto; max-height: 4; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.heads: list[tuple[str, list[tuple[float, float]], float | None, str]] = []
        self.note: Text | None = None
        self.xrange = (0.0, 1.0)

    def set_heads(self, heads, xrange: tuple[float, float], note: Text | None = None) -> None:
        self.heads, self.xrange, self.note = heads, xrange, note
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.heads) + 1 if self.heads else (1 if self.note else 0)

    def render(self) -> Text:
        if not self.heads:
            return self.note or Text("")
        width = max(self.size.width - 7, 4)  # braille_plot: 6 label columns and the axis
        x0, x1 = self.xrange
        head = Text("screening, mean cosine (", style="dim", no_wrap=True, overflow="ellipsis")
        head.append("▮", style="bold reverse")
        head.append(f" first >= {HEAD_THRESHOLD}): ", style="dim")
        head.append(
            " · ".join(f"{n} {'never' if f is None else int(f)}" for n, _, f, _ in self.heads)
        )
        lines = [head]
        for name, pts, first, color in self.heads:
            t = Text(f"{name:>6}", style=color)
            t.append("│", style="grey50")
            t.append_text(head_sparkline(pts, x0, x1, width, first, color))
            lines.append(t)
        return Text("\n").join(lines)
