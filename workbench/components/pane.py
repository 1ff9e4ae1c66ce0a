"""The base class of the panes."""

from __future__ import annotations

from textual.containers import Vertical

from workbench.components.engine_table import EngineTable
from workbench.services.export import ExportSource


class Pane(Vertical):
    """A tab of the workbench. Subclasses load their data in `reload` (workers only)."""

    title = "pane"
    refreshed_by: frozenset[str] = frozenset()  # kinds of job whose results this pane shows

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.checkpoint: dict | None = None
        self.stale = True
        self.active = False

    def set_checkpoint(self, ck: dict | None) -> None:
        self.checkpoint = ck
        self.invalidate()

    def invalidate(self) -> None:
        """Mark the data out of date; reload now when visible, else when next shown."""
        self.stale = True
        if self.active and self.is_mounted:
            self.stale = False
            self.reload()

    def activate(self) -> None:
        self.active = True
        if self.stale:
            self.stale = False
            self.reload()

    def deactivate(self) -> None:
        self.active = False

    def job_done(self, kind: str) -> None:
        """A job of this kind finished: show its results."""
        if kind in self.refreshed_by:
            self.invalidate()

    def reload(self) -> None:  # pragma: no cover - overridden
        pass

    def current_table(self) -> EngineTable | None:
        """The table that `/`, `s` and `e` act on (the focused one when a pane has several)."""
        return None

    def export_source(self) -> ExportSource | None:
        t = self.current_table()
        return t.export_source() if t is not None else None

    def selected_head(self) -> tuple[int, int] | None:
        return None

    def follow_selection(self, layer: int, head: int) -> None:
        """Put the current table's cursor on this head when it is loaded (switching panes keeps
        the selected head)."""
        t = self.current_table()
        if t is not None and "layer" in t.columns_ and "head" in t.columns_:
            t.select_where(lambda r: (r.get("layer"), r.get("head")) == (layer, head))

    def focus_main(self) -> None:
        t = self.current_table()
        if t is not None:
            t.focus()

    @property
    def ckpt_name(self) -> str | None:
        return self.checkpoint["name"] if self.checkpoint else None
