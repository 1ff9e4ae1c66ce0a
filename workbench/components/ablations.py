"""Ablations pane: every stored single ablation (one row per metric) and a stored per-head sweep,
in percentage points as `dit-workbench ablate --list` prints them. `[` and `]` step through the
stored sweeps (the newest is shown first)."""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from workbench.components.engine_table import EngineTable
from workbench.components.heads import head_of
from workbench.components.pane import Pane
from workbench.render.cells import Col, fmt_cell, fmt_ci
from workbench.services.engine import answer, engine_of
from workbench.services.messages import HeadSelected, OpenHeadDetail


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


def fmt_pp(v: Any, _row: dict | None = None) -> Text | str:
    """A fraction shown in percent (0.266 -> 26.6), as the CLI does."""
    return Text(f"{100 * v:.1f}", justify="right") if _num(v) else fmt_cell(v)


def fmt_pp_signed(v: Any, _row: dict | None = None) -> Text | str:
    """A change in percentage points (-0.341 -> -34.1), a drop in bold orange."""
    if not _num(v):
        return fmt_cell(v)
    return Text(f"{100 * v:+.1f}", style="bold #D55E00" if v < 0 else "", justify="right")


def fmt_ci_pp(lo_key: str, hi_key: str):
    """The 95% CI in percentage points; bold (and marked *) when it excludes 0."""
    return fmt_ci(lo_key, hi_key, num=lambda v: f"{100 * v:+.1f}", mark=True)


# decisive columns first (intervention, metric, delta, CI, n): at 80 columns the rest scroll
ABLATION_COLS = [
    Col("intervention", "intervention"),
    Col("metric", "metric"),
    Col("delta", "Δ pp", fmt_pp_signed),
    Col("ci_low", "CI95 pp", fmt_ci_pp("ci_low", "ci_high"), uses=("ci_high",)),
    Col("n", "n"),
    Col("baseline", "base %", fmt_pp),
    Col("intervened", "after %", fmt_pp),
    Col("run", "run"),
]

SWEEP_COLS = [
    Col("layer", "L"),
    Col("head", "H"),
    Col("metric", "metric"),
    Col("delta", "Δ pp", fmt_pp_signed),
    Col("ci_low", "CI95 pp", fmt_ci_pp("ci_low", "ci_high"), uses=("ci_high",)),
    Col("baseline", "base %", fmt_pp),
    Col("intervened", "after %", fmt_pp),
]


