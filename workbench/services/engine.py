"""Engine calls from the UI: each runs in a thread worker and its result comes back as a typed
message on the UI thread, so a slow or dead engine never freezes the workbench."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from textual.css.query import NoMatches
from textual.dom import DOMNode
from textual.message import Message
from textual.worker import Worker, get_current_worker

from engine.service.client import EngineAPI

T = TypeVar("T")
N = TypeVar("N", bound=DOMNode)
M = TypeVar("M", bound=Message)


class EngineCallFailed(Message):
    """An engine call failed; the app shows it as a notification (never a crash)."""

    def __init__(self, what: str, error: BaseException, *, quiet: bool = False) -> None:
        super().__init__()
        self.what = what
        self.error = error
        self.quiet = quiet

    @property
    def text(self) -> str:
        msg = str(self.error) or type(self.error).__name__
        return f"{self.what}: {msg}" if self.what else msg


class TableRows(Message, bubble=False):
    """Every row of an engine table asked for with `params` (`Engine.fetch_rows`), or the
    error that stopped it; a widget subclasses it once per table it shows."""

    def __init__(
        self,
        params: dict,
        rows: tuple[list[str], list[list]] | None = None,
        *,
        error: BaseException | None = None,
    ) -> None:
        super().__init__()
        self.params = params
        self.rows = rows
        self.error = error


class Engine:
    """The app's way to the engine: the client (a reconnect replaces it) and `call`.

    The UI thread never touches the client. `call` runs one client call in a thread worker
    owned by the node that asked, and posts that node `reply(result)`, a message of the node's
    own, or `EngineCallFailed` (which bubbles to the app) and `failed(error)`. A newer call in
    the same group supersedes an older one: its reply is never posted.
    """

    def __init__(self, client: EngineAPI, reconnect: Callable[[], EngineAPI] | None = None) -> None:
        self.client = client
        self.reconnect = reconnect

    def call(
        self,
        node: DOMNode,
        what: str,
        fn: Callable[[EngineAPI], T],
        reply: Callable[[T], Message] | None = None,
        *,
        failed: Callable[[BaseException], Message] | None = None,
        group: str | None = None,
        exclusive: bool = True,
        quiet: bool = False,
    ) -> Worker[None]:
        client = self.client

        def run() -> None:
            worker = get_current_worker()
            try:
                result = fn(client)
            except Exception as exc:  # any engine failure becomes a message, never a crash
                if not worker.is_cancelled:
                    node.post_message(EngineCallFailed(what, exc, quiet=quiet))
                    if failed is not None:
                        node.post_message(failed(exc))
                return
            if not worker.is_cancelled and reply is not None:
                node.post_message(reply(result))

        return node.run_worker(
            run,
            thread=True,
            group=group or what,
            exclusive=exclusive,
            name=what,
            exit_on_error=False,
        )

    def fetch_rows(
        self,
        node: DOMNode,
        what: str,
        table: str,
        params: dict,
        reply: type[TableRows],
        *,
        filter: str | None = None,
        group: str | None = None,
        quiet: bool = False,
    ) -> Worker[None]:
        """`call` for every row of `table` (paged by fetch_all); the answer is a `reply`."""
        return self.call(
            node,
            what,
            lambda c: fetch_all(c, table, filter=filter, params=params),
            lambda rows: reply(params, rows),
            failed=lambda exc: reply(params, error=exc),
            group=group,
            quiet=quiet,
        )


def quitting(node: DOMNode) -> bool:
    app = node.app
    return bool(app._exit or app._closing)


def answer(handler: Callable[[N, M], None]) -> Callable[[N, M], None]:
    """For the handler of an engine answer: an answer that arrives while the app quits, or
    after the widgets it was for were torn down (a screen popped), is dropped."""

    @functools.wraps(handler)
    def handle(node: N, message: M) -> None:
        if quitting(node):
            return
        try:
            handler(node, message)
        except NoMatches:
            if quitting(node) or not node.is_attached:
                return
            raise

    return handle


def engine_of(node: DOMNode) -> Engine:
    """The engine of the app `node` is in (widgets reach it this way, as they reach `app`)."""
    engine = getattr(node.app, "engine", None)
    if not isinstance(engine, Engine):
        raise RuntimeError(f"{node!r} is not in an app with an engine")
    return engine


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
