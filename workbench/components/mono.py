"""Widgets whose state reads without colour (NO_COLOR, a monochrome terminal, a screen reader's
text): a checked box shows ▐X▌ and an unchecked one ▐ ▌, where Textual draws ▐X▌ for both and
tells them apart by colour only; and a confirmation dialog for actions that submit a job."""

from __future__ import annotations

from rich.segment import Segment
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widgets import Button, Checkbox, SelectionList, Static
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.option_list import OptionDoesNotExist


class MonoCheckbox(Checkbox):
    @property
    def _button(self):
        self.BUTTON_INNER = "X" if self.value else " "  # shadows the class's "X"
        return super()._button


class MonoSelectionList(SelectionList[str]):
    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        try:
            selection = self.get_option_at_index(self.scroll_offset[1] + y)
        except OptionDoesNotExist:
            return strip
        segs = list(strip)
        if len(segs) < 3 or segs[1].text != ToggleButton.BUTTON_INNER:
            return strip
        mark = "X" if selection.value in self._selected else " "
        segs[1] = Segment(mark, segs[1].style, segs[1].control)
        return Strip(segs, strip.cell_length)


class ConfirmDialog(ModalScreen[bool]):
    """`question`; enter (or y) confirms, escape (or n) cancels."""

    DEFAULT_CSS = """
    ConfirmDialog { align: center middle; }
    ConfirmDialog > Vertical {
        width: 64; max-width: 100%; height: auto;
        border: round $accent; background: $surface; padding: 0 1;
    }
    ConfirmDialog #confirm-buttons { height: 1; align-horizontal: right; margin-top: 1; }
    ConfirmDialog Button { margin-left: 1; }
    """

    BINDINGS = [
        Binding("escape,n", "answer(False)", "Cancel"),
        Binding("y", "answer(True)", "Confirm", show=False),
    ]

    def __init__(self, question: str, confirm: str = "Submit") -> None:
        super().__init__()
        self.question = question
        self.confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="confirm-question")
            with Horizontal(id="confirm-buttons"):
                yield Button("Cancel", id="confirm-no", compact=True)
                yield Button(self.confirm, id="confirm-yes", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