class AblationsPane(Pane):
    title = "Ablations"
    refreshed_by = frozenset({"ablate"})

    DEFAULT_CSS = """
    AblationsPane > #ablations-table { height: 1fr; }
    AblationsPane > #sweep-table { height: 1fr; }
    AblationsPane > .caption { height: 1; color: $text-muted; }
    """

    BINDINGS = [
        Binding("left_square_bracket", "other_sweep(-1)", "Older sweep", show=False),
        Binding("right_square_bracket", "other_sweep(1)", "Newer sweep", show=False),
    ]

    class SweepsLoaded(Message, bubble=False):
        """The sweeps stored for `checkpoint` (`table` is None when the engine has no list)."""

        def __init__(self, checkpoint: str | None, table: dict | None) -> None:
            super().__init__()
            self.checkpoint = checkpoint
            self.table = table

    def __init__(self, *, page_size: int = 200, id: str | None = None) -> None:
        super().__init__(id=id)
        self.page_size = page_size
        self.sweeps: list[dict] = []  # stored sweeps, oldest first
        self.sweep_run: str | None = None  # the one shown (None: the newest)
        self._last_focus = "ablations-table"

    def compose(self) -> ComposeResult:
        yield Static("", classes="caption", id="ablations-caption")
        yield EngineTable(
            "ablations",
            ABLATION_COLS,
            page_size=self.page_size,
            row_id=lambda r: (r["run"], r["metric"]),
            id="ablations-table",
        )
        yield Static("", classes="caption", id="sweep-caption")
        sweep = EngineTable(
            "sweep",
            SWEEP_COLS,
            page_size=self.page_size,
            row_id=lambda r: (r["layer"], r["head"], r.get("metric")),
            quiet=True,
            id="sweep-table",
        )
        # the largest drops first: the head a sweep is run to find is on the first row
        sweep.sort_by, sweep.desc = "delta", False
        yield sweep

    @property
    def runs(self) -> EngineTable:
        return self.query_one("#ablations-table", EngineTable)

    @property
    def sweep(self) -> EngineTable:
        return self.query_one("#sweep-table", EngineTable)

    def reload(self) -> None:
        if self.checkpoint is None:
            self.sweeps, self.sweep_run = [], None
            self.runs.configure(None)
            self.sweep.configure(None)
            return
        name = self.ckpt_name
        self.runs.configure({"checkpoint": name})

        engine_of(self).call(
            self,
            "sweeps",
            lambda c: c.table("sweeps", checkpoint=name, limit=1000),
            lambda res: self.SweepsLoaded(name, res),
            failed=lambda _exc: self.SweepsLoaded(name, None),
            group="sweeps",
            quiet=True,
        )

    @answer
    def on_ablations_pane_sweeps_loaded(self, event: SweepsLoaded) -> None:
        if event.table is None:  # an engine without the list: the newest
            self.sweeps, self.sweep_run = [], None
            self._load_sweep()
            return
        if event.checkpoint != self.ckpt_name:
            return
        cols = list(event.table.get("columns") or [])
        self.sweeps = [dict(zip(cols, r, strict=False)) for r in event.table.get("rows") or []]
        known = [s.get("run") for s in self.sweeps]
        if self.sweep_run not in known:
            self.sweep_run = known[-1] if known else None
        self._load_sweep()

    def _load_sweep(self) -> None:
        if self.checkpoint is None:
            self.sweep.configure(None)
            return
        params: dict = {"checkpoint": self.ckpt_name}
        if self.sweep_run:
            params["spec"] = self.sweep_run
        self.sweep.configure(params)

    def action_other_sweep(self, delta: int) -> None:
        runs = [s.get("run") for s in self.sweeps]
        if len(runs) < 2:
            self.notify(
                "only one sweep is stored" if runs else "no sweep stored", severity="warning"
            )
            return
        i = runs.index(self.sweep_run) if self.sweep_run in runs else len(runs) - 1
        self.sweep_run = runs[(i + delta) % len(runs)]
        self._load_sweep()

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

    def _sweep_title(self) -> str:
        runs = [s.get("run") for s in self.sweeps]
        info = next((s for s in self.sweeps if s.get("run") == self.sweep_run), None)
        title = f"sweep {self.sweep_run or 'newest'}"
        if info:
            title += f" “{info.get('sweep')}” n={info.get('n')}"
        if len(runs) > 1 and self.sweep_run in runs:
            title += f" ({runs.index(self.sweep_run) + 1}/{len(runs)}, [ ])"
        return title

    def on_engine_table_loaded(self, event: EngineTable.Loaded) -> None:
        event.stop()
        t = event.table
        if t is self.runs:
            self.query_one("#ablations-caption", Static).update(
                f"single ablations, % and pp · {t.summary()}"
            )
            return
        cap = self.query_one("#sweep-caption", Static)
        if t.error:
            cap.update(f"{self._sweep_title()} · ⚠ {t.error}")
        elif t.params is not None and not t.rows_ and not t.pending and not self.sweeps:
            cap.update("no per-head sweep stored (ablate --sweep 'mask-head *.* ...')")
        else:
            cap.update(f"{self._sweep_title()} · {t.summary()}")

    def on_engine_table_row_changed(self, event: EngineTable.RowChanged) -> None:
        event.stop()
        if event.table is self.sweep:
            hd = head_of(event.row)
            if hd is not None and event.user:
                self.post_message(HeadSelected(*hd, source="sweep", row=event.row))

    def on_engine_table_activated(self, event: EngineTable.Activated) -> None:
        event.stop()
        if event.table is self.runs:
            self.sweep.focus()
        else:
            hd = head_of(event.row)
            if hd is not None:
                self.post_message(OpenHeadDetail(*hd))
