"""The selected head's weight-space (QK) map per relation, beside the screening table."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from workbench.render.draw import hstack, join_lines, legend_strip, value_range
from workbench.render.maps import draw_map


def _qk_legend() -> Text:
    """Each map is scaled to its own range, so the key names ends, not numbers."""
    t = Text("each map: low ", style="dim")
    t.append_text(legend_strip(8))
    t.append(" high", style="dim")
    return t


class ScreenMapView(Widget):
    """The QK map beside the reference ramp; 2 or 1 columns per map cell, to fit its width."""

    DEFAULT_CSS = """
    ScreenMapView { width: 38; height: 1fr; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title: Text | None = None
        self.maps: dict[str, list] = {}
        self.message: Text | None = None

    def show(
        self,
        title: Text | None = None,
        maps: dict[str, list] | None = None,
        message: Text | str | None = None,
    ) -> None:
        self.title = title
        self.maps = maps or {}
        self.message = Text(message) if isinstance(message, str) else message
        self.refresh()

    def render(self) -> Text:
        if self.message is not None:
            return self.message
        if not self.maps:
            return Text("")
        f = 2 if self.size.width >= 36 else 1
        w = 8 * f
        blocks, labels = [], []
        for label, key in (("QK map", "qk"), ("ramp", "reference")):
            m = self.maps.get(key)
            if m:
                lo, hi = value_range([m])
                blocks.append(draw_map(m, lo, hi, f))
                labels.append(label[:w])
        lab = Text("  ".join(lb.ljust(w) for lb in labels), style="dim")
        return join_lines(
            [
                self.title or Text(""),
                lab,
                *hstack(blocks, gap=2, widths=[w] * len(blocks)),
                _qk_legend(),
            ]
        )
