"""A widget that shows pre-rendered lines of cells (images, maps) as Strips.

Drawing thousands of coloured cells through Static/Content is slow; this renders the Rich Text
lines to segments once per update and hands Textual ready Strips.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget


class Canvas(Widget):
    DEFAULT_CSS = """
    Canvas { width: auto; height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[Text] = []
        self._strips: list[Strip] = []
        self._width = 0
        self._base = None

    def set_lines(self, lines: list[Text]) -> None:
        self._lines = list(lines)
        self._strips = []
        self._width = max((ln.cell_len for ln in self._lines), default=0)
        self.refresh(layout=True)

    @property
    def plain(self) -> str:
        return "\n".join(ln.plain for ln in self._lines)

    def get_content_width(self, container, viewport) -> int:
        return self._width

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._lines)

    def _build(self) -> None:
        console = self.app.console
        base = self.rich_style
        self._base = base
        self._strips = []
        for ln in self._lines:
            segs = [s for s in ln.render(console, "") if s.text != "\n"]
            segs = list(Segment.apply_style(segs, base))
            self._strips.append(Strip(Segment.simplify(segs), ln.cell_len))

    def render_line(self, y: int) -> Strip:
        if not self._strips and self._lines:
            self._build()
        width = self.size.width
        if 0 <= y < len(self._strips):
            return self._strips[y].extend_cell_length(width, self._base).crop(0, width)
        return Strip.blank(width, self.rich_style)
