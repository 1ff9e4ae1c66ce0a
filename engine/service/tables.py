"""Tables the engine serves, with sort, filter and paging done here so a client of a 100k-row
table receives only the page it shows.

A table is a function `(params) -> (columns, rows)`; params are the request's extra query
parameters (strings). Register one with a line in TABLES (or `TABLES["name"] = fn` from the
module that owns the data). Functions raise UserError for bad params, and must take any
path they read through `engine.core.roots.resolve`.

Filter syntax: whitespace-separated terms, all of which must hold. `col=value` and
`col!=value` compare numbers as numbers and text case-insensitively; `col>x`, `col>=x`,
`col<x`, `col<=x` compare numbers; `col~text` tests that the cell contains text; any other
term must be a case-insensitive substring of some cell. Quote a term with spaces:
`"red circle" layer>=3`. An unknown column or a non-numeric bound is a UserError.
"""

from __future__ import annotations

import math
import operator
import re
import shlex
import threading
from collections.abc import Callable
from pathlib import Path

from engine.core import roots
from engine.core.errors import UserError

Table = Callable[[dict], tuple[list[str], list[list]]]

MAX_LIMIT = 100_000

# --- built-in tables ------------------------------------------------------------------------


def curves_table(params: dict) -> tuple[list[str], list[list]]:
    """Training curves: one row per checkpoint of a run, from its metrics.jsonl."""
    from engine.train.curves import COLUMNS, curve_rows, read_curves

    if "run" not in params:
        raise UserError("table 'curves' needs run=RUN (a training run folder)")
    return list(COLUMNS), curve_rows(read_curves(roots.resolve(params["run"], "run")))


def _lazy(target: str) -> Table:
    """A table whose module is imported on first request (keeps the engine's start cheap)."""

    def table(params: dict):
        import importlib

        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)(params)

    return table


TABLES: dict[str, Table] = {
    "curves": curves_table,
    "ablations": _lazy("engine.ops.intervene:ablations_table"),
    "sweep": _lazy("engine.ops.intervene:sweep_table"),
    "sweeps": _lazy("engine.ops.intervene:sweeps_table"),
    "heads": _lazy("engine.ops.probe:heads_table"),
    "head_map": _lazy("engine.ops.probe:head_map_table"),
    "head_detail": _lazy("engine.ops.probe:head_detail_table"),
    "sample_images": _lazy("engine.ops.probe:sample_images_table"),
    "screening": _lazy("engine.probe.screening:screening_table"),
    "screen_map": _lazy("engine.probe.screening:screen_map_table"),
    "emergence": _lazy("engine.ops.emergence:emergence_table"),
    # "jobs" is registered by the engine server, which owns the job records.
}


# --- query: filter, sort, page --------------------------------------------------------------
# The TUI keeps a client-side copy of these semantics (workbench/components/rowfilter.py) for
# rows it already holds; the two must agree.

