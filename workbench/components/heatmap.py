"""The layer x head heatmap of the Map pane: the chosen query at one denoising step.

The cursor is the selected head, shared with the heads table. left/right step through the
denoising steps ("all" = aggregated over steps), up/down/j/k move between layers and h/l between
heads.
"""

from __future__ import annotations

import math

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget

from workbench.render.draw import cmap, contrast, norm, rgb
from workbench.services.messages import HeadSelected, OpenHeadDetail


def _cell_value(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return " · "
    if 0 <= v < 1:
        return f"{v:.2f}"[1:]
    if -1 < v < 0:
        return "-" + f"{-v:.2f}"[2:]
    return f"{v:.1f}"[:3]


class HeatMap(Widget, can_focus=True):
    """A layers x heads grid of coloured cells with the value printed in each (when it fits)."""

    DEFAULT_CSS = """
    HeatMap { height: auto; width: 1fr; padding: 0 1; }
    HeatMap:focus { background: $boost; }
    """

    BINDINGS = [
        Binding("up,k", "move(-1, 0)", "Layer up", show=False),
        Binding("down,j", "move(1, 0)", "Layer down", show=False),
        Binding("h", "move(0, -1)", "Head left", show=False),
        Binding("l", "move(0, 1)", "Head right", show=False),
        Binding("g", "edge(0)", "First layer", show=False),
        Binding("G", "edge(1)", "Last layer", show=False),
        Binding("enter", "open", "Detail", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.n_layers = 0
        self.n_heads = 0
        self.values: dict[tuple[int, int], float] = {}
        self.cursor: tuple[int, int] = (0, 0)
        self.lo, self.hi = 0.0, 1.0

    def set_shape(self, layers: int, heads: int) -> None:
        self.n_layers, self.n_heads = layers, heads
        la, h = self.cursor
        self.cursor = (min(la, max(layers - 1, 0)), min(h, max(heads - 1, 0)))
        self.refresh(layout=True)

    def set_values(self, values: dict[tuple[int, int], float]) -> None:
        self.values = values
        finite = [v for v in values.values() if isinstance(v, int | float) and math.isfinite(v)]
        self.lo, self.hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        if values:
            self.n_layers = max(self.n_layers, max(k[0] for k in values) + 1)
            self.n_heads = max(self.n_heads, max(k[1] for k in values) + 1)
        self.refresh(layout=True)

    def set_cursor(self, layer: int, head: int, *, announce: bool = False) -> None:
        if (layer, head) == self.cursor:
            return
        self.cursor = (layer, head)
        self.refresh()
        if announce:
            self.post_message(HeadSelected(layer, head, source="map"))

    def _cell_width(self) -> int:
        avail = max(self.size.width - 5, 1)
        for cw in (5, 4, 3, 2):
            if cw * max(self.n_heads, 1) <= avail:
                return cw
        return 1

    def get_content_height(self, container, viewport, width: int) -> int:
        return self.n_layers + 1 if self.n_layers else 1

    def render(self) -> Text:
        if not self.n_layers or not self.n_heads:
            return Text("no map for this query (yet)", style="dim")
        cw = self._cell_width()
        out = Text()
        header = Text("    ", style="dim")
        for h in range(self.n_heads):
            label = f"H{h}" if cw >= 3 else str(h % 10)
            header.append(label.center(cw)[:cw], style="bold" if h == self.cursor[1] else "dim")
        out.append_text(header)
        for la in range(self.n_layers):
            out.append("\n")
            out.append(f"L{la:<2} ", style="bold" if la == self.cursor[0] else "dim")
            for h in range(self.n_heads):
                v = self.values.get((la, h))
                c = cmap(norm(v, self.lo, self.hi)) if v is not None else (40, 40, 40)
                fg = contrast(c)
                here = (la, h) == self.cursor
                if cw >= 5:
                    body = _cell_value(v)
                    s = ("[" + body + "]") if here else (" " + body + " ")
                elif cw == 4:
                    body = _cell_value(v)
                    s = (body + "◀") if here else (body + " ")
                else:
                    s = ("◆" + " " * (cw - 1)) if here else " " * cw
                style = Style(color=fg, bgcolor=rgb(c), bold=here)
                out.append(s[:cw].ljust(cw), style)
        return out

    # ----------------------------------------------------------------- keys
    def action_move(self, dl: int, dh: int) -> None:
        if not self.n_layers or not self.n_heads:
            return
        la = min(max(self.cursor[0] + dl, 0), self.n_layers - 1)
        h = min(max(self.cursor[1] + dh, 0), self.n_heads - 1)
        self.set_cursor(la, h, announce=True)

    def action_edge(self, end: int) -> None:
        if self.n_layers:
            self.set_cursor(self.n_layers - 1 if end else 0, self.cursor[1], announce=True)

    def action_open(self) -> None:
        if self.n_layers and self.n_heads:
            self.post_message(OpenHeadDetail(*self.cursor))
