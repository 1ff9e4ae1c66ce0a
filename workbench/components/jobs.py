"""Jobs pane: the engine's queue with progress bars, ETA, cancel (c) and the log tail of the job
under the cursor. Fed by the app's jobs poll; sort / filter / export work on the client side."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from workbench.components.engine_table import EngineTable
from workbench.components.pane import Pane
from workbench.render.cells import Col
from workbench.render.draw import fmt_duration, progress_bar
from workbench.services.engine import answer, engine_of
from workbench.services.messages import JobCancelled
from workbench.services.watch import ACTIVE

JOB_COLUMNS = [
    "id",
    "kind",
    "state",
    "progress",
    "phase",
    "eta_s",
    "params",
    "created",
    "started",
    "ended",
    "error",
]

STATE_STYLE = {
    "queued": "#56B4E9",
    "running": "bold #E69F00",
    "done": "#009E73",
    "failed": "bold #D55E00",
    "cancelled": "dim",
    "interrupted": "#CC79A7",
}


def _state(v: Any, _row: dict) -> Text:
    return Text(str(v), style=STATE_STYLE.get(str(v), ""))


def _params(v: Any, _row: dict) -> str:
    try:
        p = json.loads(v) if isinstance(v, str) else (v or {})
    except ValueError:
        return str(v)
    if not isinstance(p, dict):
        return str(p)
    parts = []
    for k, val in p.items():
        if isinstance(val, list):
            val = ",".join(map(str, val))
        parts.append(f"{k}={val}")
    s = " ".join(parts)
    return s if len(s) <= 48 else s[:47] + "…"


def fmt_time(v: Any) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))
    return "" if v is None else str(v)


JOB_COLS = [
    Col("id", "#"),
    Col("kind", "kind"),
    Col("state", "state", _state),
    Col("progress", "progress", lambda v, r: progress_bar(v, 10)),
    Col(
        "eta_s",
        "ETA",
        lambda v, r: Text(fmt_duration(v) if r.get("state") in ACTIVE else "", justify="right"),
    ),
    Col("phase", "phase"),
    Col("params", "params", _params),
]


def job_row(j: dict) -> list:
    row = []
    for c in JOB_COLUMNS:
        v = j.get(c)
        if c == "params":
            v = json.dumps(v or {}, sort_keys=True)
        row.append(v)
    return row


class JobsPane(Pane):
    title = "Jobs"

    DEFAULT_CSS = """
    JobsPane > #jobs-table { height: 1fr; }
    JobsPane > .caption { height: 1; color: $text-muted; }
    JobsPane > #job-log { height: 7; border-top: hkey $panel-lighten-2; padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [Binding("c", "cancel_job", "Cancel job")]

    class LogLoaded(Message, bubble=False):
        """A job's last log lines, or the error that kept them (lines is None then)."""

        def __init__(
            self,
            jid: int,
            row: dict,
            head: Text,
            *,
            lines: list[str] | None = None,
            error: BaseException | None = None,
        ) -> None:
            super().__init__()
            self.jid, self.row, self.head = jid, row, head
            self.lines, self.error = lines, error

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.jobs: list[dict] = []
        self._log_for: int | None = None

    def compose(self) -> ComposeResult:
        yield EngineTable("jobs", JOB_COLS, local=True, row_id=lambda r: r["id"], id="jobs-table")
        yield Static("", classes="caption", id="jobs-caption")
        yield Static("", id="job-log")

    @property
    def table(self) -> EngineTable:
        return self.query_one("#jobs-table", EngineTable)

    def current_table(self) -> EngineTable:
        return self.table

    def reload(self) -> None:
        self.set_jobs(self.jobs)

    def set_jobs(self, jobs: list[dict]) -> None:
        self.jobs = jobs
        if not self.is_mounted:
            return
        self.table.set_local_rows(JOB_COLUMNS, [job_row(j) for j in jobs])
        row = self.table.current_row()
        if row and row.get("state") in ACTIVE:
            self.load_log(row)

    def selected_job(self) -> dict | None:
        row = self.table.current_row()
        if not row:
            return None
        return next((j for j in self.jobs if j.get("id") == row.get("id")), None)

    def on_engine_table_loaded(self, event: EngineTable.Loaded) -> None:
        event.stop()
        n_active = sum(1 for j in self.jobs if j.get("state") in ACTIVE)
        self.query_one("#jobs-caption", Static).update(
            f"{event.table.summary()} · {n_active} active · c cancels the job under the cursor"
        )

    def on_engine_table_row_changed(self, event: EngineTable.RowChanged) -> None:
        event.stop()
        if event.row and event.row.get("id") != self._log_for:
            self.load_log(event.row)

    def on_engine_table_activated(self, event: EngineTable.Activated) -> None:
        event.stop()
        self.load_log(event.row)

    def load_log(self, row: dict) -> None:
        jid = row.get("id")
        if not isinstance(jid, int):
            return
        self._log_for = jid
        head = Text(f"job {jid} {row.get('kind', '')}", style="bold")
        head.append(f"  created {fmt_time(row.get('created'))}", style="dim")
        if row.get("ended"):
            head.append(f"  ended {fmt_time(row.get('ended'))}", style="dim")

        engine_of(self).call(
            self,
            "job log",
            lambda c: c.logs(jid, tail=50),
            lambda lines: self.LogLoaded(jid, row, head, lines=list(lines or [])),
            failed=lambda exc: self.LogLoaded(jid, row, head, error=exc),
            group="log",
            quiet=True,
        )

    @answer
    def on_jobs_pane_log_loaded(self, event: LogLoaded) -> None:
        if self._log_for != event.jid:
            return
        log = self.query_one("#job-log", Static)
        t = Text.assemble(event.head, "\n")
        if event.lines is None:
            log.update(Text.assemble(t, Text(f"no log: {event.error}", style="dim")))
            return
        if event.row.get("error"):
            t.append(f"error: {event.row['error']}\n", style="bold #D55E00")
        t.append("\n".join(str(s) for s in event.lines[-5:]) or "(no log lines yet)")
        log.update(t)

    def action_cancel_job(self) -> None:
        job = self.selected_job()
        if job is None:
            self.notify("no job under the cursor", severity="warning")
            return
        if job.get("state") not in ACTIVE:
            self.notify(f"job {job['id']} is already {job.get('state')}", severity="warning")
            return
        jid = job["id"]
        engine_of(self).call(
            self,
            f"cancel job {jid}",
            lambda c: c.cancel(jid),
            lambda rec: JobCancelled(jid, rec),
            group=f"cancel:{jid}",
        )
