"""The engine daemon: HTTP + JSON over a Unix socket (starlette app, uvicorn server).

It owns the job queue and answers table reads; the TUI and the CLI reach it only through
`engine.service.client`. Run it with `dit-workbench serve` or `python -m engine.service.server`. Every endpoint
is described, with a curl example, in docs/engine-api.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from engine import __version__
from engine.core import limits, roots
from engine.core.errors import UserError, one_line
from engine.service import daemon, tables
from engine.service.kinds import JOB_KINDS, get_kind
from engine.service.records import TERMINAL, JobRecords
from engine.service.scheduler import Conflict, Scheduler

log = logging.getLogger("engine.service.server")

KEEPALIVE_S = 15.0
# An engine with no running or queued job, no open request (an event stream counts) and no
# request for this long exits by itself; 0 keeps it running. `--idle-exit` or this variable.
IDLE_EXIT_ENV = "DIT_WORKBENCH_ENGINE_IDLE_EXIT"
IDLE_EXIT_S = 600.0
JOB_COLUMNS = [
    "id",
    "kind",
    "state",
    "progress",
    "phase",
    "eta_s",
    "created",
    "started",
    "ended",
    "error",
]


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


# --- endpoints ------------------------------------------------------------------------------


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
    return JSONResponse(
        {
            "kinds": [
                {"name": n, "heavy": k.heavy, "resumable": k.resumable, "help": k.help}
                for n, k in sorted(JOB_KINDS.items())
            ]
        }
    )


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


# --- errors, auth, app ----------------------------------------------------------------------


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


class TokenGate:
    """Requests that arrive over TCP must carry `Authorization: Bearer <token>`; Unix socket
    requests are already limited to this user by the socket's permissions. Plain ASGI (not
    BaseHTTPMiddleware) so event streams pass through untouched."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.token is not None and _over_tcp(scope):
            sent = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(sent, f"Bearer {self.token}"):
                await _error(401, "missing or wrong bearer token (see <cache>/run/token)")(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def _over_tcp(scope) -> bool:
    server = scope.get("server")
    # uvicorn gives (path, None) for a Unix socket; anything else counts as network.
    return not (isinstance(server, tuple | list) and len(server) == 2 and server[1] is None)


class Activity:
    """Open requests and when the last one began or ended (for the idle exit)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last = time.monotonic()


class ActivityGate:
    """Plain ASGI (event streams pass through untouched): keeps an `Activity` up to date."""

    def __init__(self, app, activity: Activity):
        self.app, self.activity = app, activity

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        a = self.activity
        a.in_flight += 1
        a.last = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            a.in_flight -= 1
            a.last = time.monotonic()


def idle_exit_default() -> float:
    raw = os.environ.get(IDLE_EXIT_ENV)
    if raw is None or not raw.strip():
        return IDLE_EXIT_S
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{IDLE_EXIT_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise UserError(f"{IDLE_EXIT_ENV} must be 0 (never) or a number of seconds")
    return value


async def _exit_when_idle(state) -> None:
    """Ask uvicorn to stop once no job runs or waits and no client asked anything for
    `idle_exit_s` seconds (a workbench polls every second or two, so an open one keeps it)."""
    idle_s = state.idle_exit_s
    while True:
        await asyncio.sleep(min(max(idle_s / 4, 0.05), 5.0))
        server = getattr(state, "server", None)
        if server is None or server.should_exit:
            continue
        counts = state.scheduler.counts()
        if counts["jobs_running"] or counts["jobs_queued"] or state.activity.in_flight:
            continue
        quiet = time.monotonic() - state.activity.last
        if quiet >= idle_s:
            log.info("no jobs and no clients for %.0f s: exiting (--idle-exit)", quiet)
            server.should_exit = True
            return


def _register_jobs_table(scheduler: Scheduler) -> None:
    def jobs_table(params: dict):
        return list(JOB_COLUMNS), [[j[c] for c in JOB_COLUMNS] for j in scheduler.all()]

    tables.TABLES["jobs"] = jobs_table


def _probe_device(state) -> None:
    """Find what `device: auto` resolves to in a child process (importing torch, and CUDA
    with it, would cost the server seconds and memory), in the background: /health says
    null until it is known."""
    import subprocess
    import threading

    def probe():
        try:
            r = subprocess.run(
                [sys.executable, "-m", "engine.core.device"],
                capture_output=True,
                text=True,
                timeout=300,
            )
            state.device = (
                json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
            )
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            state.device = None

    threading.Thread(target=probe, name="device-probe", daemon=True).start()


def _register_job_id() -> None:
    """{job_id:int} matches at most 19 digits: longer ids are simply no route (404), never an
    int() of thousands of digits (which Python refuses) nor an SQLite overflow."""
    from starlette.convertors import CONVERTOR_TYPES, IntegerConvertor

    class JobId(IntegerConvertor):
        regex = "[0-9]{1,19}"

    if not isinstance(CONVERTOR_TYPES.get("int"), JobId):
        CONVERTOR_TYPES["int"] = JobId()


def create_app(
    cache: str | os.PathLike,
    socket: str | None = None,
    token: str | None = None,
    max_heavy: int = 1,
    max_light: int = 4,
    grace_s: float = 10.0,
    idle_exit_s: float = 0.0,
) -> Starlette:
    cache = Path(cache).resolve()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        records = JobRecords(cache / "jobs.sqlite")
        sched = Scheduler(records, cache / "jobs", max_heavy, max_light, grace_s)
        app.state.scheduler = sched
        _register_jobs_table(sched)
        await sched.start()
        idle = asyncio.create_task(_exit_when_idle(app.state)) if idle_exit_s > 0 else None
        try:
            yield
        finally:
            if idle is not None:
                idle.cancel()
            await sched.shutdown()
            records.close()

    _register_job_id()
    routes = [
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
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            UserError: _on_user_error,
            Conflict: _on_conflict,
            HTTPException: _on_http,
            Exception: _on_crash,
        },
    )
    app.state.cache, app.state.socket, app.state.started = cache, socket, time.time()
    app.state.idle_exit_s = idle_exit_s
    app.state.activity = Activity()
    app.add_middleware(TokenGate, token=token)
    app.add_middleware(ActivityGate, activity=app.state.activity)
    return app


def serve(
    cache: str | os.PathLike = "cache",
    socket_path: str | os.PathLike | None = None,
    checkpoint_roots: list[str] | None = None,
    tcp: str | None = None,
    max_heavy: int = 1,
    max_light: int = 4,
    log_level: str = "info",
    idle_exit_s: float | None = None,
) -> None:
    """Run the engine in this process until SIGINT/SIGTERM. Raises UserError if another engine
    holds the cache dir or the socket, before touching anything."""
    import uvicorn

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cache = Path(cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    if max_heavy < 1 or max_light < 1:
        raise UserError("--max-heavy and --max-light must be at least 1")
    if idle_exit_s is None:
        idle_exit_s = idle_exit_default()
    if idle_exit_s < 0:
        raise UserError("--idle-exit must be 0 (never) or a number of seconds")
    host_port = daemon.parse_tcp(tcp) if tcp else None
    for r in checkpoint_roots or []:
        if not Path(r).is_dir():
            raise UserError(f"--checkpoints {r!r} is not a folder")
    lock_fd = daemon.acquire_lock(cache)
    sock_path = Path(socket_path).absolute() if socket_path else daemon.default_socket(cache)
    listeners = [daemon.bind_unix(sock_path)]
    sock_ino = sock_path.stat().st_ino
    token = None
    try:
        if host_port:
            token = daemon.ensure_token(cache)
            listeners.append(daemon.bind_tcp(*host_port))
        roots.configure(cache, checkpoint_roots or None)
        app = create_app(
            cache, str(sock_path), token, max_heavy, max_light, idle_exit_s=idle_exit_s
        )
        config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            loop="asyncio",
            http="h11",
        )
        server = uvicorn.Server(config)
        app.state.server = server
        _probe_device(app.state)
        daemon.write_info(
            cache,
            {
                "pid": os.getpid(),
                "socket": str(sock_path),
                "tcp": f"{host_port[0]}:{host_port[1]}" if host_port else None,
                "version": __version__,
                "started": time.time(),
            },
        )
        log.info(
            "engine %s: cache %s, socket %s%s",
            __version__,
            cache,
            sock_path,
            f", tcp {tcp} (token in {daemon.token_path(cache)})" if tcp else "",
        )
        # uvicorn re-raises the signal that stopped it once it is done; with these no-op
        # handlers in place that returns here, so the cleanup below still runs.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        server.run(sockets=listeners)
    finally:
        for s in listeners:
            s.close()
        with contextlib.suppress(OSError):  # only our own socket: never one a successor bound
            if sock_path.stat().st_ino == sock_ino:
                sock_path.unlink()
        with contextlib.suppress(OSError):
            info = daemon.read_info(cache)
            if info and info.get("pid") == os.getpid():
                (daemon.run_dir(cache) / "engine.json").unlink()
        os.close(lock_fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m engine.service.server", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--cache", default="cache", help="cache dir (job records, socket): ./cache")
    ap.add_argument("--socket", default=None, help="Unix socket path: <cache>/run/engine.sock")
    ap.add_argument(
        "--checkpoints",
        action="append",
        default=None,
        help="folder of checkpoints and training runs (repeatable): ./checkpoints and ./runs",
    )
    ap.add_argument("--tcp", default=None, help="also listen on loopback HOST:PORT (token needed)")
    ap.add_argument("--max-heavy", type=int, default=1, help="accelerator jobs at once")
    ap.add_argument("--max-light", type=int, default=4, help="CPU jobs at once")
    ap.add_argument("--log-level", default="info")
    ap.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        help=f"exit after this many seconds with no jobs and no clients; 0 never "
        f"(default ${IDLE_EXIT_ENV} or {IDLE_EXIT_S:.0f})",
    )
    a = ap.parse_args(argv)
    try:
        serve(
            a.cache,
            a.socket,
            a.checkpoints,
            a.tcp,
            a.max_heavy,
            a.max_light,
            a.log_level,
            idle_exit_s=a.idle_exit,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
