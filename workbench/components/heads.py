"""Heads pane: the ranked head table for the chosen query, with the query picker above it."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from workbench.components.engine_table import EngineTable
from workbench.components.pane import Pane
from workbench.components.query import QueryBar
from workbench.render.cells import Col, fmt_cell, fmt_ci, fmt_signed
from workbench.services.messages import HeadSelected, OpenHeadDetail, QueryChanged
from workbench.services.query import Query


def _short(v: float) -> str:
    s = f"{v:+.2f}"
    return s.replace("0.", ".", 1) if abs(v) < 1 else s


def fmt_z(v: Any, _row: dict) -> Text | str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return Text(f"{v:+.1f}", justify="right")
    return fmt_cell(v)


# decisive columns first (layer, head, score, ablation delta and CI): at 80 columns they always
# show, and the rest scroll in from the right (←/→)
HEADS_COLS = [
    Col("layer", "L"),
    Col("head", "H"),
    Col("score", "score"),
    Col("ablation_delta", "Δablate", fmt_signed),
    Col(
        "ablation_ci_low",
        "CI95",
        fmt_ci("ablation_ci_low", "ablation_ci_high", num=_short),
        uses=("ablation_ci_high",),
    ),
    Col("screen_score", "screen"),
    Col("screen_relation", "relation"),
    Col("z", "z", fmt_z),
    Col("rank", "rank"),
    Col("peak_step", "peak"),
    Col("n_samples", "n"),
]


def head_of(row: dict | None) -> tuple[int, int] | None:
    if not row:
        return None
    try:
        return int(row["layer"]), int(row["head"])
    except (KeyError, TypeError, ValueError):
        return None


class HeadsPane(Pane):
    title = "Heads"
    refreshed_by = frozenset({"ablate", "screen", "synopsis"})  # its columns join them

    DEFAULT_CSS = """
    HeadsPane > EngineTable { height: 1fr; }
    HeadsPane > .caption { height: 1; color: $text-muted; }
    """

    def __init__(
        self, query: Query | None = None, *, page_size: int = 200, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.query_value = query or Query()
        self.page_size = page_size

    def compose(self) -> ComposeResult:
        yield QueryBar(self.query_value, id="query-bar")
        yield EngineTable(
            "heads", HEADS_COLS, page_size=self.page_size, row_id=head_of, id="heads-table"
        )
        yield Static("", classes="caption", id="heads-caption")

    @property
    def table(self) -> EngineTable:
        return self.query_one("#heads-table", EngineTable)

    def reload(self) -> None:
        if self.checkpoint is None:
            self.table.configure(None)
            return
        self.table.configure({"checkpoint": self.checkpoint["name"], **self.query_value.params()})

    def job_done(self, kind: str) -> None:
        if kind in self.refreshed_by:
            self.refresh_rows()

    def refresh_rows(self) -> None:
        """Reload keeping the cursor on the same head (after an ablation finishes, etc.)."""
        if self.active and self.table.params is not None:
            self.table.reload()
        else:
            self.stale = True

    def current_table(self) -> EngineTable:
        return self.table

    def selected_head(self) -> tuple[int, int] | None:
        return head_of(self.table.current_row())

    def select_head(self, layer: int, head: int) -> None:
        if self.selected_head() != (layer, head):
            self.table.select_where(lambda r: head_of(r) == (layer, head))

    def set_query(self, q: Query) -> None:
        if q != self.query_value:
            self.query_value = q
            self.query_one(QueryBar).set_query(q)
            self.invalidate()

    def focus_query(self) -> None:
        self.query_one(QueryBar).focus_first()

    # ----------------------------------------------------------------- events
    def on_query_changed(self, event: QueryChanged) -> None:
        # let it bubble on to the app (the map pane follows the query too)
        self.query_value = event.query
        self.invalidate()

    def on_query_bar_leave(self, event: QueryBar.Leave) -> None:
        event.stop()
        self.table.focus()

    def on_engine_table_loaded(self, event: EngineTable.Loaded) -> None:
        event.stop()
        t = event.table
        # the query is on show in the bar above: the caption keeps its 80 columns for the rows,
        # sort and filter (and a refused filter's error)
        s = t.summary() or f"{self.query_value.name}"
        if t.params is None:
            s = "no checkpoint yet (waiting for the engine)"
        self.query_one("#heads-caption", Static).update(s)
        # tell the app which head the cursor is on, when none is selected yet (otherwise the
        # table put its cursor on the selected head itself)
        hd = head_of(t.current_row())
        if hd is not None and getattr(self.app, "selected", None) is None:
            self.post_message(HeadSelected(*hd, source="table", row=t.current_row()))

    def on_engine_table_row_changed(self, event: EngineTable.RowChanged) -> None:
        event.stop()
        hd = head_of(event.row)
        if hd is not None and event.user:
            self.post_message(HeadSelected(*hd, source="table", row=event.row))

    def on_engine_table_activated(self, event: EngineTable.Activated) -> None:
        event.stop()
        hd = head_of(event.row)
        if hd is not None:
            self.post_message(OpenHeadDetail(*hd, relation=event.row.get("screen_relation")))