_TERM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(>=|<=|!=|=|>|<|~)(.*)$")
_ORDER = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _num(v) -> float | None:
    if isinstance(v, bool | int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def cell_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _compare(cell, op: str, want: str) -> bool:
    if op == "~":
        return want.lower() in cell_text(cell).lower()
    a, b = _num(cell), _num(want)
    if op in ("=", "!="):
        if a is not None and b is not None:
            eq = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        else:
            eq = cell_text(cell).lower() == want.lower()
        return eq if op == "=" else not eq
    return a is not None and b is not None and _ORDER[op](a, b)


def parse_filter(text: str | None, columns: list[str]) -> list[tuple[int | None, str, str]]:
    """Terms as (column index, or None for any cell, op, value); UserError if unreadable."""
    if not text or not text.strip():
        return []
    try:
        parts = shlex.split(text)
    except ValueError as e:
        raise UserError(f"cannot read filter {text!r}: {e}; close the quote") from None
    terms = []
    for part in parts:
        m = _TERM.match(part)
        if not m:
            terms.append((None, "~", part))
            continue
        col, op, val = m.groups()
        if col not in columns:
            raise UserError(f"unknown column {col!r} in filter; columns are: {', '.join(columns)}")
        if op in _ORDER and _num(val) is None:
            raise UserError(f"{part!r}: {op} needs a number, e.g. {col}{op}0.5")
        terms.append((columns.index(col), op, val))
    return terms


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def query(
    columns: list[str],
    rows: list[list],
    sort: str | None = None,
    desc: bool = False,
    filter: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> dict:
    """{"columns", "rows" (one page), "total" (rows after filtering)}; a stable sort, with
    missing cells (None, NaN) last either way."""
    if offset < 0 or not 0 < limit <= MAX_LIMIT:
        raise UserError(f"offset must be >= 0 and limit in 1..{MAX_LIMIT}")
    columns = list(columns)
    terms = parse_filter(filter, columns)
    if terms:

        def keep(row) -> bool:
            for i, op, val in terms:
                if i is None:
                    if not any(val.lower() in cell_text(c).lower() for c in row):
                        return False
                elif not _compare(row[i], op, val):
                    return False
            return True

        rows = [r for r in rows if keep(r)]
    if sort:
        if sort not in columns:
            raise UserError(f"cannot sort by {sort!r}; columns are: {', '.join(columns)}")
        i = columns.index(sort)

        def key(r):
            v = r[i]
            n = _num(v) if not isinstance(v, str) else None
            return (0, n, "") if n is not None else (1, 0.0, cell_text(v).lower())

        present = sorted((r for r in rows if not _missing(r[i])), key=key, reverse=desc)
        rows = present + [r for r in rows if _missing(r[i])]
    return {"columns": columns, "rows": rows[offset : offset + limit], "total": len(rows)}


def get_table(name: str) -> Table | None:
    return TABLES.get(name)


# --- memo: polling clients ask for the same table again and again ------------------------------
# Rebuilding a heads table reads and ranks the whole synopsis (~0.3 s on 2 cores); eight polling
# workbenches would keep a core busy and starve the jobs. A table is a pure function of its
# params and the files it reads, so its rows are kept until a cache file or the named
# checkpoint's metadata changes (every store write replaces the file: new inode and mtime).
# Tables fed by other sources (job records, metrics.jsonl of a live run) are never kept.

_UNKEPT = {"jobs", "curves"}
_MEMO: dict[tuple, tuple[list[str], list[list]]] = {}
_MEMO_MAX = 64
_memo_lock = threading.Lock()


def _generation(params: dict) -> tuple | None:
    """What the table's inputs look like on disk now; None when it cannot be told."""
    from engine.store.cache import SHIPPED

    try:
        files = [*Path(roots.cache_dir()).glob("*.h5")]
        ck = params.get("checkpoint")
        if ck:
            folder = roots.resolve(ck, "checkpoint")
            files.append(folder / "workbench.json")
            if (folder / SHIPPED).is_file():
                files.append(folder / SHIPPED)
        return tuple(sorted((str(f), *_stamp(f)) for f in files))
    except (OSError, UserError):
        return None  # let the table itself say what is wrong


def _stamp(f: Path) -> tuple[int, int, int]:
    st = f.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def compute(name: str, fn: Table, params: dict) -> tuple[list[str], list[list]]:
    """fn(params), reused while its inputs are unchanged on disk."""
    gen = None if name in _UNKEPT else _generation(params)
    if gen is None:
        return fn(params)
    key = (name, tuple(sorted(params.items())), gen)
    with _memo_lock:
        hit = _MEMO.get(key)
    if hit is not None:
        return hit
    out = fn(params)
    with _memo_lock:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.pop(next(iter(_MEMO)))  # oldest first: dicts keep insertion order
        _MEMO[key] = out
    return out


def _in_roots(real: Path) -> bool:
    """A resolved path inside the cache or a checkpoint root (engine.core.roots)."""
    return any(real == r or r in real.parents for r in roots.allowed())


def list_checkpoints() -> list[dict]:
    """Checkpoints and training runs (their `latest`) up to two levels under each root: name,
    root, kind (run or checkpoint), path, describe()'s fields, hash (full sha256 of the
    weights), run (folder with metrics.jsonl, or None); or name, path and error."""
    from engine.model.checkpoint import describe, read_meta

    found, seen = [], set()

    def visit(d: Path, root: Path, depth: int):
        is_ckpt = (d / "workbench.json").is_file()
        is_run = not is_ckpt and (d / "latest").exists()
        if is_ckpt or is_run:
            real = d.resolve()
            if real in seen or not _in_roots(real):
                return  # a symlink out of the roots is never listed nor read
            if is_run and not _in_roots((d / "latest").resolve()):
                return
            seen.add(real)
            entry = {
                "name": str(d.relative_to(root)) if d != root else d.name,
                "root": str(root),
                "kind": "run" if is_run else "checkpoint",
            }
            try:
                info = describe(d)
                _, meta = read_meta(d)
                info["hash"] = meta["hashes"]["transformer"]
                if is_run:  # name the run folder (it follows `latest`), and say which step
                    info["latest"], info["path"] = info["path"], str(d)
                # the training run whose curves belong to it (GET /tables/curves?run=...)
                owner = d if is_run or (d / "metrics.jsonl").is_file() else d.parent
                info["run"] = str(owner) if (owner / "metrics.jsonl").is_file() else None
                entry.update(info)
            except UserError as e:
                entry.update(path=str(d), error=str(e))
            found.append(entry)
            return
        if depth < 2:
            try:
                children = sorted(
                    p
                    for p in d.iterdir()
                    if p.is_dir() and not p.name.startswith(".") and _in_roots(p.resolve())
                )
            except OSError:
                return
            for c in children:
                visit(c, root, depth + 1)

    defaults = []
    for root in roots.checkpoint_roots():
        if root.is_dir():
            visit(root, root, 0)
            defaults.append(_default_name(root))
    # the workbench opens the first entry: a root's DEFAULT file names the one to put first
    return sorted(found, key=lambda e: e["name"] not in defaults)


DEFAULT_FILE = "DEFAULT"  # one line in a checkpoint root: the checkpoint listed (and opened) first


def _default_name(root: Path) -> str | None:
    try:
        with open(root / DEFAULT_FILE, encoding="utf-8") as fh:
            return fh.read(200).strip() or None
    except (OSError, UnicodeDecodeError):
        return None
