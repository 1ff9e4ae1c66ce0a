"""Tables the engine serves, with sort, filter and paging done here so a client of a 100k-row
table receives only the page it shows.

A table is a function `(params) -> (columns, rows)`; params are the request's extra query
parameters (strings). Register one with a line in TABLES (or `TABLES["name"] = fn` from the
module that owns the data). Functions raise UserError for bad params, and must take any
path they read through `engine.core.roots.resolve`.

Filter and sort syntax: engine.core.rowfilter (an unknown column or a non-numeric bound is
a UserError).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from engine.core import roots
from engine.core.errors import UserError
from engine.core.rowfilter import filter_rows, sort_rows

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
    "ablations": _lazy("engine.service.intervene_tables:ablations_table"),
    "sweep": _lazy("engine.service.intervene_tables:sweep_table"),
    "sweeps": _lazy("engine.service.intervene_tables:sweeps_table"),
    "heads": _lazy("engine.service.probe_tables:heads_table"),
    "head_map": _lazy("engine.service.probe_tables:head_map_table"),
    "head_detail": _lazy("engine.service.probe_tables:head_detail_table"),
    "sample_images": _lazy("engine.service.probe_tables:sample_images_table"),
    "screening": _lazy("engine.service.probe_tables:screening_table"),
    "screen_map": _lazy("engine.service.probe_tables:screen_map_table"),
    "emergence": _lazy("engine.service.probe_tables:emergence_table"),
    # "jobs" is registered by the engine server, which owns the job records.
}


# --- query: filter, sort, page --------------------------------------------------------------
# The filter and sort language is engine.core.rowfilter, shared with the TUI (rows it holds).


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
    rows = sort_rows(filter_rows(rows, columns, filter), columns, sort, desc)
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
    weights), run (folder with metrics.jsonl, or None), results (stored runs per kind); or
    name, path and error."""
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
                info["results"] = _stored_runs(d)
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


def _stored_runs(checkpoint: Path) -> dict[str, list[str]]:
    """{kind: run names} in the checkpoint's cache (the user's over the shipped one); an
    unreadable cache file lists nothing rather than hiding the checkpoint."""
    from engine.core.columns import RESULT_KINDS
    from engine.model.checkpoint import store_for_path

    try:
        store = store_for_path(checkpoint, roots.cache_dir())
        return {kind: store.runs(kind) for kind in RESULT_KINDS}
    except (UserError, OSError):
        return {kind: [] for kind in RESULT_KINDS}


DEFAULT_FILE = "DEFAULT"  # one line in a checkpoint root: the checkpoint listed (and opened) first


def _default_name(root: Path) -> str | None:
    try:
        with open(root / DEFAULT_FILE, encoding="utf-8") as fh:
            return fh.read(200).strip() or None
    except (OSError, UnicodeDecodeError):
        return None
