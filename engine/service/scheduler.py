"""The job queue: starts workers, records their progress, cancels them.

Accelerator-heavy kinds run `max_heavy` at a time (one by default) in submission order; light
kinds (CPU work such as evaluation) run up to `max_light` at once beside them. Each job is a
`python -m engine.service.worker` process in a session of its own: cancel terminates its process group
(SIGTERM, then SIGKILL after `grace_s`), which frees whatever GPU memory it held.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.service.kinds import JOB_KINDS
from engine.service.records import TERMINAL, JobRecords

log = logging.getLogger("engine.service.scheduler")

_LINE_LIMIT = 16 << 20  # a result line may carry a sizeable dict


class Conflict(Exception):
    """The request is well formed but the job's state does not allow it (HTTP 409)."""


@dataclass
class _Live:
    rec: dict
    heavy: bool
    proc: asyncio.subprocess.Process | None = None
    cancel_requested: bool = False
    result: dict | None = None
    error: str | None = None
    flushed: float = 0.0
    tasks: list = field(default_factory=list)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_leftover_worker(pid: int | None) -> None:
    """A worker of a previous engine that has not yet noticed its engine died: kill it before
    anything resumes into the same folders. Checked by command line to never hit a reused pid."""
    if not pid:
        return
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"engine.service.worker" in cmd:
        _signal_group(pid, signal.SIGKILL)


