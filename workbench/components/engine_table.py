"""A DataTable backed by an engine table: engine-side sort, filter and paging.

Only the rows the user has scrolled to are fetched (``page_size`` at a time, more as the cursor
nears the end), so a 10k-row table opens as fast as a 100-row one. ``local`` mode holds all rows
on the client instead (the jobs list) and sorts / filters them with the same semantics.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from engine.core.rowfilter import FilterError, filter_rows, sort_rows, translate_names
from engine.service.client import EngineAPI
from workbench.render.cells import Col, default_desc
from workbench.services.engine import answer, engine_of
from workbench.services.export import ExportSource


@dataclass(frozen=True)
class PageRequest:
    """What a page of rows was asked for: the answer applies only while `gen` is current."""

    gen: int
    sort: str | None
    desc: bool
    filter: str | None
    keep: Hashable | None
    append: bool = False
    to_end: bool = False
    new_filter: bool = False


class EngineTable(DataTable):
    """Rows of one engine table (``name``) for the parameters set with :meth:`configure`."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "first", "First row", show=False),
        Binding("G", "last", "Last row", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    class Loaded(Message):
        """New rows arrived (or the sort / filter changed)."""

        def __init__(self, table: EngineTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> EngineTable:
            return self.table

    class RowChanged(Message):
        """The cursor moved to another row (``row`` is the engine row as a dict). ``user`` is
        False when the table put it there itself (after loading, or to follow the selection):
        panes only announce a newly selected head for moves the user made."""

        def __init__(self, table: EngineTable, row: dict | None, user: bool = True) -> None:
            super().__init__()
            self.table = table
            self.row = row
            self.user = user

        @property
        def control(self) -> EngineTable:
            return self.table

    class Activated(Message):
        """Enter on a row."""

        def __init__(self, table: EngineTable, row: dict) -> None:
            super().__init__()
            self.table = table
            self.row = row

        @property
        def control(self) -> EngineTable:
            return self.table

    class PageLoaded(Message, bubble=False):
        def __init__(self, ask: PageRequest, result: dict) -> None:
            super().__init__()
            self.ask = ask
            self.result = result

    class PageFailed(Message, bubble=False):
        def __init__(self, ask: PageRequest, error: BaseException) -> None:
            super().__init__()
            self.ask = ask
            self.error = error

    def __init__(
        self,
        name: str,
        cols: list[Col] | None = None,
        *,
        page_size: int = 200,
        row_id: Callable[[dict], Hashable] | None = None,
        quiet: bool = False,
        local: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.table_name = name
        self.cols = cols
        self.page_size = page_size
        self.row_id = row_id
        self.quiet = quiet
        self.local = local
        self.params: dict | None = None
        self.sort_by: str | None = None
        self.desc = False
        self.filter: str | None = None  # the filter in effect (engine column names)
        self.filter_typed: str | None = None  # as the user typed it (header names allowed)
        self.filter_error: str | None = None  # why the last filter typed was refused
        self._auto_row: int | None = None  # a cursor move the table made itself
        self.columns_: list[str] = []
        self.rows_: list[list] = []
        self.total = 0
        self.error: str | None = None
        self.pending = False
        self._gen = 0
        self._more = False
        self._local_all: tuple[list[str], list[list]] = ([], [])
        self._shown_cols: list[Col] = []

    # ----------------------------------------------------------------- state
    def configure(self, params: dict | None) -> None:
        """Show the table for these parameters (None: show nothing)."""
        self.params = params
        if params is None:
            self._gen += 1
            self.columns_, self.rows_, self.total, self.error = [], [], 0, None
            self.pending = False
            self.loading = False
            self.clear(columns=True)
            self.post_message(self.Loaded(self))
            return
        self.reload(keep_cursor=True)  # rows are identified by row_id: stay on the same head

    def reload(self, keep_cursor: bool = True) -> None:
        self._load(self.sort_by, self.desc, self.filter, keep_cursor=keep_cursor)

    def set_sort(self, column: str | None, desc: bool | None = None) -> None:
        if desc is None:
            desc = default_desc(column) if column else False
        self._load(column, desc, self.filter, keep_cursor=True)

    def reverse_sort(self) -> None:
        if self.sort_by:
            self._load(self.sort_by, not self.desc, self.filter, keep_cursor=True)

    def set_filter(self, text: str | None) -> None:
        """Filter by `text`; header names (`L<3`, `CI95<0`) stand for their columns. A filter
        the engine refuses leaves the last good one in effect and the error on show."""
        text = (text or "").strip() or None
        self.filter_typed = text
        if text is None:
            self.filter_error = None
        self._load(self.sort_by, self.desc, self.to_engine_filter(text), keep_cursor=True)

    def header_names(self) -> dict[str, str]:
        """Header label -> engine column, for the labels that differ from the column name."""
        out = {}
        for c in self._shown_cols or self.cols or []:
            if c.label != c.key and c.key in (self.columns_ or [c.key]):
                out[c.label.replace(" ", "")] = c.key
        return out

    def to_engine_filter(self, text: str | None) -> str | None:
        return translate_names(text, self.header_names(), self.columns_) if text else text

    def action_clear_filter(self) -> None:
        if self.filter or self.filter_error:
            self.set_filter(None)

    @property
    def sortable_columns(self) -> list[tuple[str, str]]:
        """(engine column, label) pairs the user can sort by."""
        labels = {c.key: c.label for c in self._shown_cols}
        return [
            (c, labels.get(c, c)) for c in self.columns_ if not isinstance(self._sample(c), list)
        ]

    def _sample(self, col: str) -> Any:
        i = self.columns_.index(col)
        for r in self.rows_[:5]:
            if r[i] is not None:
                return r[i]
        return None

    # ----------------------------------------------------------------- loading
    def _load(self, sort: str | None, desc: bool, filt: str | None, *, keep_cursor: bool) -> None:
        if self.local:
            self._apply_local(sort, desc, filt, keep_cursor)
            return
        if self.params is None:
            return
        self._gen += 1
        gen = self._gen
        keep = self.current_row_id() if keep_cursor else None
        params, name, limit = dict(self.params), self.table_name, self.page_size
        self.pending = True
        if not self.rows_:
            self.loading = True
        # a new filter that fails keeps the table as it was (the last good filter)
        new_filter = filt != self.filter and self.params is not None and bool(self.columns_)
        ask = PageRequest(gen, sort, desc, filt, keep, new_filter=new_filter)
        engine_of(self).call(
            self,
            f"{name} table",
            lambda c: c.table(
                name, sort=sort, desc=desc, filter=filt, offset=0, limit=limit, **params
            ),
            lambda res: self.PageLoaded(ask, res),
            failed=lambda exc: self.PageFailed(ask, exc),
            group="table",
            quiet=self.quiet,
        )

    @answer
    def on_engine_table_page_loaded(self, event: PageLoaded) -> None:
        ask, res = event.ask, event.result
        if ask.gen == self._gen:
            self.pending = False
            self.loading = False
            self._more = False
            self.error = None
            if ask.filter == self.to_engine_filter(self.filter_typed):
                self.filter_error = None
            self.sort_by, self.desc, self.filter = ask.sort, ask.desc, ask.filter
            rows = list(res.get("rows") or [])
            self.total = int(res.get("total", len(rows)))
            if ask.append:
                start = len(self.rows_)
                self.rows_.extend(rows)
                self._add_rows(rows, start)
            else:
                self.columns_ = list(res.get("columns") or [])
                self.rows_ = rows
                self._rebuild(ask.keep)
            self.post_message(self.Loaded(self))
        if ask.to_end and self.row_count:
            self.move_cursor(row=self.row_count - 1)

    @answer
    def on_engine_table_page_failed(self, event: PageFailed) -> None:
        ask, why = event.ask, str(event.error) or type(event.error).__name__
        if ask.append:
            self._more = False
            return
        if ask.gen != self._gen:
            return
        self.pending = False
        self.loading = False
        self._more = False
        if ask.new_filter:
            self.filter_error = why
        else:
            self.error = why
        self.post_message(self.Loaded(self))

    def _load_more(self, *, to_end: bool = False) -> None:
        if self.local or self.params is None or self._more or len(self.rows_) >= self.total:
            return
        self._more = True
        gen = self._gen
        params, name, limit = dict(self.params), self.table_name, self.page_size
        sort, desc, filt = self.sort_by, self.desc, self.filter
        offset, total = len(self.rows_), self.total
        ask = PageRequest(gen, sort, desc, filt, None, append=True, to_end=to_end)

        def fetch(client: EngineAPI) -> dict:
            out: list[list] = []
            res: dict = {"rows": [], "total": total}
            off = offset
            while True:
                res = client.table(
                    name, sort=sort, desc=desc, filter=filt, offset=off, limit=limit, **params
                )
                got = res.get("rows") or []
                out.extend(got)
                off += len(got)
                if not to_end or not got or off >= int(res.get("total", 0)):
                    break
            return {"rows": out, "total": res.get("total", total), "columns": res.get("columns")}

        engine_of(self).call(
            self,
            f"{name} table",
            fetch,
            lambda res: self.PageLoaded(ask, res),
            failed=lambda exc: self.PageFailed(ask, exc),
            group="more",
            quiet=self.quiet,
        )

    # ----------------------------------------------------------------- local mode
    def set_local_rows(self, columns: list[str], rows: list[list]) -> None:
        self._local_all = (list(columns), [list(r) for r in rows])
        self._apply_local(self.sort_by, self.desc, self.filter, keep_cursor=True)

    def _apply_local(
        self, sort: str | None, desc: bool, filt: str | None, keep_cursor: bool
    ) -> None:
        cols, rows = self._local_all
        keep = self.current_row_id() if keep_cursor else None
        try:
            shown = sort_rows(filter_rows(rows, cols, filt), cols, sort, desc)
        except FilterError as e:
            self.notify(str(e), severity="error", title="filter")
            self.filter_error = str(e)
            self.post_message(self.Loaded(self))
            return
        if filt == self.to_engine_filter(self.filter_typed):
            self.filter_error = None
        self.sort_by, self.desc, self.filter = sort, desc, filt
        self.columns_, self.rows_, self.total, self.error = cols, shown, len(shown), None
        self._rebuild(keep)
        self.post_message(self.Loaded(self))

    # ----------------------------------------------------------------- drawing
    def _display_cols(self) -> list[Col]:
        present = set(self.columns_)
        if self.cols is None:
            return [Col(c, c) for c in self.columns_]
        shown = [c for c in self.cols if c.key in present]
        used = {c.key for c in shown} | {u for c in shown for u in c.uses}
        extra = [Col(c, c) for c in self.columns_ if c not in used]
        return shown + extra

    def _label(self, col: Col) -> Text:
        label = Text(col.label)
        if self.sort_by and (self.sort_by == col.key):
            label.append(" ▼" if self.desc else " ▲", style="bold")
        return label

    def _rebuild(self, keep: Hashable | None) -> None:
        with self.app.batch_update():
            self.clear(columns=True)
            self._shown_cols = self._display_cols()
            for c in self._shown_cols:
                self.add_column(self._label(c), key=c.key)
            self._add_rows(self.rows_, 0)
            target = 0
            if keep is not None:
                for i in range(len(self.rows_)):
                    if self._row_id_at(i) == keep:
                        target = i
                        break
            sel = self.selected_head_row()  # the head selected anywhere in the app comes first
            if sel is not None:
                target = sel
            if self.row_count:
                self._auto_row = target
                self.move_cursor(row=target, animate=False)

    def _add_rows(self, rows: list[list], start: int) -> None:
        cols = self._shown_cols
        for i, r in enumerate(rows):
            d = dict(zip(self.columns_, r, strict=False))
            self.add_row(*(c.render(d) for c in cols), key=str(start + i))

    # ----------------------------------------------------------------- rows
    def row_dict(self, index: int) -> dict | None:
        if 0 <= index < len(self.rows_):
            return dict(zip(self.columns_, self.rows_[index], strict=False))
        return None

    def current_row(self) -> dict | None:
        if not self.row_count:
            return None
        return self.row_dict(self.cursor_row)

    def _row_id_at(self, index: int) -> Hashable | None:
        d = self.row_dict(index)
        if d is None:
            return None
        if self.row_id is not None:
            try:
                return self.row_id(d)
            except Exception:
                return None
        return tuple(str(v) for v in self.rows_[index])

    def current_row_id(self) -> Hashable | None:
        if not self.row_count:
            return None
        return self._row_id_at(self.cursor_row)

    def select_where(self, pred: Callable[[dict], bool]) -> bool:
        """Move the cursor to the first loaded row matching pred; False if none is loaded."""
        for i in range(len(self.rows_)):
            d = self.row_dict(i)
            if d is not None and pred(d):
                if self.cursor_row != i:
                    self._auto_row = i
                    self.move_cursor(row=i)
                return True
        return False

    def selected_head_row(self) -> int | None:
        """The first loaded row of the head the app has selected (tables with layer and head)."""
        sel = getattr(self.app, "selected", None)
        if not sel or "layer" not in self.columns_ or "head" not in self.columns_:
            return None
        li, hi = self.columns_.index("layer"), self.columns_.index("head")
        for i, r in enumerate(self.rows_):
            if (r[li], r[hi]) == tuple(sel):
                return i
        return None

    # ----------------------------------------------------------------- events / keys
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table is not self:
            return
        event.stop()
        idx = event.cursor_row
        if not self.local and len(self.rows_) < self.total and idx >= len(self.rows_) - 20:
            self._load_more()
        user = idx != self._auto_row
        self._auto_row = None
        self.post_message(self.RowChanged(self, self.row_dict(idx), user=user))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table is not self:
            return
        event.stop()
        row = self.row_dict(event.cursor_row)
        if row is not None:
            self.post_message(self.Activated(self, row))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.data_table is not self:
            return
        event.stop()
        key = event.column_key.value
        if key is None:
            return
        if key == self.sort_by:
            self.reverse_sort()
        else:
            self.set_sort(key)

    def action_first(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last(self) -> None:
        if not self.local and len(self.rows_) < self.total:
            self._load_more(to_end=True)
        elif self.row_count:
            self.move_cursor(row=self.row_count - 1)

    # ----------------------------------------------------------------- summary / export
    def summary(self) -> str:
        if self.params is None and not self.local:
            return ""
        if self.error:
            return f"⚠ {self.error}"
        parts = []
        if self.filter_error:
            kept = f"“{self.filter}” kept" if self.filter else "no filter"
            parts.append(f"⚠ {self.filter_error} · {kept} · / to fix")
        if self.pending and not self.rows_:
            parts.append("loading…")
        else:
            n = len(self.rows_)
            parts.append(f"{self.total} rows" if n >= self.total else f"{n}/{self.total} rows")
        if self.sort_by:
            parts.append(f"by {self.sort_by} {'▼' if self.desc else '▲'}")
        if self.filter and not self.filter_error:
            shown = self.filter_typed if self.filter_typed else self.filter
            parts.append(f"filter “{shown}” esc clears")
        return " · ".join(parts)

    def export_source(self) -> ExportSource:
        if self.local:
            cols, rows = self._local_all
            shown = sort_rows(filter_rows(rows, cols, self.filter), cols, self.sort_by, self.desc)
            return ExportSource(self.table_name, local=(list(cols), shown), stem=self.table_name)
        return ExportSource(
            self.table_name,
            params=dict(self.params or {}),
            sort=self.sort_by,
            desc=self.desc,
            filter=self.filter,
            stem=self.table_name,
        )
