"""Job records in SQLite (`<cache>/jobs.sqlite`): the history survives engine restarts.

SQLite commits are atomic, so killing the engine mid-write keeps every earlier record.
One connection, guarded by a lock: the event loop and table threads both read it.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from pathlib import Path

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
TERMINAL = frozenset({"done", "failed", "cancelled", "interrupted"})
FIELDS = (
    "id",
    "kind",
    "params",
    "state",
    "progress",
    "phase",
    "eta_s",
    "created",
    "started",
    "ended",
    "result",
    "error",
    "log",
    "pid",
    "resumed_from",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    phase TEXT,
    eta_s REAL,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    result TEXT,
    error TEXT,
    log TEXT,
    pid INTEGER,
    resumed_from INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""


def finite(obj):
    """`obj` with every NaN or infinity replaced by None: JSON cannot carry them, and a record
    that holds one (stored by an older engine, or a result that came out NaN) must still be
    served. Applied to every record read and every value written."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def _dumps(obj) -> str:
    return json.dumps(finite(obj), default=str, allow_nan=False)


def _loads(text: str | None):
    if not text:
        return None
    try:
        return finite(json.loads(text))
    except (ValueError, RecursionError):  # damaged by hand: serve the record, not a 500
        return {"unreadable": text[:200]}


def _row(r: sqlite3.Row) -> dict:
    d = finite({k: r[k] for k in FIELDS})
    d["params"] = _loads(d["params"]) or {}
    d["result"] = _loads(d["result"])
    return d


class JobRecords:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, kind: str, params: dict, resumed_from: int | None = None) -> dict:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO jobs (kind, params, state, created, resumed_from) VALUES (?,?,?,?,?)",
                (kind, _dumps(params), "queued", time.time(), resumed_from),
            )
            job_id = cur.lastrowid
        return self.get(job_id)

    def update(self, job_id: int, **values) -> None:
        bad = set(values) - set(FIELDS[2:])
        assert not bad, bad
        if "result" in values and values["result"] is not None:
            values["result"] = _dumps(values["result"])
        values = {k: finite(v) if isinstance(v, float) else v for k, v in values.items()}
        if "progress" in values and values["progress"] is None:
            values["progress"] = 0.0  # NOT NULL (SQLite stores a NaN as NULL)
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))

    def get(self, job_id: int) -> dict | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row(r) if r else None

    def all(self, state: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM jobs", ()
        if state:
            q, args = q + " WHERE state = ?", (state,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [_row(r) for r in rows]

    def mark_interrupted(self, resumable_kinds=()) -> list[dict]:
        """Jobs a previous engine left running: their worker died with it."""
        running = self.all("running")
        now = time.time()
        for j in running:
            self.update(
                j["id"],
                state="interrupted",
                ended=now,
                eta_s=None,
                error="the engine stopped while this job ran"
                + ("; resume it to continue" if j["kind"] in resumable_kinds else ""),
            )
        return running
