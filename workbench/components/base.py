"""Shared plumbing: engine calls in thread workers, and the base class of the panes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.worker import Worker, get_current_worker

from workbench.components.messages import EngineFailed

if TYPE_CHECKING:
    from workbench.components.engine_table import EngineTable


class EngineReply(Message, bubble=False):
    """A worker's result, delivered on the UI thread to the widget that asked for it."""

    def __init__(self, callback: Callable[[Any], None], result: Any) -> None:
        super().__init__()
        self.callback = callback
        self.result = result


class EngineCallMixin:
    """``engine_call`` runs one client call in a thread worker and hands the result back.

    The UI thread never touches the client. A newer call in the same ``group`` supersedes an
    older one (its result is dropped). Errors become :class:`EngineFailed` messages, which the
    app shows as notifications.
    """

    def engine_call(
        self,
        what: str,
        fn: Callable[[Any], Any],
        done: Callable[[Any], None] | None = None,
        *,
        group: str | None = None,
        exclusive: bool = True,
        quiet: bool = False,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> Worker:
        widget = self  # a textual Widget / Screen / App
        client = widget.app.client  # type: ignore[attr-defined]

        def run() -> None:
            worker = get_current_worker()
            try:
                result = fn(client)
            except Exception as exc:  # any engine failure becomes a message, never a crash
                if not worker.is_cancelled:
                    widget.post_message(EngineFailed(what, exc, quiet=quiet))  # type: ignore[attr-defined]
                    if on_error is not None:
                        widget.post_message(EngineReply(on_error, exc))  # type: ignore[attr-defined]
                return
            if not worker.is_cancelled and done is not None:
                widget.post_message(EngineReply(done, result))  # type: ignore[attr-defined]

        return widget.run_worker(  # type: ignore[attr-defined]
            run,
            thread=True,
            group=group or f"{id(widget)}:{what}",
            exclusive=exclusive,
            name=what,
            exit_on_error=False,
        )

    def on_engine_reply(self, message: EngineReply) -> None:
        message.stop()
        app = self.app  # type: ignore[attr-defined]
        if getattr(app, "_exit", False) or getattr(app, "_closing", False):
            return  # a late answer while quitting
        try:
            message.callback(message.result)
        except NoMatches:
            # the widgets it was for are being torn down (app quitting, screen popped)
            if app._exit or app._closing or not self.is_attached:  # type: ignore[attr-defined]
                return
            raise


@dataclass
class ExportSource:
    """What `e` exports: an engine table with its parameters, or rows already held locally."""

    name: str
    params: dict = field(default_factory=dict)
    sort: str | None = None
    desc: bool = False
    filter: str | None = None
    local: tuple[list[str], list[list]] | None = None
    stem: str = ""


class Pane(EngineCallMixin, Vertical):
    """A tab of the workbench. Subclasses load their data in `reload` (workers only)."""

    title = "pane"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.checkpoint: dict | None = None
        self.stale = True
        self.active = False

    def set_checkpoint(self, ck: dict | None) -> None:
        self.checkpoint = ck
        self.invalidate()

    def invalidate(self) -> None:
        """Mark the data out of date; reload now when visible, else when next shown."""
        self.stale = True
        if self.active and self.is_mounted:
            self.stale = False
            self.reload()

    def activate(self) -> None:
        self.active = True
        if self.stale:
            self.stale = False
            self.reload()

    def deactivate(self) -> None:
        self.active = False

    def reload(self) -> None:  # pragma: no cover - overridden
        pass

    def current_table(self) -> EngineTable | None:
        """The table that `/`, `s` and `e` act on (the focused one when a pane has several)."""
        return None

    def export_source(self) -> ExportSource | None:
        t = self.current_table()
        return t.export_source() if t is not None else None

    def selected_head(self) -> tuple[int, int] | None:
        return None

    def follow_selection(self, layer: int, head: int) -> None:
        """Put the current table's cursor on this head when it is loaded (switching panes keeps
        the selected head)."""
        t = self.current_table()
        if t is not None and "layer" in t.columns_ and "head" in t.columns_:
            t.select_where(lambda r: (r.get("layer"), r.get("head")) == (layer, head))

    def focus_main(self) -> None:
        t = self.current_table()
        if t is not None:
            t.focus()

    @property
    def ckpt_name(self) -> str | None:
        return self.checkpoint["name"] if self.checkpoint else None


def fetch_all(
    client: Any,
    name: str,
    *,
    sort: str | None = None,
    desc: bool = False,
    filter: str | None = None,
    page: int = 500,
    params: dict | None = None,
) -> tuple[list[str], list[list]]:
    """Every row of an engine table, paging with offset/limit (call from a worker thread).

    Advances by the number of rows actually returned, so an engine that caps ``limit`` lower than
    asked still gives every row.
    """
    params = dict(params or {})
    columns: list[str] = []
    rows: list[list] = []
    offset = 0
    while True:
        res = client.table(
            name, sort=sort, desc=desc, filter=filter, offset=offset, limit=page, **params
        )
        columns = list(res.get("columns") or columns)
        got = list(res.get("rows") or [])
        rows.extend(got)
        offset += len(got)
        if not got or offset >= int(res.get("total", 0)):
            return columns, rows
