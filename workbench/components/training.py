"""Training pane: evaluator metrics (and loss, when the engine has it) over a run's checkpoints,
drawn as braille line plots: the learning order colour -> shape -> binding -> relation. Below, on
the same step axis, the top heads' weight-space screening scores over the run's kept checkpoints
(the engine's `emergence` table, `dit-workbench emergence RUN`) as sparklines, the step where
each first reaches the threshold marked."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Static

from engine.core.columns import CURVE_METRICS as METRICS
from workbench.components.base import ExportSource, Pane, fetch_all
from workbench.components.render import SERIES_COLORS, braille_plot

SPARK = "▁▂▃▄▅▆▇█"
TOP_HEADS = 3
HEAD_THRESHOLD = 0.5  # the emergence table's default: mean cosine over relations


def step_column(step: float, x0: float, x1: float, width: int) -> int:
    """The plot column of a step, as braille_plot places it (two dots per cell)."""
    if x1 <= x0:
        return 0
    return int(round((step - x0) / (x1 - x0) * (2 * width - 1))) // 2


def head_sparkline(
    points: list[tuple[float, float]],
    x0: float,
    x1: float,
    width: int,
    first_pass: float | None,
    color: str,
    threshold: float = HEAD_THRESHOLD,
) -> Text:
    """One head's score per kept step as a sparkline `width` columns wide on the plot's x axis:
    each column shows the last kept step at or before it (blank before the first); at or above
    the threshold in `color`, below it dim; the first-pass step's column reversed."""
    cols: list[float | None] = [None] * width
    for step, v in sorted(points):
        c = step_column(step, x0, x1, width)
        for k in range(max(c, 0), width):
            cols[k] = v
    mark = step_column(first_pass, x0, x1, width) if first_pass is not None else None
    t = Text()
    for k, v in enumerate(cols):
        if v is None:
            t.append(" ")
            continue
        ch = SPARK[min(len(SPARK) - 1, max(0, int(v * len(SPARK))))]
        style = color if v >= threshold else "grey50"
        t.append(ch, style=f"bold reverse {color}" if k == mark else style)
    return t


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


class HeadSparks(Widget):
    """The top heads' screening scores over the kept checkpoints, one sparkline per head,
    columns aligned with the CurvePlot above (same x range, same 7-column y-label margin)."""

    DEFAULT_CSS = """
    HeadSparks { height: auto; max-height: 4; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.heads: list[tuple[str, list[tuple[float, float]], float | None, str]] = []
        self.note: Text | None = None
        self.xrange = (0.0, 1.0)

    def set_heads(self, heads, xrange: tuple[float, float], note: Text | None = None) -> None:
        self.heads, self.xrange, self.note = heads, xrange, note
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self.heads) + 1 if self.heads else (1 if self.note else 0)

    def render(self) -> Text:
        if not self.heads:
            return self.note or Text("")
        width = max(self.size.width - 7, 4)  # braille_plot: 6 label columns and the axis
        x0, x1 = self.xrange
        head = Text("screening, mean cosine (", style="dim", no_wrap=True, overflow="ellipsis")
        head.append("▮", style="bold reverse")
        head.append(f" first >= {HEAD_THRESHOLD}): ", style="dim")
        head.append(
            " · ".join(f"{n} {'never' if f is None else int(f)}" for n, _, f, _ in self.heads)
        )
        lines = [head]
        for name, pts, first, color in self.heads:
            t = Text(f"{name:>6}", style=color)
            t.append("│", style="grey50")
            t.append_text(head_sparkline(pts, x0, x1, width, first, color))
            lines.append(t)
        return Text("\n").join(lines)


class TrainingPane(Pane):
    title = "Training"

    DEFAULT_CSS = """
    TrainingPane > #curves-title { height: 1; }
    TrainingPane > #curves-legend { height: auto; max-height: 3; }
    TrainingPane > #loss-plot { display: none; height: 1fr; }
    TrainingPane > #loss-plot.-has-loss { display: block; }
    TrainingPane > #head-sparks { height: auto; max-height: 4; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data: tuple[list[str], list[list]] | None = None
        self.error: str | None = None
        self.emergence: tuple[list[str], list[list]] | None = None
        self.emergence_error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="curves-title")
        yield CurvePlot(ymin=0.0, ymax=1.0, id="metrics-plot")
        yield HeadSparks(id="head-sparks")
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
        self.emergence, self.emergence_error = None, None

        def got_emergence(res: tuple[list[str], list[list]]) -> None:
            if run == self.run_dir():
                self.emergence = res
                self._draw()

        def no_emergence(exc: BaseException) -> None:
            if run == self.run_dir():
                self.emergence_error = str(exc)
                self._draw()

        self.engine_call(
            "emergence",
            lambda c: fetch_all(c, "emergence", filter=f"rank<={TOP_HEADS}", params={"run": run}),
            got_emergence,
            group=f"emergence:{id(self)}",
            quiet=True,  # most runs have none stored: said in the pane, not as a toast
            on_error=no_emergence,
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
        xr = self._draw_heads([p[0] for _, pts, _ in series for p in pts])
        plot.set_series(series, xrange=xr)
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

    def _draw_heads(self, curve_steps: list[float]) -> tuple[float | None, float | None]:
        """Fill the head sparklines; returns the x range the curves plot must share."""
        sparks = self.query_one("#head-sparks", HeadSparks)
        run = self.run_dir() or "RUN"
        if self.emergence is None:
            note = None
            if self.emergence_error:
                note = Text(
                    f"no head emergence: `dit-workbench emergence {run}` (train with "
                    "--keep-history for every checkpoint)",
                    style="dim",
                )
            sparks.set_heads([], (0.0, 1.0), note)
            return (None, None)
        cols, rows = self.emergence
        need = ("step", "name", "score", "rank", "first_pass")
        if not rows or any(c not in cols for c in need):
            sparks.set_heads([], (0.0, 1.0), Text("emergence table is empty", style="dim"))
            return (None, None)
        i = {c: cols.index(c) for c in need}
        by_head: dict[str, tuple[int, list[tuple[float, float]], float | None]] = {}
        for r in rows:
            rank, pts, first = by_head.get(r[i["name"]], (r[i["rank"]], [], r[i["first_pass"]]))
            pts.append((float(r[i["step"]]), float(r[i["score"]])))
            by_head[r[i["name"]]] = (rank, pts, first)
        steps = [s for _, pts, _ in by_head.values() for s, _ in pts] + list(curve_steps)
        x0, x1 = min(steps), max(steps)
        heads = [
            (name, pts, first, SERIES_COLORS[(k + 3) % len(SERIES_COLORS)])
            for k, (name, (_, pts, first)) in enumerate(
                sorted(by_head.items(), key=lambda kv: kv[1][0])[:TOP_HEADS]
            )
        ]
        sparks.set_heads(heads, (x0, x1))
        return (x0, x1)
