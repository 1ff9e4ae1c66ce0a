"""The Textual workbench: browse heads, ablate by keyboard, export CSV, over SSH.

It talks to the engine only through an ``EngineAPI`` client (``engine/service/client.py``;
tests use ``tests/fake_client.py``), and only from thread workers (``workbench/services/``), so a
slow or dead engine never freezes the UI: each answer comes back as a typed message, failures
become notifications, and an unreachable engine shows a banner while the app keeps polling (and
reconnecting, when given a ``reconnect`` factory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, TabbedContent, TabPane

from engine.service.client import EngineAPI
from workbench.components.ablations import AblationsPane
from workbench.components.banner import Banner
from workbench.components.detail import HeadDetailScreen
from workbench.components.engine_table import EngineTable
from workbench.components.heads import HeadsPane
from workbench.components.help import HelpScreen
from workbench.components.jobs import JobsPane
from workbench.components.main import PANES, MainScreen
from workbench.components.map_pane import MapPane
from workbench.components.pane import Pane
from workbench.components.screening import ScreeningPane
from workbench.components.sidebar import CheckpointSidebar
from workbench.components.status import StatusBar
from workbench.components.training import TrainingPane
from workbench.services.engine import Engine, EngineCallFailed, answer
from workbench.services.export import Exporter, ExportSource
from workbench.services.jobs import JobRequests
from workbench.services.messages import (
    CheckpointSelected,
    CheckpointsLoaded,
    ExportDone,
    HeadSelected,
    HealthUpdated,
    JobCancelled,
    JobSubmitted,
    JobsUpdated,
    OpenHeadDetail,
    QueryChanged,
    Reconnected,
    ReconnectFailed,
)
from workbench.services.palette import palette_commands
from workbench.services.query import Query
from workbench.services.table_actions import ask_filter, ask_sort, reverse_sort
from workbench.services.watch import EngineWatch, job_note

# actions that also work on the head detail screen
DETAIL_OK = {"ablate", "export", "refresh", "help", "screen_heads", "quit"}


class WorkbenchApp(App[None]):
    """``WorkbenchApp(client).run()``: the composition, the key bindings and the pane navigation.

    What it does with the engine it owns as services: ``engine`` (the client and its worker
    calls), ``watch`` (health, jobs and checkpoints as last polled), ``job_requests`` (`a`, `x`)
    and ``exporter`` (`e`). Their answers come back here as messages, and the handlers below
    show them in the widgets."""

    CSS_PATH = "tui.tcss"
    TITLE = "dit-workbench"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    ESCAPE_TO_MINIMIZE = False

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort", show=False),  # footers fit 80 columns; ? lists every key
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("a", "ablate", "Ablate"),
        Binding("x", "screen_heads", "Screen", show=False),
        Binding("e", "export", "Export"),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("b", "toggle_sidebar", "Sidebar", show=False),
        Binding("o", "edit_query", "Query", show=False),
        *[
            Binding(str(i + 1), f"pane('{pid}')", title, show=False)
            for i, (pid, title) in enumerate(PANES)
        ],
    ]

    def __init__(
        self,
        client: EngineAPI,
        *,
        checkpoint: str | None = None,
        reconnect: Callable[[], EngineAPI] | None = None,
        poll_interval: float = 1.0,
        health_interval: float = 2.0,
        page_size: int = 200,
        export_page_size: int = 1000,
        export_dir: str | Path | None = None,
        sidebar: bool | None = None,
    ) -> None:
        super().__init__()
        self.engine = Engine(client, reconnect)
        self.watch = EngineWatch(self, self.engine)
        self.job_requests = JobRequests(self, self.engine)
        self.exporter = Exporter(
            self, self.engine, Path(export_dir) if export_dir else None, export_page_size
        )
        self.initial_checkpoint = checkpoint
        self.poll_interval = poll_interval
        self.health_interval = health_interval
        self.page_size = page_size
        self.sidebar_pref = sidebar
        self.checkpoint: dict | None = None
        self.query_value = Query()
        self.selected: tuple[int, int] | None = None
        self._sidebar_user: bool | None = None

    @property
    def client(self) -> EngineAPI:
        """The client in use (a reconnect may have replaced the one the app was given)."""
        return self.engine.client

    @property
    def jobs(self) -> list[dict]:
        return self.watch.jobs

    # ----------------------------------------------------------------- layout
    def get_default_screen(self) -> Screen:
        return MainScreen(id="_default")

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Banner("", id="banner")
        with Horizontal(id="main"):
            yield CheckpointSidebar(id="sidebar")
            with TabbedContent(id="panes", initial="pane-heads"):
                with TabPane("1 Heads", id="pane-heads"):
                    yield HeadsPane(self.query_value, page_size=self.page_size, id="heads")
                with TabPane("2 Map", id="pane-map"):
                    yield MapPane(self.query_value, id="map")
                with TabPane("3 Screening", id="pane-screening"):
                    yield ScreeningPane(page_size=self.page_size, id="screening")
                with TabPane("4 Ablations", id="pane-ablations"):
                    yield AblationsPane(page_size=self.page_size, id="ablations")
                with TabPane("5 Jobs", id="pane-jobs"):
                    yield JobsPane(id="jobs")
                with TabPane("6 Training", id="pane-training"):
                    yield TrainingPane(id="training")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._apply_sidebar()
        self.heads_pane.activate()
        self.heads_pane.table.focus()
        self.watch.poll_health()
        self.watch.load_checkpoints()
        self.watch.poll_jobs()
        self.set_interval(self.poll_interval, self.watch.poll_jobs, name="jobs-poll")
        self.set_interval(self.health_interval, self.watch.poll_health, name="health-poll")

    def on_resize(self) -> None:
        self._apply_sidebar()

    def _apply_sidebar(self) -> None:
        want = self._sidebar_user
        if want is None:
            want = self.sidebar_pref if self.sidebar_pref is not None else self.size.width >= 110
        try:
            self.query_one(CheckpointSidebar).display = want
        except Exception:
            pass

    # ----------------------------------------------------------------- accessors
    @property
    def panes(self) -> list[Pane]:
        return list(self.query(Pane))

    def pane(self, pid: str) -> Pane:
        return self.query_one(f"#{pid}", Pane)

    @property
    def heads_pane(self) -> HeadsPane:
        return self.query_one("#heads", HeadsPane)

    @property
    def map_pane(self) -> MapPane:
        return self.query_one("#map", MapPane)

    @property
    def jobs_pane(self) -> JobsPane:
        return self.query_one("#jobs", JobsPane)

    @property
    def active_pane_id(self) -> str:
        active = self.query_one(TabbedContent).active or "pane-heads"
        return active.removeprefix("pane-")

    @property
    def active_pane(self) -> Pane:
        return self.pane(self.active_pane_id)

    # ----------------------------------------------------------------- answers from the engine
    @answer
    def on_health_updated(self, event: HealthUpdated) -> None:
        back = self.watch.health_arrived(event)
        status, banner = self.query_one(StatusBar), self.query_one(Banner)
        if event.health is not None:
            status.update_state(health=event.health, connected=True)
            if banner.shown:
                banner.hide()
            if back:
                self.notify("engine reconnected", title="engine")
                self.action_refresh()
            return
        status.update_state(connected=False)
        banner.show_error(event.error or "no answer", self.watch.attempts)
        self.watch.try_reconnect()

    @answer
    def on_reconnected(self, event: Reconnected) -> None:
        self.watch.reconnected(event.client)

    @answer
    def on_reconnect_failed(self, _event: ReconnectFailed) -> None:
        self.watch.reconnected(None)

    @answer
    def on_jobs_updated(self, event: JobsUpdated) -> None:
        ended = self.watch.jobs_arrived(event)
        if event.jobs is None:
            return
        status = self.query_one(StatusBar)
        status.update_state(running=self.watch.count("running"), queued=self.watch.count("queued"))
        self.jobs_pane.set_jobs(self.watch.jobs)
        for job in ended:
            self._job_ended(job)

    def _job_ended(self, job: dict) -> None:
        note, severity = job_note(job)
        self.notify(note, severity=severity, title="jobs")
        if job.get("state") == "done":
            for p in self.panes:
                p.job_done(str(job.get("kind")))
            self.watch.load_checkpoints()

    @answer
    def on_checkpoints_loaded(self, event: CheckpointsLoaded) -> None:
        current = self.checkpoint["name"] if self.checkpoint else None
        ck, warnings = self.watch.checkpoints_arrived(event, current, self.initial_checkpoint)
        for text, title in warnings:
            self.notify(text, severity="warning", title=title)
        self._set_checkpoint(ck)

    def _set_checkpoint(self, ck: dict | None) -> None:
        changed = (self.checkpoint or {}).get("name") != (ck or {}).get("name")
        self.checkpoint = ck
        self.query_one(StatusBar).update_state(checkpoint=ck or {})
        self.query_one(CheckpointSidebar).set_checkpoints(
            self.watch.checkpoints, ck["name"] if ck else None
        )
        if changed:
            self.selected = None
        for p in self.panes:
            if isinstance(p, JobsPane):
                continue
            if changed:
                p.set_checkpoint(ck)
            else:  # same checkpoint, fresher record: callers invalidate what changed
                p.checkpoint = ck

    def on_checkpoint_selected(self, event: CheckpointSelected) -> None:
        self.switch_checkpoint(event.name)

    def switch_checkpoint(self, name: str) -> None:
        ck = self.watch.find(name)
        if ck is None:
            self.notify(f"no checkpoint {name!r}", severity="error")
            return
        self._set_checkpoint(ck)
        self.notify(f"checkpoint {name}", title="checkpoint")

    def on_engine_call_failed(self, event: EngineCallFailed) -> None:
        if self.watch.worth_showing(event):
            self.notify(event.text, severity="error", title="engine", timeout=6)

    @answer
    def on_job_submitted(self, event: JobSubmitted) -> None:
        self.notify(f"job {event.job.get('id', '?')} queued: {event.what}", title="jobs")
        self.watch.poll_jobs()

    @answer
    def on_job_cancelled(self, event: JobCancelled) -> None:
        self.notify(f"job {event.jid} {event.job.get('state', 'cancelled')}", title="cancel")
        self.watch.poll_jobs()

    @answer
    def on_export_done(self, event: ExportDone) -> None:
        self.exporter.done(event)

    # ----------------------------------------------------------------- messages from panes

    def on_query_changed(self, event: QueryChanged) -> None:
        self.query_value = event.query
        self.heads_pane.set_query(event.query)
        self.map_pane.set_query(event.query)

    def on_head_selected(self, event: HeadSelected) -> None:
        hd = (event.layer, event.head)
        if hd == self.selected:
            return
        self.selected = hd
        try:
            if event.source != "table":
                self.heads_pane.select_head(*hd)
            if event.source != "map":
                self.map_pane.sync_cursor(*hd)
        except NoMatches:  # a selection still in flight while the app shuts down
            pass

    def on_open_head_detail(self, event: OpenHeadDetail) -> None:
        if self.checkpoint is None:
            return
        self.selected = (event.layer, event.head)
        self.push_screen(
            HeadDetailScreen(self.checkpoint, event.layer, event.head, relation=event.relation)
        )

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pid = (event.pane.id or "").removeprefix("pane-")
        for p in self.panes:
            if p.id == pid:
                p.activate()
            else:
                p.deactivate()
        if pid == "map" and self.selected:
            self.map_pane.sync_cursor(*self.selected)
        elif self.selected:
            try:
                self.pane(pid).follow_selection(*self.selected)
            except Exception:  # shutting down
                pass
        try:
            pane = self.pane(pid)
        except Exception:  # shutting down
            return
        self.call_after_refresh(pane.focus_main)

    # ----------------------------------------------------------------- action gating
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        screen = self.screen
        mine = {b.action.split("(")[0] for b in self._bindings_list()} | {"next_pane"}
        if action not in mine:
            return True
        if isinstance(screen, ModalScreen):
            return False
        if isinstance(screen, HeadDetailScreen):
            return action in DETAIL_OK
        if action in ("filter", "sort", "reverse_sort"):
            try:
                return self.active_pane.current_table() is not None
            except Exception:
                return True
        return True

    @classmethod
    def _bindings_list(cls) -> list[Binding]:
        return [b for b in cls.BINDINGS if isinstance(b, Binding)]

    # ----------------------------------------------------------------- actions
    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_pane(self, pid: str) -> None:
        tc = self.query_one(TabbedContent)
        if tc.active == f"pane-{pid}":
            self.pane(pid).focus_main()
            return
        # blur first: when a focused widget is hidden Textual focuses a sibling in the same
        # (hidden) pane, and TabbedContent would switch back to that pane
        self.screen.set_focus(None)
        tc.active = f"pane-{pid}"

    def action_next_pane(self, delta: int = 1) -> None:
        if isinstance(self.screen, ModalScreen | HeadDetailScreen):
            return
        ids = [p for p, _ in PANES]
        i = ids.index(self.active_pane_id) if self.active_pane_id in ids else 0
        self.action_pane(ids[(i + delta) % len(ids)])

    def action_toggle_sidebar(self) -> None:
        sb = self.query_one(CheckpointSidebar)
        self._sidebar_user = not sb.display
        self._apply_sidebar()
        if sb.display:
            sb.query_one("#ckpt-tree").focus()
        else:
            self.active_pane.focus_main()

    def action_edit_query(self) -> None:
        self.action_pane("heads")
        self.heads_pane.focus_query()

    def action_refresh(self) -> None:
        screen = self.screen
        if isinstance(screen, HeadDetailScreen):
            screen.load_detail()
            screen.load_screen_map()
            return
        self.watch.poll_health()
        self.watch.poll_jobs()
        self.watch.load_checkpoints()
        for p in self.panes:
            if not isinstance(p, JobsPane):
                p.invalidate()

    def _table_or_warn(self) -> EngineTable | None:
        t = self.active_pane.current_table()
        if t is None:
            self.notify(
                f"the {self.active_pane.title} pane has no table to sort or filter",
                severity="warning",
            )
        return t

    def action_filter(self) -> None:
        if (t := self._table_or_warn()) is not None:
            ask_filter(self, t)

    def action_sort(self) -> None:
        if (t := self._table_or_warn()) is not None:
            ask_sort(self, t)

    def action_reverse_sort(self) -> None:
        if (t := self._table_or_warn()) is not None:
            reverse_sort(self, t)

    def action_clear_filter(self) -> None:
        t = self.active_pane.current_table()
        if t is not None:
            t.set_filter(None)

    def selected_head(self) -> tuple[int, int] | None:
        screen = self.screen
        if isinstance(screen, HeadDetailScreen):
            return screen.selected_head()
        return self.active_pane.selected_head() or self.selected

    def action_open_selected(self) -> None:
        hd = self.selected_head()
        if hd is not None:
            self.post_message(OpenHeadDetail(*hd))

    def action_ablate(self) -> None:
        if self.checkpoint is None:
            self.notify("no checkpoint loaded", severity="warning")
            return
        hd = self.selected_head()
        if hd is None:
            self.notify("move the cursor to a head first (Heads or Map pane)", severity="warning")
            return
        self.job_requests.ablate(self.checkpoint["name"], *hd)

    def action_screen_heads(self) -> None:
        if self.checkpoint is None:
            self.notify("no checkpoint loaded", severity="warning")
            return
        self.job_requests.screen(self.checkpoint["name"])

    def action_cancel_job(self) -> None:
        self.action_pane("jobs")
        self.call_after_refresh(self.jobs_pane.action_cancel_job)

    def action_set_query(self, text: str, image: str) -> None:
        q = self.query_value
        self.post_message(QueryChanged(Query(text, image, q.steps, q.agg, q.correct_only)))
        self.action_pane("heads")

    def export_source(self) -> ExportSource | None:
        screen = self.screen
        if isinstance(screen, HeadDetailScreen):
            return screen.export_source()
        return self.active_pane.export_source()

    def action_export(self) -> None:
        src = self.export_source()
        if src is None:
            self.notify("nothing to export here", severity="warning")
            return
        self.exporter.ask(src, self.checkpoint["name"] if self.checkpoint else None)

    # ----------------------------------------------------------------- command palette
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        names = [str(c.get("name", "?")) for c in self.watch.checkpoints]
        for title, help_text, callback in palette_commands(self, names):
            yield SystemCommand(title, help_text, callback)


def run_tui(client: EngineAPI, **kwargs: Any) -> WorkbenchApp:
    """Open the workbench on ``client``; returns the app when the user quits (``app.client`` is
    the client it ended with: a reconnect may have replaced it)."""
    app = WorkbenchApp(client, **kwargs)
    app.run()
    return app
