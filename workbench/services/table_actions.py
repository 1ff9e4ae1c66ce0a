"""`/`, `s` and `S` on a table: the dialog, then the table's new filter or order."""

from __future__ import annotations

from textual.app import App

from workbench.components.engine_table import EngineTable
from workbench.components.filter import FilterDialog
from workbench.components.sort import SortDialog


def ask_filter(app: App[None], t: EngineTable) -> None:
    def done(text: str | None) -> None:
        if text is not None:
            t.set_filter(text)
            t.focus()

    names = [f"{label}={col}" for label, col in t.header_names().items()]
    current = t.filter_typed if t.filter_typed is not None else t.filter
    app.push_screen(FilterDialog(current, t.table_name, t.columns_, names, t.filter_error), done)


def ask_sort(app: App[None], t: EngineTable) -> None:
    cols = t.sortable_columns
    if not cols:
        app.notify("nothing to sort yet", severity="warning")
        return

    def done(choice: tuple[str, bool] | None) -> None:
        if choice is not None:
            t.set_sort(*choice)
            t.focus()

    app.push_screen(SortDialog(cols, t.sort_by, t.desc), done)


def reverse_sort(app: App[None], t: EngineTable) -> None:
    if not t.sort_by:
        app.notify("not sorted yet: press s to pick a column", severity="warning")
        return
    t.reverse_sort()
