"""The engine daemon: HTTP + JSON over a Unix socket (starlette app, uvicorn server).

It owns the job queue and answers table reads; the TUI and the CLI reach it only through
`engine.service.client`. Run it with `dit-workbench serve` or `python -m engine.service.server`.
This module is the process: the app's assembly and lifespan, the idle exit, the listening
sockets and the signals. The endpoints are in `engine.service.routes` (each described, with a
curl example, in docs/engine-api.md), the middleware in `engine.service.gates`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from starlette.applications import Starlette

from engine import __version__
from engine.core import columns, roots
from engine.core.errors import UserError
from engine.core.settings import IDLE_EXIT_ENV, IDLE_EXIT_S, settings
from engine.service import daemon, tables
from engine.service.gates import Activity, ActivityGate, TokenGate
from engine.service.records import JobRecords
from engine.service.routes import EXCEPTION_HANDLERS, routes
from engine.service.scheduler import Scheduler

log = logging.getLogger("engine.service.server")

JOB_COLUMNS = columns.JOBS


def idle_exit_default() -> float:
    """An engine with no running or queued job, no open request (an event stream counts) and
    no request for this long exits by itself; 0 keeps it running. `--idle-exit` or
    $DIT_WORKBENCH_ENGINE_IDLE_EXIT (engine.core.settings)."""
    return settings().idle_exit_s


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

    app = Starlette(routes=routes(), lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
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
