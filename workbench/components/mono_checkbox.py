"""A checkbox whose state reads without colour (NO_COLOR, a monochrome terminal, a screen
reader's text): checked shows ▐X▌ and unchecked ▐ ▌, where Textual draws ▐X▌ for both and tells
them apart by colour only."""

from __future__ import annotations

from textual.widgets import Checkbox


class MonoCheckbox(Checkbox):
    @property
    def _button(self):
        self.BUTTON_INNER = "X" if self.value else " "  # shadows the class's "X"
        return super()._button
