"""The Textual workbench: browse heads, ablate by keyboard, export CSV, over SSH.

It talks to the engine only through an ``EngineClient`` (``engine/service/client.py``; tests use
``workbench.fake_client.FakeEngineClient``). Every client call runs in a thread worker, so a slow
or dead engine never freezes the UI; failures become notifications, and an unreachable engine
shows a banner while the app keeps polling (and reconnecting, when given a ``reconnect`` factory).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, TabbedContent, TabPane

from workbench.components.ablate import AblateDialog
from workbench.components.ablations import AblationsPane
from workbench.components.base import EngineCallMixin, ExportSource, Pane, fetch_all
from workbench.components.detail import HeadDetailScreen
from workbench.components.export import ExportDialog
from workbench.components.filter import FilterDialog
from workbench.components.heads import HeadsPane
from workbench.components.heatmap import MapPane
from workbench.components.help import HelpScreen
from workbench.components.jobs import ACTIVE, JobsPane
from workbench.components.messages import (
    CheckpointSelected,
    EngineFailed,
    ExportDone,
    HeadSelected,
    HealthUpdated,
    JobSubmitted,
    JobsUpdated,
    OpenHeadDetail,
    Query,
    QueryChanged,
)
from workbench.components.mono import ConfirmDialog
from workbench.components.screening import ScreeningPane
from workbench.components.sidebar import CheckpointSidebar
from workbench.components.sort import SortDialog
from workbench.components.status import Banner, StatusBar
from workbench.components.training import TrainingPane

PANES: list[tuple[str, str]] = [
    ("heads", "Heads"),
    ("map", "Map"),
    ("screening", "Screening"),
    ("ablations", "Ablations"),
    ("jobs", "Jobs"),
    ("training", "Training"),
]
QUERY_PRESETS = [
    ("relation", "object1"),
    ("relation", "object2"),
    ("shape1", "object1"),
    ("shape2", "object2"),
    ("color1", "object1"),
    ("color2", "object2"),
    ("filler", "background"),
]
# `e` writes here (relative to the working folder) unless told otherwise; .gitignore lists it
DEFAULT_EXPORT_DIR = "exports"
# actions that only make sense on the main screen (not in the head detail or a dialog)
MAIN_ONLY = {"filter", "sort", "reverse_sort", "pane", "next_pane", "toggle_sidebar", "edit_query"}
# actions that also work on the head detail screen
DETAIL_OK = {"ablate", "export", "refresh", "help", "screen_heads", "quit"}


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")


def _csv_value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else v


class MainScreen(Screen):
    """The default screen; tab / shift+tab switch panes here (dialogs keep normal focus keys)."""

    BINDINGS = [
        Binding("tab", "app.next_pane(1)", "Pane", show=True, key_display="tab"),
        Binding("shift+tab", "app.next_pane(-1)", "Previous pane", show=False),
    ]


class WorkbenchApp(EngineCallMixin, App[None]):
    """``WorkbenchApp(client).run()``; ``client`` has the EngineClient interface."""

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

    # ----------------------------------------------------------------- engine polling
    def poll_health(self) -> None:
        if self._polling_health:
            return
        self._polling_health = True

        def fetch(client: Any) -> dict:
            return client.health()

        def done(h: dict) -> None:
            self._polling_health = False
            self.post_message(HealthUpdated(h))

        def failed(exc: BaseException) -> None:
            self._polling_health = False
            self.post_message(HealthUpdated(None, str(exc) or type(exc).__name__))

        self.engine_call("health", fetch, done, group="health", quiet=True, on_error=failed)

    def on_health_updated(self, event: HealthUpdated) -> None:
        if self._exit or self._closing:
            return
        status = self.query_one(StatusBar)
        banner = self.query_one(Banner)
        if event.health is not None:
            was = self.connected
            self.connected, self.health, self.attempts = True, event.health, 0
            status.update_state(health=event.health, connected=True)
            if banner.shown:
                banner.hide()
            if was is False:
                self.notify("engine reconnected", title="engine")
                self.action_refresh()
            return
        self.attempts += 1
        self.connected = False
        status.update_state(connected=False)
        banner.show_error(event.error or "no answer", self.attempts)
        if self.reconnect_factory is not None:
            self._try_reconnect()

    def _try_reconnect(self) -> None:
        if self._reconnecting:
            return  # one attempt at a time (starting an engine can take a while)
        self._reconnecting = True
        factory = self.reconnect_factory

        def run(_old: Any) -> Any:
            return factory()  # type: ignore[misc]

        def failed(_exc: BaseException) -> None:
            self._reconnecting = False

        def done(new_client: Any) -> None:
            self._reconnecting = False
            old, self.client = self.client, new_client
            if old is not new_client:
                try:
                    old.close()
                except Exception:
                    pass
            self.poll_health()

        self.engine_call("reconnect", run, done, group="reconnect", quiet=True, on_error=failed)

    def poll_jobs(self) -> None:
        if self._polling_jobs:
            return
        self._polling_jobs = True

        def done(jobs: list[dict]) -> None:
            self._polling_jobs = False
            self.post_message(JobsUpdated(jobs))

        def failed(_exc: BaseException) -> None:
            self._polling_jobs = False

        self.engine_call(
            "jobs", lambda c: c.jobs(), done, group="jobs", quiet=True, on_error=failed
        )

    def on_jobs_updated(self, event: JobsUpdated) -> None:
        if self._exit or self._closing:
            return
        jobs = list(event.jobs or [])
        self.jobs = jobs
        running = sum(1 for j in jobs if j.get("state") == "running")
        queued = sum(1 for j in jobs if j.get("state") == "queued")
        self.query_one(StatusBar).update_state(running=running, queued=queued)
        self.jobs_pane.set_jobs(jobs)
        first = not self._job_states
        for j in jobs:
            jid, state = j.get("id"), j.get("state")
            before = self._job_states.get(jid)
            self._job_states[jid] = state
            if first or before == state or before not in ACTIVE:
                continue
            if state in ACTIVE:
                continue
            self._job_finished(j)

    def _job_finished(self, job: dict) -> None:
        kind, state, jid = job.get("kind"), job.get("state"), job.get("id")
        if state == "done":
            self.notify(f"job {jid} {kind} done", title="jobs")
        elif state == "failed":
            self.notify(
                f"job {jid} {kind} failed: {job.get('error') or 'see its log'}",
                severity="error",
                title="jobs",
            )
            return
        else:
            self.notify(f"job {jid} {kind} {state}", severity="warning", title="jobs")
            return
        if kind == "ablate":
            self.heads_pane.refresh_rows()
            self.pane("ablations").invalidate()
        elif kind == "screen":
            self.heads_pane.refresh_rows()
            self.pane("screening").invalidate()
        elif kind == "synopsis":
            self.heads_pane.refresh_rows()
            self.map_pane.invalidate()
        elif kind in ("train", "evaluate"):
            self.pane("training").invalidate()
        self.load_checkpoints()

    # ----------------------------------------------------------------- checkpoints
    def load_checkpoints(self) -> None:
        def done(cks: list[dict]) -> None:
            self.set_checkpoints(list(cks or []))

        self.engine_call("checkpoints", lambda c: c.checkpoints(), done, group="checkpoints")

    def set_checkpoints(self, cks: list[dict]) -> None:
        self.checkpoints = cks
        if not cks and self.checkpoint is None:
            self.notify(
                "the engine knows no checkpoints: train one (dit-workbench train) or check its cache folder",
                severity="warning",
                title="checkpoints",
            )
        names = [c.get("name") for c in cks]
        want = self.checkpoint["name"] if self.checkpoint else self.initial_checkpoint
        if want not in names:
            if want and self.checkpoint is None and self.initial_checkpoint:
                self.notify(
                    f"no checkpoint {want!r}; showing {names[0] if names else 'none'}",
                    severity="warning",
                )
            want = names[0] if names else None
        ck = next((c for c in cks if c.get("name") == want), None)
        self._set_checkpoint(ck)

    def _set_checkpoint(self, ck: dict | None) -> None:
        changed = (self.checkpoint or {}).get("name") != (ck or {}).get("name")
        self.checkpoint = ck
        self.query_one(StatusBar).update_state(checkpoint=ck or {})
        self.query_one(CheckpointSidebar).set_checkpoints(
            self.checkpoints, ck["name"] if ck else None
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
        ck = next((c for c in self.checkpoints if c.get("name") == name), None)
        if ck is None:
            self.notify(f"no checkpoint {name!r}", severity="error")
            return
        self._set_checkpoint(ck)
        self.notify(f"checkpoint {name}", title="checkpoint")

    # ----------------------------------------------------------------- messages from panes
    def on_engine_failed(self, event: EngineFailed) -> None:
        if event.quiet or self.connected is False:
            return
        now = time.monotonic()
        text = event.text
        if now - self._recent_errors.get(text, -1e9) < 5.0:
            return
        self._recent_errors[text] = now
        self.notify(text, severity="error", title="engine", timeout=6)

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

    def on_job_submitted(self, event: JobSubmitted) -> None:
        self.poll_jobs()

    def on_export_done(self, event: ExportDone) -> None:
        self.exports.append((event.path, event.rows))
        self.notify(f"wrote {event.rows} rows to {event.path}", title="export")

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

    def selected_head(self) -> tuple[int, int] | None:
        screen = self.screen
        if isinstance(screen, HeadDetailScreen):
            return screen.selected_head()
        pane_head = self.active_pane.selected_head()
        return pane_head or self.selected

    def action_ablate(self) -> None:
        if self.checkpoint is None:
            self.notify("no checkpoint loaded", severity="warning")
            return
        hd = self.selected_head()
        if hd is None:
            self.notify("move the cursor to a head first (Heads or Map pane)", severity="warning")
            return
        name = self.checkpoint["name"]

        def done(params: dict | None) -> None:
            if params is not None:
                self.submit_job("ablate", params, f"ablate L{params['layer']}H{params['head']}")

        self.push_screen(AblateDialog(name, *hd), done)

    def action_screen_heads(self) -> None:
        if self.checkpoint is None:
            self.notify("no checkpoint loaded", severity="warning")
            return
        name = self.checkpoint["name"]

        def done(yes: bool | None) -> None:
            if yes:
                self.submit_job("screen", {"checkpoint": name}, f"screen {name}")

        # like `a`: a key that submits a job asks first
        self.push_screen(
            ConfirmDialog(
                f"[b]Screen {name}[/b]: score every head x relation in weight space "
                "(submits a job; results go to the user cache). enter submits, esc cancels.",
                "Screen",
            ),
            done,
        )

    def submit_job(self, kind: str, params: dict, what: str) -> None:
        def done(job: dict) -> None:
            self.notify(f"job {job.get('id', '?')} queued: {what}", title="jobs")
            self.post_message(JobSubmitted(job))

        self.engine_call(
            f"submit {kind}",
            lambda c: c.submit(kind, params),
            done,
            group=f"submit:{kind}",
            exclusive=False,
        )

    # ----------------------------------------------------------------- export
    def export_source(self) -> ExportSource | None:
        screen = self.screen
        if isinstance(screen, HeadDetailScreen):
            return screen.export_source()
        return self.active_pane.export_source()

    def export_base(self) -> Path:
        """Where `e` suggests writing: --exports, else ./exports (git-ignored)."""
        return self.export_dir or Path.cwd() / DEFAULT_EXPORT_DIR

    def default_export_path(self, src: ExportSource) -> str:
        parts = [src.stem or src.name]
        if self.checkpoint and src.name not in ("jobs",):
            parts.append(self.checkpoint["name"])
        q = src.params.get("query") if src.params else None
        if q:
            parts.append(str(q).replace("->", "-to-"))
        base = self.export_base()
        stem = _slug("-".join(parts))
        path = base / f"{stem}.csv"
        i = 1
        while path.exists():
            path = base / f"{stem}-{i}.csv"
            i += 1
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def action_export(self) -> None:
        src = self.export_source()
        if src is None:
            self.notify("nothing to export here", severity="warning")
            return
        what = src.name + (
            f" ({', '.join(f'{k}={v}' for k, v in src.params.items())})" if src.params else ""
        )
        if src.filter:
            what += f" filtered “{src.filter}”"

        def done(path: str | None) -> None:
            if path:
                self.export_to(src, path)

        self.push_screen(ExportDialog(self.default_export_path(src), what), done)

    def export_to(self, src: ExportSource, path: str) -> None:
        """Write every row of src to path as CSV (in a worker; paging through the engine)."""
        from workbench.output import rows_to_csv, write_text_atomic

        page = self.export_page_size
        base = self.export_base().absolute()
        target = Path(path).expanduser().absolute()

        def run(client: Any) -> tuple[str, int]:
            if src.local is not None:
                cols, rows = src.local
            else:
                cols, rows = fetch_all(
                    client,
                    src.name,
                    sort=src.sort,
                    desc=src.desc,
                    filter=src.filter,
                    page=page,
                    params=src.params,
                )
            dicts = [{c: _csv_value(v) for c, v in zip(cols, r, strict=False)} for r in rows]
            if target.parent == base:  # the default folder is made on first use; others not
                base.mkdir(parents=True, exist_ok=True)
            write_text_atomic(str(target), rows_to_csv(dicts, cols))
            return str(target), len(rows)

        def done(res: tuple[str, int]) -> None:
            self.post_message(ExportDone(*res))

        self.engine_call("export", run, done, group="export", exclusive=False)

    # ----------------------------------------------------------------- command palette
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        cmds: list[tuple[str, str, Callable[[], Any]]] = [
            ("Help: keys", "List every key (?)", self.action_help),
            ("Filter table", "Filter the current table (/)", self.action_filter),
            ("Clear filter", "Show every row of the current table", self._clear_filter),
            ("Sort table", "Sort the current table by a column (s)", self.action_sort),
            ("Reverse sort", "Reverse the current table's order (S)", self.action_reverse_sort),
            (
                "Ablate selected head",
                "Mask or zero the selected head; submits a job (a)",
                self.action_ablate,
            ),
            (
                "Screen checkpoint",
                "Weight-space screening of every head; submits a job (x)",
                self.action_screen_heads,
            ),
            ("Export table to CSV", "Write every row of the current table (e)", self.action_export),
            ("Refresh", "Reload everything from the engine (r)", self.action_refresh),
            (
                "Toggle sidebar",
                "Show or hide the checkpoints sidebar (b)",
                self.action_toggle_sidebar,
            ),
            (
                "Edit query",
                "Text category -> image category, steps, aggregation (o)",
                self.action_edit_query,
            ),
            (
                "Open head detail",
                "Attention maps and samples of the selected head (enter)",
                self._open_selected,
            ),
            (
                "Cancel job",
                "Cancel the job under the cursor in the Jobs pane (c)",
                self._cancel_job,
            ),
            ("Next pane", "Switch to the next pane (tab)", lambda: self.action_next_pane(1)),
            (
                "Previous pane",
                "Switch to the previous pane (shift+tab)",
                lambda: self.action_next_pane(-1),
            ),
        ]
        for i, (pid, title) in enumerate(PANES):
            cmds.append(
                (
                    f"Pane: {title}",
                    f"Show the {title} pane ({i + 1})",
                    lambda pid=pid: self.action_pane(pid),
                )
            )
        for c in self.checkpoints:
            n = c.get("name", "?")
            cmds.append(
                (
                    f"Checkpoint: {n}",
                    f"Switch every pane to {n}",
                    lambda n=n: self.switch_checkpoint(n),
                )
            )
        for text, image in QUERY_PRESETS:
            cmds.append(
                (
                    f"Query: {text}->{image}",
                    "Rank heads by this attention",
                    lambda t=text, im=image: self._set_query(t, im),
                )
            )
        for title, help_text, cb in cmds:
            yield SystemCommand(title, help_text, cb)

    def _clear_filter(self) -> None:
        t = self.active_pane.current_table()
        if t is not None:
            t.set_filter(None)

    def _open_selected(self) -> None:
        hd = self.selected_head()
        if hd is not None:
            self.post_message(OpenHeadDetail(*hd))

    def _cancel_job(self) -> None:
        self.action_pane("jobs")
        self.call_after_refresh(self.jobs_pane.action_cancel_job)

    def _set_query(self, text: str, image: str) -> None:
        q = Query(
            text, image, self.query_value.steps, self.query_value.agg, self.query_value.correct_only
        )
        self.post_message(QueryChanged(q))
        self.action_pane("heads")


def run_tui(client: Any, **kwargs: Any) -> WorkbenchApp:
    """Open the workbench on ``client`` (an EngineClient); returns the app when the user quits
    (``app.client`` is the client it ended with: a reconnect may have replaced it)."""
    app = WorkbenchApp(client, **kwargs)
    app.run()
    return app
