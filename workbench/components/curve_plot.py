"""Training curves as a braille plot."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from workbench.render.draw import braille_plot


class CurvePlot(Widget):
    """Draws whatever series it is given to fit its size."""

    DEFAULT_CSS = """
    CurvePlot { height: 1fr; min-height: 6; }
    """

    def __init__(
        self, *, ymin: float | None = None, ymax: float | None = None, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.series: list[tuple[str, list[tuple[float, float]], str]] = []
        self.ymin, self.ymax = ymin, ymax
        self.x_label = "step"

        self.xrange: tuple[float | None, float | None] = (None, None)

    def set_series(
        self,
        series: list[tuple[str, list[tuple[float, float]], str]],
        x_label: str = "step",
        xrange: tuple[float | None, float | None] = (None, None),
    ) -> None:
        self.series = series
        self.x_label = x_label
        self.xrange = xrange
        self.refresh()

    def render(self) -> Text:
        if not self.series:
            return Text("no curves", style="dim")
        lines = braille_plot(
            self.series,
            self.size.width,
            self.size.height,
            ymin=self.ymin,
            ymax=self.ymax,
            x_label=self.x_label,
            xmin=self.xrange[0],
            xmax=self.xrange[1],
        )
        return Text("\n").join(lines)
