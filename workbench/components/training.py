"""Training pane: evaluator metrics (and loss, when the engine has it) over a run's checkpoints,
drawn as braille line plots: the learning order colour -> shape -> binding -> relation. Below, on
the same step axis, the top heads' weight-space screening scores over the run's kept checkpoints
(the engine's `emergence` table, `dit-workbench emergence RUN`) as sparklines, the step where
each first reaches the threshold marked."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from engine.core.columns import CURVE_METRICS as METRICS
from workbench.components.curve_plot import CurvePlot
from workbench.components.head_sparks import HeadSparks
from workbench.components.pane import Pane
from workbench.render.draw import SERIES_COLORS
from workbench.services.engine import TableRows, answer, engine_of
from workbench.services.export import ExportSource

TOP_HEADS = 3


class TrainingPane(Pane):
    title = "Training"
    refreshed_by = frozenset({"train", "evaluate"})

    DEFAULT_CSS = """
    TrainingPane > #curves-title { height: 1; }
    TrainingPane > #curves-legend { height: auto; max-height: 3; }
    TrainingPane > #loss-plot { display: none; height: 1fr; }
    TrainingPane > #loss-plot.-has-loss { display: block; }
    TrainingPane > #head-sparks { height: auto; max-height: 4; }
    """

    class CurvesLoaded(TableRows):
        """The run's metrics over training steps."""

    class EmergenceLoaded(TableRows):
        """The run's top heads per relation over training steps."""

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

        engine = engine_of(self)
        engine.fetch_rows(self, "training curves", "curves", {"run": run}, self.CurvesLoaded)
        self.emergence, self.emergence_error = None, None
        engine.fetch_rows(
            self,
            "emergence",
            "emergence",
            {"run": run},
            self.EmergenceLoaded,
            filter=f"rank<={TOP_HEADS}",
            quiet=True,  # most runs have none stored: said in the pane, not as a toast
        )

    @answer
    def on_training_pane_curves_loaded(self, event: CurvesLoaded) -> None:
        if event.rows is None:
            self.error = str(event.error)
            self.data = None
            self._draw()
        elif event.params["run"] == self.run_dir():
            self.data = event.rows
            self._draw()

    @answer
    def on_training_pane_emergence_loaded(self, event: EmergenceLoaded) -> None:
        if event.params["run"] != self.run_dir():
            return
        if event.rows is None:
            self.emergence_error = str(event.error)
        else:
            self.emergence = event.rows
        self._draw()

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
