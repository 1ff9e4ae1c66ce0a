"""A selection list whose ticks read without colour, like MonoCheckbox's: ▐X▌ selected,
▐ ▌ not."""

from __future__ import annotations

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import SelectionList
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.option_list import OptionDoesNotExist


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
