"""Screening pane: weight-space scores of every head x relation, with the QK map of the row under
the cursor beside it (ScreenMapView)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Label, Select, Static

from engine.core.columns import SCREEN_METRICS
from engine.data.relations import RELATIONS
from workbench.components.engine_table import EngineTable
from workbench.components.heads import head_of
from workbench.components.pane import Pane
from workbench.components.screen_map import ScreenMapView
from workbench.render.cells import Col, fmt_signed
from workbench.services.engine import TableRows, answer, engine_of
from workbench.services.messages import HeadSelected, OpenHeadDetail

SCREEN_COLS = [
    Col("layer", "L"),
    Col("head", "H"),
    Col("relation", "relation"),
    Col("cosine", "cosine", fmt_signed),
    Col("projection", "proj", fmt_signed),
    Col("energy", "energy"),
    Col("rank", "rank"),
]


class ScreeningPane(Pane):
    title = "Screening"
    refreshed_by = frozenset({"screen"})

    DEFAULT_CSS = """
    ScreeningPane > #screen-controls { height: 1; }
    ScreeningPane > #screen-controls Label { padding: 0 1 0 0; color: $text-muted; }
    ScreeningPane > #screen-controls Select { width: 15; margin: 0 1 0 0; }
    ScreeningPane > #screen-body { height: 1fr; }
    ScreeningPane EngineTable { width: 1fr; height: 1fr; }
    ScreeningPane > .caption { height: 1; color: $text-muted; }
    """

    BINDINGS = [Binding("m", "metric", "Metric", show=False)]

    class MapLoaded(TableRows):
        """The selected head's weight-space maps for one relation."""

    def __init__(self, *, page_size: int = 200, id: str | None = None) -> None:
        super().__init__(id=id)
        self.relation = "all"
        self.metric = "cosine"
        self.page_size = page_size
        self._map_key: tuple | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="screen-controls"):
            yield Label("relation")
            yield Select(
                [("all", "all"), *[(r, r) for r in RELATIONS]],
                value="all",
                allow_blank=False,
                compact=True,
                id="screen-relation",
            )
            yield Label("metric")
            yield Select(
                [(m, m) for m in SCREEN_METRICS],
                value="cosine",
                allow_blank=False,
                compact=True,
                id="screen-metric",
            )
        with Horizontal(id="screen-body"):
            yield EngineTable(
                "screening",
                SCREEN_COLS,
                page_size=self.page_size,
                row_id=lambda r: (r["layer"], r["head"], r["relation"]),
                id="screening-table",
            )
            yield ScreenMapView(id="screen-map")
        yield Static("", classes="caption", id="screen-caption")

    @property
    def table(self) -> EngineTable:
        return self.query_one("#screening-table", EngineTable)

    def reload(self) -> None:
        if self.checkpoint is None:
            self.table.configure(None)
            return
        self.table.configure(
            {"checkpoint": self.ckpt_name, "relation": self.relation, "metric": self.metric}
        )

    def current_table(self) -> EngineTable:
        return self.table

    def selected_head(self) -> tuple[int, int] | None:
        return head_of(self.table.current_row())

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = str(event.value)
        if event.select.id == "screen-relation" and value != self.relation:
            self.relation = value
        elif event.select.id == "screen-metric" and value != self.metric:
            self.metric = value
        else:
            return
        self.invalidate()

    def action_metric(self) -> None:
        order = SCREEN_METRICS
        sel = self.query_one("#screen-metric", Select)
        sel.value = order[(order.index(self.metric) + 1) % len(order)]

    def on_engine_table_loaded(self, event: EngineTable.Loaded) -> None:
        event.stop()
        s = event.table.summary()
        self.query_one("#screen-caption", Static).update(s)  # relation, metric: on show above
        self._show_map(event.table.current_row())

    def on_engine_table_row_changed(self, event: EngineTable.RowChanged) -> None:
        event.stop()
        hd = head_of(event.row)
        if hd is not None and event.user:
            self.post_message(HeadSelected(*hd, source="screening", row=event.row))
        self._show_map(event.row)

    def on_engine_table_activated(self, event: EngineTable.Activated) -> None:
        event.stop()
        hd = head_of(event.row)
        if hd is not None:
            self.post_message(OpenHeadDetail(*hd, relation=event.row.get("relation")))

    def _show_map(self, row: dict | None) -> None:
        view = self.query_one("#screen-map", ScreenMapView)
        hd = head_of(row)
        if hd is None or self.checkpoint is None or not row:
            view.show()
            self._map_key = None
            return
        rel = row.get("relation") if row.get("relation") in RELATIONS else "above"
        params: dict[str, Any] = {
            "checkpoint": self.ckpt_name,
            "layer": hd[0],
            "head": hd[1],
            "relation": rel,
        }
        key = tuple(sorted(params.items()))
        if key == self._map_key:
            return
        self._map_key = key

        engine_of(self).fetch_rows(
            self,
            "screening map",
            "screen_map",
            params,
            self.MapLoaded,
            group="screenmap",
            quiet=True,
        )

    @answer
    def on_screening_pane_map_loaded(self, event: MapLoaded) -> None:
        if tuple(sorted(event.params.items())) != self._map_key:
            return
        view = self.query_one("#screen-map", ScreenMapView)
        if event.rows is None:
            view.show(message=Text(f"no QK map: {event.error}", style="dim"))
            return
        cols, rows = event.rows
        try:
            ki, mi = cols.index("kind"), cols.index("map")
        except ValueError:
            return
        p = event.params
        title = Text(f"L{p['layer']}H{p['head']} · {p['relation']}", style="bold")
        view.show(title, {r[ki]: r[mi] for r in rows})
