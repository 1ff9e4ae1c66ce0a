"""The Map pane: every head's attention for the query as a heatmap, one step or all."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from workbench.components.heatmap import HeatMap
from workbench.components.pane import Pane
from workbench.render.draw import legend
from workbench.services.engine import TableRows, answer, engine_of
from workbench.services.export import ExportSource
from workbench.services.messages import HeadSelected, StepChanged
from workbench.services.query import Query


class MapPane(Pane):
    title = "Map"
    refreshed_by = frozenset({"synopsis"})

    DEFAULT_CSS = """
    MapPane > #map-title { height: 1; }
    MapPane > HeatMap { height: auto; max-height: 1fr; }
    MapPane > #map-legend { height: 2; color: $text-muted; }
    """

    BINDINGS = [
        Binding("left", "step(-1)", "Step", key_display="←→"),
        Binding("right", "step(1)", "Next step", show=False),
    ]

    class MapLoaded(TableRows):
        """Every head's value for the query at the step shown."""

    def __init__(self, query: Query | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.query_value = query or Query()
        self.step: int | str = "all"
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="map-title")
        yield HeatMap(id="heatmap")
        yield Static("", id="map-legend")

    @property
    def heatmap(self) -> HeatMap:
        return self.query_one(HeatMap)

    @property
    def n_steps(self) -> int:
        ck = self.checkpoint or {}
        n = ck.get("steps")
        return int(n) if isinstance(n, int) and n > 0 else 14

    def set_checkpoint(self, ck: dict | None) -> None:
        if ck:
            self.heatmap.set_shape(int(ck.get("layers") or 0), int(ck.get("heads") or 0))
            self.heatmap.values = {}
        super().set_checkpoint(ck)

    def set_query(self, q: Query) -> None:
        if q != self.query_value:
            self.query_value = q
            self.invalidate()

    def params(self) -> dict[str, Any]:
        return {"checkpoint": self.ckpt_name, "query": self.query_value.name, "step": self.step}

    def reload(self) -> None:
        self._title()
        if self.checkpoint is None:
            return
        params = self.params()

        engine_of(self).fetch_rows(self, "head map", "head_map", params, self.MapLoaded)

    @answer
    def on_map_pane_map_loaded(self, event: MapLoaded) -> None:
        if event.rows is None:
            self.error = str(event.error)
            self.heatmap.set_values({})
            self._title()
            return
        if event.params != self.params():
            return
        cols, rows = event.rows
        self.error = None
        try:
            li, hi, vi = cols.index("layer"), cols.index("head"), cols.index("value")
        except ValueError:
            self.error = f"head_map has columns {cols}"
            self._title()
            return
        self.heatmap.set_values({(int(r[li]), int(r[hi])): r[vi] for r in rows})
        self._title()

    def _title(self) -> None:
        step = "all steps" if self.step == "all" else f"step {self.step}/{self.n_steps - 1}"
        t = Text()
        t.append(self.query_value.name, style="bold")
        t.append(f" · {step} ", style="")
        t.append("(←/→ step)", style="dim")
        la, h = self.heatmap.cursor
        v = self.heatmap.values.get((la, h))
        if v is not None:
            t.append(f" · L{la}H{h} = {v:.3f}", style="bold")
        self.query_one("#map-title", Static).update(t)
        leg = self.query_one("#map-legend", Static)
        if self.error:
            leg.update(Text(f"⚠ {self.error}", style="#D55E00"))
        elif self.heatmap.values:
            line = legend(self.heatmap.lo, self.heatmap.hi, 12, "colour")
            line.append("  ↑↓/jk layer · h/l head · enter detail", style="dim")
            leg.update(line)
        else:
            leg.update("")

    def action_step(self, delta: int) -> None:
        seq: list[int | str] = ["all", *range(self.n_steps)]
        i = seq.index(self.step) if self.step in seq else 0
        self.step = seq[(i + delta) % len(seq)]
        self.post_message(StepChanged(self.step))
        self.reload()

    def on_head_selected(self, event: HeadSelected) -> None:
        # cursor moved in the heatmap: update the title, then let the app sync the table
        if event.source == "map":
            self._title()

    def sync_cursor(self, layer: int, head: int) -> None:
        self.heatmap.set_cursor(layer, head)
        if self.is_mounted:
            self._title()

    def selected_head(self) -> tuple[int, int] | None:
        return self.heatmap.cursor if self.heatmap.n_layers else None

    def focus_main(self) -> None:
        self.heatmap.focus()

    def export_source(self) -> ExportSource | None:
        if self.checkpoint is None:
            return None
        step = "all" if self.step == "all" else f"step{self.step}"
        return ExportSource("head_map", params=self.params(), stem=f"head_map-{step}")
