"""Print tables as rich tables, CSV or JSON, and write them to files safely."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from engine.core.errors import UserError
from engine.core.fs import atomic_replace


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def format_option(help: str = "table, csv or json."):
    """The `--format` option every printing command shares (its help may say more)."""
    return typer.Option(Format.table, "--format", help=help)


def out_option(help: str = "Write the output to this file."):
    """The `--out FILE` of a command that prints: the same text, written atomically."""
    return typer.Option(None, "--out", help=help)


FORMAT = format_option()
OUT = out_option()


# Cells a spreadsheet would run as a formula start with one of these (OWASP's list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_NOTE = (
    "CSV cells that start with =, +, -, @, a tab or a carriage return (a spreadsheet would run "
    "them as formulas) are written with a leading ' unless they are numbers."
)


def safe_cell(value):
    """A CSV cell that no spreadsheet runs as a formula: text starting with a formula character
    gets a leading `'`; numbers (and text that reads as one, like "-0.5") are kept as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_START):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def rows_to_csv(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as CSV text, every cell through `safe_cell` (see CSV_NOTE)."""
    columns = columns or (list(rows[0]) if rows else [])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows({k: safe_cell(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_rows(rows: list[dict], title: str | None = None, columns: list[str] | None = None):
    columns = columns or (list(rows[0]) if rows else [])
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(_fmt(r.get(c, "")) for c in columns))
    Console().print(t)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a whole file or nothing (engine.core.fs.atomic_replace), with one-line errors."""
    p = Path(path)
    if not p.parent.is_dir():
        raise UserError(
            f"cannot write {str(p)!r}: folder {str(p.parent)!r} does not exist; create it first"
        )
    if p.is_dir():
        raise UserError(f"cannot write {str(p)!r}: it is a folder; give a file name")
    if not os.access(p.parent, os.W_OK):
        raise UserError(
            f"cannot write {str(p)!r}: folder {str(p.parent)!r} is not writable; choose another path"
        )
    mode = _target_mode(p)
    try:
        with atomic_replace(p) as tmp:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as e:  # read-only file system, or a permission os.access did not see
                raise UserError(
                    f"cannot write {str(p)!r}: {_reason(e)}; choose another path"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, mode)  # the replaced file's mode (a new one: what open() would give)
    except OSError as e:  # a full disk, mostly: the old file (if any) is kept as it was
        raise UserError(
            f"cannot write {str(p)!r}: {_reason(e)}; nothing was written, free space or "
            "choose another path"
        ) from None


def _target_mode(p: Path) -> int:
    """The mode the written file gets: the existing target's, after refusing targets that must
    not be replaced (a symlink, a FIFO, socket or device, a read-only file)."""
    try:
        st = p.lstat()
    except FileNotFoundError:
        return 0o666 & ~_umask()
    if stat.S_ISLNK(st.st_mode):
        raise UserError(f"cannot write {str(p)!r}: it is a symlink; give the real file's path")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise UserError(f"cannot write {str(p)!r}: it is {kind}, not a regular file")
    if not st.st_mode & 0o200 or not os.access(p, os.W_OK):
        raise UserError(
            f"cannot write {str(p)!r}: the file is read-only; make it writable or choose another "
            "path"
        )
    return stat.S_IMODE(st.st_mode)


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _reason(e: OSError) -> str:
    """An OSError's reason without its paths: "No space left on device"."""
    return (e.strerror or str(e) or type(e).__name__).splitlines()[0]


def emit(text: str, out: str | None) -> None:
    if out:
        write_text_atomic(out, text)
    else:
        sys.stdout.write(text)


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def progress_bar(label: str):
    """(callback(done, total), stop()) drawing a rich bar on a terminal's stderr, else silent."""
    if not sys.stderr.isatty():
        return (lambda done, total: None), (lambda: None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(label, total=None)
    bar.start()

    def on(done: int, total: int):
        bar.update(task, completed=done, total=total)

    return on, bar.stop
