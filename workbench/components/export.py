"""Export (`e`): the dialog that asks where to write the current table as CSV."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class ExportDialog(ModalScreen[str | None]):
    DEFAULT_CSS = """
    ExportDialog { align: center middle; }
    ExportDialog > Vertical {
        width: 70; max-width: 100%; height: auto;
        border: round $accent; background: $surface; padding: 0 1;
    }
    ExportDialog Input { width: 1fr; margin: 1 0 0 0; }
    ExportDialog .hint { color: $text-muted; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default_path: str, what: str) -> None:
        super().__init__()
        self.default_path = default_path
        self.what = what

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]Export CSV[/b]: {self.what}")
            yield Input(self.default_path, id="export-path")
            yield Static(
                "enter writes every row (all pages, as sorted and filtered) · esc cancels",
                classes="hint",
            )

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = event.value.strip()
        if not path:
            self.notify("type a file path", severity="warning")
            return
        self.dismiss(str(Path(path).expanduser()))

    def action_cancel(self) -> None:
        self.dismiss(None)
