"""Ablations pane: every ablation run with per-metric delta and CI, and the per-head sweep of the
run under the cursor (when that run is a sweep)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from workbench.components.base import Pane
from workbench.components.engine_table import Col, EngineTable, fmt_signed
from workbench.components.heads import fmt_ci_short, head_of
from workbench.components.messages import HeadSelected, OpenHeadDetail

ABLATION_COLS = [
    Col("run", "run"),
    Col("intervention", "intervention"),
    Col("metric", "metric"),
    Col("baseline", "base"),
    Col("intervened", "after"),
    Col("delta", "Δ", fmt_signed),
    Col("ci_low", "CI95", fmt_ci_short("ci_low", "ci_high"), uses=("ci_high",)),
    Col("n", "n"),
]

SWEEP_COLS = [
    Col("layer", "L"),
    Col("head", "H"),
    Col("metric", "metric"),
    Col("delta", "Δ", fmt_signed),
    Col("ci_low", "CI95", fmt_ci_short("ci_low", "ci_high"), uses=("ci_high",)),
]


class AblationsPane(Pane):
    title = "Ablations"

    DEFAULT_CSS = """
    AblationsPane > #ablations-table { height: 3fr; }
    AblationsPane > #sweep-table { height: 2fr; }
    AblationsPane > .caption { height: 1; color: $text-muted; }
    """

    def __init__(self, *, page_size: int = 200, id: str | None = None) -> None:
        super().__init__(id=id)
        self.page_size = page_size
        self.sweep_run: str | None = None
        self._last_focus = "ablations-table"
        self._sweep_timer = None

    def compose(self) -> ComposeResult:
        yield EngineTable(
            "ablations",
            ABLATION_COLS,
            page_size=self.page_size,
            row_id=lambda r: (r["run"], r["metric"]),
            id="ablations-table",
        )
        yield Static("", classes="caption", id="ablations-caption")
        yield EngineTable(
            "sweep",
            SWEEP_COLS,
            page_size=self.page_size,
            row_id=lambda r: (r["layer"], r["head"], r.get("metric")),
            quiet=True,
            id="sweep-table",
        )
        yield Static("", classes="caption", id="sweep-caption")

    @property
    def runs(self) -> EngineTable:
        return self.query_one("#ablations-table", EngineTable)

    @property
    def sweep(self) -> EngineTable:
        return self.query_one("#sweep-table", EngineTable)

    def reload(self) -> None:
        if self.checkpoint is None:
            self.runs.configure(None)
            self.sweep.configure(None)
            return
        self.runs.configure({"checkpoint": self.ckpt_name})
        if self.sweep_run:
            self.sweep.configure({"checkpoint": self.ckpt_name, "spec": self.sweep_run})

    def current_table(self) -> EngineTable:
        focused = self.screen.focused if self.is_mounted else None
        if focused is self.sweep or (
            focused is not self.runs and self._last_focus == "sweep-table"
        ):
            return self.sweep
        return self.runs

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, EngineTable):
            self._last_focus = event.widget.id or self._last_focus

    def selected_head(self) -> tuple[int, int] | None:
        if self.current_table() is self.sweep:
            return head_of(self.sweep.current_row())
        return None

    def on_engine_table_loaded(self, event: EngineTable.Loaded) -> None:
        event.stop()
        t = event.table
        if t is self.runs:
            self.query_one("#ablations-caption", Static).update(f"ablation runs · {t.summary()}")
            self._pick_sweep(t.current_row())
        else:
            cap = self.query_one("#sweep-caption", Static)
            if t.error:
                cap.update(f"no per-head sweep for run {self.sweep_run}")
            elif self.sweep_run:
                cap.update(f"per-head sweep {self.sweep_run} · {t.summary()}")
            else:
                cap.update("per-head sweep: move to a sweep run")

    def on_engine_table_row_changed(self, event: EngineTable.RowChanged) -> None:
        event.stop()
        if event.table is self.runs:
            self._pick_sweep(event.row)
        else:
            hd = head_of(event.row)
            if hd is not None:
                self.post_message(HeadSelected(*hd, source="sweep", row=event.row))

    def on_engine_table_activated(self, event: EngineTable.Activated) -> None:
        event.stop()
        if event.table is self.runs:
            self.sweep.focus()
        else:
            hd = head_of(event.row)
            if hd is not None:
                self.post_message(OpenHeadDetail(*hd))

    def _pick_sweep(self, row: dict | None) -> None:
        run = str(row["run"]) if row and row.get("run") is not None else None
        if run == self.sweep_run or self.checkpoint is None:
            return
        self.sweep_run = run
        if self._sweep_timer is not None:
            self._sweep_timer.stop()
        # debounce: the cursor may be sweeping through many runs
        self._sweep_timer = self.set_timer(0.15, self._load_sweep)

    def _load_sweep(self) -> None:
        if self.checkpoint is None or not self.sweep_run:
            self.sweep.configure(None)
            return
        self.sweep.configure({"checkpoint": self.ckpt_name, "spec": self.sweep_run})
