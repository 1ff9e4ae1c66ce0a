"""Widgets whose state reads without colour (NO_COLOR, a monochrome terminal, a screen reader's
text): a checked box shows ▐X▌ and an unchecked one ▐ ▌, where Textual draws ▐X▌ for both and
tells them apart by colour only; and a confirmation dialog for actions that submit a job."""

from __future__ import annotations

from textual.widgets import Checkbox


class MonoCheckbox(Checkbox):
    @property
    def _button(self):
        self.BUTTON_INNER = "X" if self.value else " "  # shadows the class's "X"
        return super()._button
