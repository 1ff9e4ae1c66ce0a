"""The `/` prompt: a filter for the current table, evaluated by the engine."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from engine.core.rowfilter import FILTER_HELP


class FilterDialog(ModalScreen[str | None]):
    """Returns the new filter ("" clears it), or None when cancelled."""

    DEFAULT_CSS = """
    FilterDialog { align: center bottom; background: $background 30%; }
    FilterDialog > Vertical {
        width: 100%; height: auto; background: $surface; padding: 0 1;
        border-top: hkey $accent;
    }
    FilterDialog .hint { color: $text-muted; }
    FilterDialog .error { color: $error; text-style: bold; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        current: str | None,
        table: str,
        columns: list[str],
        names: list[str] | None = None,
        error: str | None = None,
    ) -> None:
        super().__init__()
        self.current = current or ""  # opens with the filter in effect (or the one to fix)
        self.table = table
        self.columns = columns
        self.names = names or []
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Input(
                self.current,
                placeholder=f"filter {self.table} (e.g. layer<4 score>0.3)",
                compact=True,
                id="filter-input",
            )
            if self.error:
                yield Static(f"⚠ {self.error}", classes="error")
            yield Static(FILTER_HELP, classes="hint")
            if self.columns:
                yield Static("columns: " + " ".join(self.columns), classes="hint")
            if self.names:
                yield Static("header names: " + " ".join(self.names), classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
