"""Engine calls from the UI: each runs in a thread worker and its result comes back as a message
on the UI thread, so a slow or dead engine never freezes the workbench."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.css.query import NoMatches
from textual.message import Message
from textual.worker import Worker, get_current_worker

from engine.service.client import EngineAPI
from workbench.components.messages import EngineFailed


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


def fetch_all(
    client: EngineAPI,
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