class Scheduler:
    def __init__(
        self,
        records: JobRecords,
        jobs_dir: Path,
        max_heavy: int = 1,
        max_light: int = 4,
        grace_s: float = 10.0,
        flush_s: float = 1.0,
    ):
        self.records, self.jobs_dir = records, Path(jobs_dir)
        self.max_heavy, self.max_light = max_heavy, max_light
        self.grace_s, self.flush_s = grace_s, flush_s
        self.live: dict[int, _Live] = {}
        self.tick = asyncio.Event()  # set (and replaced) on every change; SSE streams wait on it
        self.stopping = False

    # --- reading ------------------------------------------------------------------------

    def get(self, job_id: int) -> dict | None:
        if job_id in self.live:
            return dict(self.live[job_id].rec)
        return self.records.get(job_id)

    def all(self) -> list[dict]:
        out = []
        for r in self.records.all():
            live = self.live.get(r["id"])  # also read from table threads: one lookup, no race
            out.append(dict(live.rec) if live is not None else r)
        return out

    def counts(self) -> dict:
        return {
            "jobs_running": len(self.live),
            "jobs_queued": len(self.records.all("queued")),
        }

    # --- changing -----------------------------------------------------------------------

    async def start(self) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        resumable = {k for k, v in JOB_KINDS.items() if v.resumable}
        for j in self.records.mark_interrupted(resumable):
            log.warning(
                "job %s (%s) was running when the engine stopped: interrupted", j["id"], j["kind"]
            )
            _kill_leftover_worker(j["pid"])
        self._schedule()

    def submit(self, kind: str, params: dict, resumed_from: int | None = None) -> dict:
        rec = self.records.add(kind, params, resumed_from)
        self.records.update(rec["id"], log=str(self.jobs_dir / f"{rec['id']}.log"))
        self._bump()
        self._schedule()
        return self.get(rec["id"])

    def cancel(self, job_id: int) -> dict | None:
        rec = self.get(job_id)
        if rec is None:
            return None
        if rec["state"] in TERMINAL:
            raise Conflict(f"job {job_id} is already {rec['state']}; nothing to cancel")
        if rec["state"] == "queued":
            self.records.update(
                job_id, state="cancelled", ended=time.time(), error="cancelled before it started"
            )
        else:
            live = self.live[job_id]
            if not live.cancel_requested:
                live.cancel_requested = True
                live.rec["phase"] = "cancelling"
                if live.proc is not None:
                    _signal_group(live.proc.pid, signal.SIGTERM)
                    live.tasks.append(asyncio.create_task(self._kill_later(live)))
        self._bump()
        return self.get(job_id)

    async def shutdown(self) -> None:
        """Engine stopping: running jobs are terminated and recorded as interrupted."""
        self.stopping = True
        for live in list(self.live.values()):
            if live.proc is not None:
                _signal_group(live.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + min(self.grace_s, 5.0)
        while self.live and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for live in list(self.live.values()):
            if live.proc is not None:
                _signal_group(live.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while self.live and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._bump()

    # --- internals ----------------------------------------------------------------------

    def _bump(self) -> None:
        self.tick.set()
        self.tick = asyncio.Event()

    def _schedule(self) -> None:
        if self.stopping:
            return
        heavy = sum(v.heavy for v in self.live.values())
        light = len(self.live) - heavy
        for rec in self.records.all("queued"):
            kind = JOB_KINDS.get(rec["kind"])
            if kind is None:
                self.records.update(
                    rec["id"],
                    state="failed",
                    ended=time.time(),
                    error=f"job kind {rec['kind']!r} is not known to this engine version",
                )
                self._bump()
                continue
            if kind.heavy and heavy >= self.max_heavy:
                continue  # later heavy jobs wait their turn; light ones may still start
            if not kind.heavy and light >= self.max_light:
                continue
            heavy += kind.heavy
            light += not kind.heavy
            self._launch(rec, kind.heavy)

    def _launch(self, rec: dict, heavy: bool) -> None:
        now = time.time()
        self.records.update(rec["id"], state="running", started=now, phase="starting", progress=0.0)
        rec.update(state="running", started=now, phase="starting", progress=0.0)
        live = _Live(rec=rec, heavy=heavy)
        self.live[rec["id"]] = live
        live.tasks.append(asyncio.create_task(self._run(live)))
        self._bump()

    async def _run(self, live: _Live) -> None:
        rec = live.rec
        try:
            with open(rec["log"], "ab") as logf:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                logf.write(f"--- {stamp} job {rec['id']} ({rec['kind']}) starting\n".encode())
                logf.flush()
                live.proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "engine.service.worker",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=logf,
                    start_new_session=True,  # its own process group: cancel kills all of it
                    limit=_LINE_LIMIT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            self.records.update(rec["id"], pid=live.proc.pid)
            rec["pid"] = live.proc.pid
            if live.cancel_requested or self.stopping:
                _signal_group(live.proc.pid, signal.SIGTERM)
            spec = {"id": rec["id"], "kind": rec["kind"], "params": rec["params"]}
            # stdin stays open: its end-of-file tells the worker the engine is gone.
            live.proc.stdin.write((json.dumps(spec) + "\n").encode())
            await live.proc.stdin.drain()
            while line := await live.proc.stdout.readline():
                self._on_message(live, line)
            code = await live.proc.wait()
            _signal_group(live.proc.pid, signal.SIGKILL)  # leftovers of the job's own children
        except Exception as e:  # noqa: BLE001  the engine must survive any job
            log.exception("job %s", rec["id"])
            code, live.error = None, live.error or f"engine could not run the job: {e}"
        self._finish(live, code)

    def _on_message(self, live: _Live, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("job %s: unreadable worker line %r", live.rec["id"], line[:200])
            return
        rec, kind = live.rec, msg.get("type")
        if kind == "progress":
            rec["progress"] = msg.get("fraction", rec["progress"])
            if not live.cancel_requested:
                rec["phase"] = msg.get("phase")
            rec["eta_s"] = msg.get("eta_s")
            now = time.monotonic()
            if now - live.flushed >= self.flush_s:
                live.flushed = now
                self.records.update(
                    rec["id"], progress=rec["progress"], phase=rec["phase"], eta_s=rec["eta_s"]
                )
        elif kind == "result":
            live.result = msg.get("result")
        elif kind == "error":
            live.error = msg.get("error")
        self._bump()

    def _finish(self, live: _Live, code: int | None) -> None:
        rec = live.rec
        if live.cancel_requested:
            state, error = "cancelled", "cancelled by request"
        elif self.stopping:
            state, error = "interrupted", "the engine stopped while this job ran"
        elif code == 0 and live.result is not None:
            state, error = "done", None
        elif live.error:
            state, error = "failed", live.error
        elif code is not None and code < 0:
            state = "failed"
            error = f"worker killed by signal {-code}" + (
                " (out of memory?)" if -code == signal.SIGKILL else ""
            )
        else:
            state, error = "failed", f"worker exited with code {code}; see the job log"
        values = {
            "state": state,
            "ended": time.time(),
            "error": error,
            "result": live.result if state == "done" else None,
            "eta_s": None,
            "progress": 1.0 if state == "done" else rec["progress"],
            "phase": rec["phase"] if state != "done" else "done",
        }
        self.records.update(rec["id"], **values)
        rec.update(values)
        for t in live.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        del self.live[rec["id"]]
        self._bump()
        self._schedule()

    async def _kill_later(self, live: _Live) -> None:
        await asyncio.sleep(self.grace_s)
        if live.proc is not None and live.proc.returncode is None:
            _signal_group(live.proc.pid, signal.SIGKILL)
