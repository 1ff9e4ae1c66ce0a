"""Export (`e`): the dialog that asks where to write the current table as CSV (defaults to a
file in ./exports), and the app's side that names that file and writes every row."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from workbench.components.base import ExportSource, fetch_all
from workbench.components.detail import HeadDetailScreen
from workbench.components.messages import ExportDone

# `e` writes here (relative to the working folder) unless told otherwise; .gitignore lists it
DEFAULT_EXPORT_DIR = "exports"


class ExportDialog(ModalScreen[str | None]):
    DEFAULT_CSS = """
    ExportDialog { align: center middle; }
    ExportDialog > Vertical {
        width: 70; max-width: 100%; height: auto;
        border: round $accent; background: $surface; padding: 0 1;
    }
    ExportDialog Input { width: 1fr; margin: 1 0 0 0; }
    ExportDialog .hint { color: $text-muted; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default_path: str, what: str) -> None:
        super().__init__()
        self.default_path = default_path
        self.what = what

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]Export CSV[/b]: {self.what}")
            yield Input(self.default_path, id="export-path")
            yield Static(
                "enter writes every row (all pages, as sorted and filtered) · esc cancels",
                classes="hint",
            )

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = event.value.strip()
        if not path:
            self.notify("type a file path", severity="warning")
            return
        self.dismiss(str(Path(path).expanduser()))

    def action_cancel(self) -> None:
        self.dismiss(None)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")


def _csv_value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else v


class ExportActions:
    """WorkbenchApp's `e`: the current table (or head detail) to CSV, paged through the engine."""

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

    def on_export_done(self, event: ExportDone) -> None:
        self.exports.append((event.path, event.rows))
        self.notify(f"wrote {event.rows} rows to {event.path}", title="export")
