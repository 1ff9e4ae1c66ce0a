"""CSV export (`e`) of what a pane or the head detail shows: the file it suggests, and every row
written from a worker, paging through the engine."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.app import App

from engine.service.client import EngineAPI
from workbench.components.export import ExportDialog
from workbench.output import rows_to_csv, write_text_atomic
from workbench.services.engine import Engine, fetch_all
from workbench.services.messages import ExportDone

# `e` writes here (relative to the working folder) unless told otherwise; .gitignore lists it
DEFAULT_EXPORT_DIR = "exports"


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

    def describe(self) -> str:
        what = self.name
        if self.params:
            what += f" ({', '.join(f'{k}={v}' for k, v in self.params.items())})"
        if self.filter:
            what += f" filtered “{self.filter}”"
        return what


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")


def _csv_value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else v


def write_csv(
    client: EngineAPI, src: ExportSource, target: Path, base: Path, page: int
) -> tuple[str, int]:
    """Every row of `src` to `target` (call from a worker); the path and the rows written."""
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


class Exporter:
    """The app's `e`: asks where (ExportDialog), writes in a worker, keeps what it wrote."""

    def __init__(
        self, app: App[None], engine: Engine, export_dir: Path | None, page_size: int
    ) -> None:
        self.app = app
        self.engine = engine
        self.export_dir = export_dir
        self.page_size = page_size
        self.exports: list[tuple[str, int]] = []

    def base(self) -> Path:
        """Where `e` suggests writing: --exports, else ./exports (git-ignored)."""
        return self.export_dir or Path.cwd() / DEFAULT_EXPORT_DIR

    def default_path(self, src: ExportSource, checkpoint: str | None) -> str:
        parts = [src.stem or src.name]
        if checkpoint and src.name not in ("jobs",):
            parts.append(checkpoint)
        q = src.params.get("query") if src.params else None
        if q:
            parts.append(str(q).replace("->", "-to-"))
        base = self.base()
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

    def ask(self, src: ExportSource, checkpoint: str | None) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.export_to(src, path)

        dialog = ExportDialog(self.default_path(src, checkpoint), src.describe())
        self.app.push_screen(dialog, chosen)

    def export_to(self, src: ExportSource, path: str) -> None:
        """Write every row of src to path as CSV (in a worker; paging through the engine)."""
        page, base = self.page_size, self.base().absolute()
        target = Path(path).expanduser().absolute()
        self.engine.call(
            self.app,
            "export",
            lambda c: write_csv(c, src, target, base, page),
            lambda res: ExportDone(*res),
            group="export",
            exclusive=False,
        )

    def done(self, event: ExportDone) -> None:
        self.exports.append((event.path, event.rows))
        self.app.notify(f"wrote {event.rows} rows to {event.path}", title="export")
