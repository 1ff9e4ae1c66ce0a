"""The engine's HTTP endpoints: what each answers, and how errors become JSON responses.

Every endpoint is described, with a curl example, in docs/engine-api.md; `engine.service.server`
assembles them into the app and runs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from engine import __version__
from engine.core import limits
from engine.core.errors import UserError, one_line
from engine.service import tables
from engine.service.kinds import JOB_KINDS, get_kind
from engine.service.records import TERMINAL
from engine.service.scheduler import Conflict

log = logging.getLogger("engine.service.server")

KEEPALIVE_S = 15.0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int_arg(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"query parameter {name!r} must be an integer (got {raw!r})") from None


def _job_or_404(request: Request) -> dict:
    job_id = request.path_params["job_id"]
    if job_id > limits.MAX_JOB_ID:  # SQLite cannot even look it up
        raise HTTPException(404, f"no job {limits.shown(job_id)}")
    rec = request.app.state.scheduler.get(job_id)
    if rec is None:
        raise HTTPException(404, f"no job {job_id}")
    return rec


async def _json_body(request: Request) -> dict:
    """The request's JSON object, read up to limits.MAX_BODY_BYTES (413 past it) and refused
    when nested deeper than limits.MAX_JSON_DEPTH (checked before parsing)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.MAX_BODY_BYTES:
            raise HTTPException(
                413, f"request body is over the limit of {limits.MAX_BODY_BYTES:,} bytes"
            )
    depth = json_depth(bytes(raw))
    if depth > limits.MAX_JSON_DEPTH:
        raise UserError(
            f"request body is nested {depth} deep, over the limit of {limits.MAX_JSON_DEPTH}"
        )
    try:
        body = json.loads(bytes(raw) or b"{}")
    except ValueError:
        raise UserError("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise UserError("request body must be a JSON object")
    return body


def json_depth(raw: bytes) -> int:
    """The deepest nesting of [ and { in JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    in_str = escaped = False
    for b in raw:
        if in_str:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:  # quote
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


async def health(request: Request) -> JSONResponse:
    st = request.app.state
    return JSONResponse(
        {
            "version": __version__,
            "state": "stopping" if st.scheduler.stopping else "ready",
            "pid": os.getpid(),
            "cache": str(st.cache),
            "socket": st.socket,
            "started": st.started,
            "device": getattr(st, "device", None),  # what jobs' device=auto resolves to
            "idle_exit_s": st.idle_exit_s,
            # other requests open right now (event streams of watching clients), not this one
            "clients": max(st.activity.in_flight - 1, 0),
            **st.scheduler.counts(),
        }
    )


async def shutdown(request: Request) -> JSONResponse:
    """Stop the engine gracefully: running jobs are terminated and recorded as interrupted
    (resumable kinds can be resumed), queued jobs stay queued for the next engine."""
    st = request.app.state
    server = getattr(st, "server", None)
    if server is None:
        raise Conflict("this engine was not started by `serve`; it cannot stop itself")
    running = [j["id"] for j in st.scheduler.all() if j["state"] == "running"]
    log.info("stop requested: interrupting jobs %s", running or "none")
    server.should_exit = True
    return JSONResponse({"pid": os.getpid(), "stopping": True, "interrupting": running})


async def kinds(request: Request) -> JSONResponse:
    return JSONResponse({"kinds": [k.describe(n) for n, k in sorted(JOB_KINDS.items())]})


async def list_jobs(request: Request) -> JSONResponse:
    jobs = request.app.state.scheduler.all()
    state = request.query_params.get("state")
    if state:
        jobs = [j for j in jobs if j["state"] == state]
    limit = _int_arg(request, "limit", 0)
    if limit > 0:
        jobs = jobs[-limit:]
    return JSONResponse({"jobs": jobs})


async def submit_job(request: Request) -> JSONResponse:
    body = await _json_body(request)
    unknown = set(body) - {"kind", "params", "cwd"}
    if unknown:
        raise UserError(f"unknown field {sorted(unknown)[0]!r}; send kind, params and cwd")
    kind = get_kind(body.get("kind"))
    cwd = body.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not os.path.isabs(cwd)):
        raise UserError("cwd must be an absolute path (the client's working directory)")
    params = body.get("params") or {}
    params = await run_in_threadpool(kind.check, params, cwd)
    rec = request.app.state.scheduler.submit(body["kind"], params)
    return JSONResponse(rec, status_code=201)


async def get_job(request: Request) -> JSONResponse:
    return JSONResponse(_job_or_404(request))


async def cancel_job(request: Request) -> JSONResponse:
    _job_or_404(request)
    return JSONResponse(request.app.state.scheduler.cancel(request.path_params["job_id"]))


async def resume_job(request: Request) -> JSONResponse:
    rec = _job_or_404(request)
    kind = get_kind(rec["kind"])
    if not kind.resumable:
        raise Conflict(f"jobs of kind {rec['kind']!r} cannot be resumed; submit a new one")
    if rec["state"] not in ("interrupted", "cancelled", "failed"):
        raise Conflict(f"job {rec['id']} is {rec['state']}; only a stopped job can be resumed")
    params = await run_in_threadpool(kind.check, {**rec["params"], "resume": True}, None)
    new = request.app.state.scheduler.submit(rec["kind"], params, resumed_from=rec["id"])
    return JSONResponse(new, status_code=201)


def tail_lines(path: str | None, n: int, block: int = 1 << 16) -> list[str]:
    """The last n lines of a file, read from its end (a long training log costs nothing)."""
    if not path or n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            pos, data = f.tell(), b""
            while pos > 0 and data.count(b"\n") <= n:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-n:]


async def job_logs(request: Request) -> JSONResponse:
    rec = _job_or_404(request)
    n = min(max(_int_arg(request, "tail", 100), 0), 100_000)
    return JSONResponse(
        {"id": rec["id"], "lines": await run_in_threadpool(tail_lines, rec["log"], n)}
    )


async def job_events(request: Request) -> StreamingResponse:
    """Server-sent events: `event: job` with the whole record on every change, a comment line
    every 15 s to keep idle connections open, and the end of the stream when the job ends.
    A client that goes away only ends its own stream; the job is a separate process."""
    _job_or_404(request)
    job_id = request.path_params["job_id"]
    st = request.app.state

    async def stream():
        last, quiet = None, 0.0
        while True:
            tick = st.scheduler.tick  # taken before reading, so no change can slip between
            rec = st.scheduler.get(job_id)
            if rec != last:
                yield f"event: job\ndata: {json.dumps(rec)}\n\n"
                last, quiet = rec, 0.0
            if rec["state"] in TERMINAL or st.scheduler.stopping or _exiting(st):
                return
            try:
                await asyncio.wait_for(tick.wait(), timeout=1.0)
            except TimeoutError:
                quiet += 1.0
                if quiet >= KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    quiet = 0.0

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _exiting(state) -> bool:
    server = getattr(state, "server", None)
    return bool(server is not None and server.should_exit)


async def list_tables(request: Request) -> JSONResponse:
    return JSONResponse({"tables": sorted(tables.TABLES)})


_TABLE_ARGS = {"sort", "desc", "filter", "offset", "limit"}


async def get_table(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    fn = tables.get_table(name)
    if fn is None:
        raise HTTPException(404, f"no table {name!r}; tables: {', '.join(sorted(tables.TABLES))}")
    q = request.query_params
    params = {k: v for k, v in q.items() if k not in _TABLE_ARGS}
    desc = q.get("desc", "0").lower() in ("1", "true", "yes")
    offset, limit = _int_arg(request, "offset", 0), _int_arg(request, "limit", 100)

    def run():
        columns, rows = tables.compute(name, fn, params)
        return tables.query(
            columns, rows, q.get("sort") or None, desc, q.get("filter"), offset, limit
        )

    return JSONResponse(await run_in_threadpool(run))


async def checkpoints(request: Request) -> JSONResponse:
    return JSONResponse({"checkpoints": await run_in_threadpool(tables.list_checkpoints)})


async def _on_user_error(request, exc):
    return _error(400, one_line(exc))


async def _on_conflict(request, exc):
    return _error(409, str(exc))


async def _on_http(request, exc: HTTPException):
    return _error(exc.status_code, str(exc.detail))


async def _on_crash(request, exc):
    # starlette re-raises after answering, so uvicorn logs the traceback to the engine log
    first = (str(exc).splitlines() or [""])[0][:300]
    return _error(500, f"internal error: {type(exc).__name__}: {first}")


def _register_job_id() -> None:
    """{job_id:int} matches at most 19 digits: longer ids are simply no route (404), never an
    int() of thousands of digits (which Python refuses) nor an SQLite overflow."""
    from starlette.convertors import CONVERTOR_TYPES, IntegerConvertor

    class JobId(IntegerConvertor):
        regex = "[0-9]{1,19}"

    if not isinstance(CONVERTOR_TYPES.get("int"), JobId):
        CONVERTOR_TYPES["int"] = JobId()


def routes() -> list[Route]:
    """The app's routes, built after the job-id convertor is in place (a Route fixes its
    convertors when it is made)."""
    _register_job_id()
    return [
        Route("/health", health),
        Route("/kinds", kinds),
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs", submit_job, methods=["POST"]),
        Route("/jobs/{job_id:int}", get_job),
        Route("/jobs/{job_id:int}/cancel", cancel_job, methods=["POST"]),
        Route("/jobs/{job_id:int}/resume", resume_job, methods=["POST"]),
        Route("/jobs/{job_id:int}/logs", job_logs),
        Route("/jobs/{job_id:int}/events", job_events),
        Route("/tables", list_tables),
        Route("/tables/{name}", get_table),
        Route("/checkpoints", checkpoints),
        Route("/shutdown", shutdown, methods=["POST"]),
    ]


EXCEPTION_HANDLERS = {
    UserError: _on_user_error,
    Conflict: _on_conflict,
    HTTPException: _on_http,
    Exception: _on_crash,
}
