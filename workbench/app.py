"""The Textual workbench: browse heads, ablate by keyboard, export CSV, over SSH.

It talks to the engine only through an ``EngineClient`` (``engine/service/client.py``; tests use
``tests/fake_client.py``). Every client call runs in a thread worker, so a slow
or dead engine never freezes the UI; failures become notifications, and an unreachable engine
shows a banner while the app keeps polling (and reconnecting, when given a ``reconnect`` factory).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, TabbedContent, TabPane

from workbench.components.ablations import AblationsPane
from workbench.components.base import EngineCallMixin, Pane
from workbench.components.detail import HeadDetailScreen
from workbench.components.engine_watch import EngineWatch
from workbench.components.export import ExportActions
from workbench.components.filter import FilterDialog
from workbench.components.heads import HeadsPane
from workbench.components.heatmap import MapPane
from workbench.components.help import HelpScreen
from workbench.components.job_actions import JobActions
from workbench.components.jobs import JobsPane
from workbench.components.main import PANES, MainScreen
from workbench.components.messages import (
    HeadSelected,
    OpenHeadDetail,
    Query,
    QueryChanged,
)
from workbench.components.palette import PaletteCommands
from workbench.components.screening import ScreeningPane
from workbench.components.sidebar import CheckpointSidebar
from workbench.components.sort import SortDialog
from workbench.components.status import Banner, StatusBar
from workbench.components.training import TrainingPane

# actions that only make sense on the main screen (not in the head detail or a dialog)
MAIN_ONLY = {"filter", "sort", "reverse_sort", "pane", "next_pane", "toggle_sidebar", "edit_query"}
# actions that also work on the head detail screen
DETAIL_OK = {"ablate", "export", "refresh", "help", "screen_heads", "quit"}


class WorkbenchApp(
    EngineWatch, JobActions, ExportActions, PaletteCommands, EngineCallMixin, App[None]
):
    """``WorkbenchApp(client).run()``; ``client`` has the EngineClient interface.

    This class is the composition, the key bindings and the pane navigation; what the app
    keeps of the engine (EngineWatch), the keys that submit jobs (JobActions), CSV export
    (ExportActions) and the command palette (PaletteCommands) are mixins from
    workbench/components/, beside the panes and dialogs."""

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
        client: Any,
        *,
        checkpoint: str | None = None,
        reconnect: Callable[[], Any] | None = None,
        poll_interval: float = 1.0,
        health_interval: float = 2.0,
        page_size: int = 200,
        export_page_size: int = 1000,
        export_dir: str | Path | None = None,
        sidebar: bool | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.reconnect_factory = reconnect
        self.initial_checkpoint = checkpoint
        self.poll_interval = poll_interval
        self.health_interval = health_interval
        self.page_size = page_size
        self.export_page_size = export_page_size
        self.export_dir = Path(export_dir) if export_dir else None
        self.sidebar_pref = sidebar
        self.checkpoints: list[dict] = []
        self.checkpoint: dict | None = None
        self.query_value = Query()
        self.selected: tuple[int, int] | None = None
        self.jobs: list[dict] = []
        self.connected: bool | None = None
        self.health: dict | None = None
        self.attempts = 0
        self.exports: list[tuple[str, int]] = []
        self._job_states: dict[Any, str] = {}
        self._polling_jobs = False
        self._polling_health = False
        self._reconnecting = False
        self._recent_errors: dict[str, float] = {}
        self._sidebar_user: bool | None = None

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
        self.poll_health()
        self.load_checkpoints()
        self.poll_jobs()
        self.set_interval(self.poll_interval, self.poll_jobs, name="jobs-poll")
        self.set_interval(self.health_interval, self.poll_health, name="health-poll")

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
        self.poll_health()
        self.poll_jobs()
        self.load_checkpoints()
        for p in self.panes:
            if not isinstance(p, JobsPane):
                p.invalidate()

    def _table_or_warn(self):
        t = self.active_pane.current_table()
        if t is None:
            self.notify(
                f"the {self.active_pane.title} pane has no table to sort or filter",
                severity="warning",
            )
        return t

    def action_filter(self) -> None:
        t = self._table_or_warn()
        if t is None:
            return

        def done(text: str | None) -> None:
            if text is not None:
                t.set_filter(text)
                t.focus()

        names = [f"{label}={col}" for label, col in t.header_names().items()]
        current = t.filter_typed if t.filter_typed is not None else t.filter
        self.push_screen(
            FilterDialog(current, t.table_name, t.columns_, names, t.filter_error), done
        )

    def action_sort(self) -> None:
        t = self._table_or_warn()
        if t is None:
            return
        cols = t.sortable_columns
        if not cols:
            self.notify("nothing to sort yet", severity="warning")
            return

        def done(choice: tuple[str, bool] | None) -> None:
            if choice is not None:
                t.set_sort(*choice)
                t.focus()

        self.push_screen(SortDialog(cols, t.sort_by, t.desc), done)

    def action_reverse_sort(self) -> None:
        t = self._table_or_warn()
        if t is None:
            return
        if not t.sort_by:
            self.notify("not sorted yet: press s to pick a column", severity="warning")
            return
        t.reverse_sort()


def run_tui(client: Any, **kwargs: Any) -> WorkbenchApp:
    """Open the workbench on ``client`` (an EngineClient); returns the app when the user quits
    (``app.client`` is the client it ended with: a reconnect may have replaced it)."""
    app = WorkbenchApp(client, **kwargs)
    app.run()
    return app
