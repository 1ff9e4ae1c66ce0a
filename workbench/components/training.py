"""Training pane: evaluator metrics (and loss, when the engine has it) over a run's checkpoints,
drawn as braille line plots: the learning order colour -> shape -> binding -> relation."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Static

from workbench.components.base import ExportSource, Pane, fetch_all
from workbench.components.render import SERIES_COLORS, braille_plot

METRICS = ("color", "shape", "exist_binding", "unique_binding", "spatial", "overall")


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

    def set_series(
        self, series: list[tuple[str, list[tuple[float, float]], str]], x_label: str = "step"
    ) -> None:
        self.series = series
        self.x_label = x_label
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
        )
        return Text("\n").join(lines)


class TrainingPane(Pane):
    title = "Training"

    DEFAULT_CSS = """
    TrainingPane > #curves-title { height: 1; }
    TrainingPane > #curves-legend { height: auto; max-height: 3; }
    TrainingPane > #loss-plot { display: none; height: 1fr; }
    TrainingPane > #loss-plot.-has-loss { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: tuple[list[str], list[list]] | None = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="curves-title")
        yield CurvePlot(ymin=0.0, ymax=1.0, id="metrics-plot")
        yield CurvePlot(id="loss-plot")
        yield Static("", id="curves-legend")

    def run_dir(self) -> str | None:
        """The training run folder (with metrics.jsonl) the checkpoint came from, if any."""
        ck = self.checkpoint or {}
        if "run" in ck:  # the engine says which run it belongs to (None: no metrics)
            return ck["run"] or None
        return ck.get("path")

    def reload(self) -> None:
        run = self.run_dir()
        if not run:
            self.data, self.error = None, None
            name = (self.checkpoint or {}).get("name", "this checkpoint")
            self.query_one("#curves-title", Static).update(
                Text(
                    f"no training curves: {name} has no run folder with metrics.jsonl", style="dim"
                )
            )
            self.query_one("#metrics-plot", CurvePlot).set_series([])
            self.query_one("#curves-legend", Static).update("")
            return
        self.error = None

        def done(res: tuple[list[str], list[list]]) -> None:
            if run == self.run_dir():
                self.data = res
                self._draw()

        def failed(exc: BaseException) -> None:
            self.error = str(exc)
            self.data = None
            self._draw()

        self.engine_call(
            "training curves",
            lambda c: fetch_all(c, "curves", params={"run": run}),
            done,
            group=f"curves:{id(self)}",
            on_error=failed,
        )

    def _draw(self) -> None:
        title = self.query_one("#curves-title", Static)
        legend = self.query_one("#curves-legend", Static)
        plot = self.query_one("#metrics-plot", CurvePlot)
        loss = self.query_one("#loss-plot", CurvePlot)
        run = self.run_dir() or "?"
        if self.error:
            title.update(Text(f"⚠ {self.error}", style="#D55E00"))
            plot.set_series([])
            loss.remove_class("-has-loss")
            legend.update("")
            return
        if self.data is None:
            title.update(Text(f"training run {run}: loading…", style="dim"))
            return
        cols, rows = self.data
        if "step" not in cols:
            title.update(f"curves table has no step column: {cols}")
            return
        si = cols.index("step")
        series: list[tuple[str, list[tuple[float, float]], str]] = []
        leg = Text()
        for k, m in enumerate(c for c in METRICS if c in cols):
            mi = cols.index(m)
            pts = [(float(r[si]), float(r[mi])) for r in rows if isinstance(r[mi], int | float)]
            color = SERIES_COLORS[k % len(SERIES_COLORS)]
            series.append((m, pts, color))
            last = pts[-1][1] if pts else None
            leg.append("━━ ", style=color)
            leg.append(f"{m} {last:.2f}   " if last is not None else f"{m}   ")
        plot.set_series(series)
        if "loss" in cols:
            li = cols.index("loss")
            pts = [(float(r[si]), float(r[li])) for r in rows if isinstance(r[li], int | float)]
            loss.set_series([("loss", pts, SERIES_COLORS[6])])
            loss.add_class("-has-loss")
            leg.append("━━ ", style=SERIES_COLORS[6])
            leg.append("loss (lower plot)")
        else:
            loss.remove_class("-has-loss")
        last_step = rows[-1][si] if rows else "?"
        t = Text()
        t.append(f"training run {run}", style="bold")
        t.append(f" · {len(rows)} evaluations · last step {last_step}", style="dim")
        title.update(t)
        legend.update(leg)

    def export_source(self) -> ExportSource | None:
        run = self.run_dir()
        if not run:
            return None
        return ExportSource("curves", params={"run": run}, stem="curves")

    def focus_main(self) -> None:
        pass

    def selected_head(self) -> Any:
        return None
