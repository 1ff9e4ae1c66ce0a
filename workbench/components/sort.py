"""The `s` picker: sort the current table by a column (picking the current column reverses)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from workbench.render.cells import default_desc


class SortDialog(ModalScreen[tuple[str, bool] | None]):
    DEFAULT_CSS = """
    SortDialog { align: center middle; }
    SortDialog > Vertical {
        width: 40; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    SortDialog OptionList { height: auto; max-height: 16; border: none; padding: 0; }
    SortDialog .hint { color: $text-muted; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("j", "down", show=False),
        Binding("k", "up", show=False),
    ]

    def __init__(self, columns: list[tuple[str, str]], current: str | None, desc: bool) -> None:
        super().__init__()
        self.columns = columns
        self.current = current
        self.desc = desc

    def compose(self) -> ComposeResult:
        opts = []
        for key, label in self.columns:
            mark = ("  ▼" if self.desc else "  ▲") if key == self.current else ""
            name = label if label == key else f"{label} ({key})"
            opts.append(Option(f"{name}{mark}", id=key))
        with Vertical():
            yield Static("[b]Sort by[/b]")
            yield OptionList(*opts, id="sort-options")
            yield Static("enter sorts · again reverses · S reverses · esc cancels", classes="hint")

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        ol.focus()
        keys = [k for k, _ in self.columns]
        if self.current in keys:
            ol.highlighted = keys.index(self.current)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        key = event.option.id or ""
        if key == self.current:
            self.dismiss((key, not self.desc))
        else:
            self.dismiss((key, default_desc(key)))

    def action_down(self) -> None:
        self.query_one(OptionList).action_cursor_down()

    def action_up(self) -> None:
        self.query_one(OptionList).action_cursor_up()

    def action_cancel(self) -> None:
        self.dismiss(None)
