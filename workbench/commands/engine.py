"""`dit-workbench serve` and `dit-workbench jobs ...`: the engine daemon and its job queue."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import typer

from engine.core.errors import UserError
from workbench.output import Format, dump_json, format_option, print_rows

jobs_app = typer.Typer(
    help="Submit, watch and cancel engine jobs (the engine is started if none is running).",
    no_args_is_help=True,
)


def _default_cache(value: Path | None) -> Path:
    """--cache, else $DIT_WORKBENCH_CACHE, else ./cache: the same rule as every other command,
    so `jobs` never starts a second engine on another cache."""
    from engine.core.settings import settings

    return value if value is not None else settings().cache_dir


ENGINE_CACHE = typer.Option(
    None,
    "--cache",
    callback=_default_cache,
    help="Cache dir of the engine (job records, socket); default ./cache or $DIT_WORKBENCH_CACHE.",
)
ENGINE_SOCKET = typer.Option(
    None, "--socket", help="Engine socket (default: the one <cache> records)."
)
_FORMAT = format_option("table or json.")
CHECKPOINTS = typer.Option(
    None,
    "--checkpoints",
    help="Folder of checkpoints / training runs the engine may read (repeatable; default "
    "./checkpoints and ./runs).",
)
_JOB_ID = typer.Argument(..., help="Job id.")


@contextlib.contextmanager
def _engine_errors():
    """Engine refusals become the CLI's one-line `error: ...` (exit 2)."""
    from engine.service.client import EngineError

    try:
        yield
    except EngineError as e:
        raise UserError(str(e)) from None


def _client(cache: Path, socket: Path | None):
    from engine.service.client import connect

    return connect(cache, start=True, socket_path=socket)


def serve(
    socket: Path = typer.Option(
        None, "--socket", help="Unix socket path (default <cache>/run/engine.sock)."
    ),
    cache: Path = ENGINE_CACHE,
    checkpoints: list[Path] = CHECKPOINTS,
    foreground: bool = typer.Option(
        False, "--foreground", help="Run in this terminal instead of detaching."
    ),
    tcp: str = typer.Option(
        None,
        "--tcp",
        help="Also listen on loopback HOST:PORT; clients need the token in <cache>/run/token.",
    ),
    max_heavy: int = typer.Option(1, "--max-heavy", help="Accelerator-heavy jobs run at once."),
    idle_exit: float = typer.Option(
        None,
        "--idle-exit",
        metavar="SECONDS",
        help="Exit after this long with no jobs and no clients; 0 never (default "
        "$DIT_WORKBENCH_ENGINE_IDLE_EXIT, else 600).",
    ),
):
    """Run the engine: the long-lived process that owns the GPU, the job queue and the cache.

    Detached by default (its own session: closing the terminal or losing SSH does not stop
    it); `--foreground` keeps it in this terminal. One engine per cache dir.
    """
    from engine.service import daemon
    from engine.service.client import EngineClient, EngineUnavailable, connect

    if foreground:
        from engine.service.server import serve as run

        run(
            cache,
            socket,
            [str(c) for c in checkpoints] if checkpoints else None,
            tcp,
            max_heavy,
            idle_exit_s=idle_exit,
        )
        return
    if idle_exit is not None and idle_exit < 0:
        raise UserError("--idle-exit must be 0 (never) or a number of seconds")
    if tcp:
        daemon.parse_tcp(tcp)  # refuse a bad address here rather than in the engine's log
    with EngineClient(socket_path=socket, cache_dir=cache) as probe:
        try:
            h = probe.health()
        except EngineUnavailable:
            h = None
    if h is not None:
        raise UserError(
            f"an engine is already running for {h['cache']} (pid {h['pid']}, socket {h['socket']})"
        )
    args = [f"--checkpoints={c.resolve()}" for c in checkpoints or []]
    args += [f"--tcp={tcp}"] if tcp else []
    args += [f"--max-heavy={max_heavy}"]
    args += [f"--idle-exit={idle_exit}"] if idle_exit is not None else []
    with _engine_errors(), connect(cache, start=True, socket_path=socket, args=args) as client:
        h = client.health()
    typer.echo(f"engine running: pid {h['pid']}, socket {h['socket']}")
    typer.echo(f"log: {daemon.run_dir(cache) / 'engine.log'}", err=True)


# --- jobs -----------------------------------------------------------------------------------


def _when(t: float | None) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _eta(s: float | None) -> str:
    if s is None:
        return ""
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _row(j: dict) -> dict:
    return {
        "id": j["id"],
        "kind": j["kind"],
        "state": j["state"],
        "progress": f"{100 * (j['progress'] or 0):.0f}%",
        "phase": j["phase"] or "",
        "eta": _eta(j["eta_s"]),
        "created": _when(j["created"]),
        "error": j["error"] or "",
    }


def _show(rec: dict, format: Format) -> None:
    if format is Format.json:
        typer.echo(dump_json(rec), nl=False)
    else:
        print_rows(
            [
                {"field": k, "value": json.dumps(v) if isinstance(v, dict | list) else v}
                for k, v in rec.items()
            ],
            title=f"job {rec['id']}",
        )


@jobs_app.command("list")
def list_jobs(cache: Path = ENGINE_CACHE, socket: Path = ENGINE_SOCKET, format: Format = _FORMAT):
    """Every job the engine has run or queued, oldest first."""
    with _engine_errors(), _client(cache, socket) as c:
        jobs = c.jobs()
    if format is Format.json:
        typer.echo(dump_json(jobs), nl=False)
    elif format is Format.csv:
        from workbench.output import rows_to_csv

        typer.echo(rows_to_csv([_row(j) for j in jobs]), nl=False)
    elif jobs:
        print_rows([_row(j) for j in jobs], title="jobs")
    else:
        typer.echo("no jobs yet", err=True)


def parse_params(pairs: list[str], params_json: str | None) -> dict:
    """`--params-json` then each `--param k=v` (a value that parses as JSON is taken as JSON:
    numbers, true/false, lists; otherwise as text; a key given twice becomes a list)."""
    params: dict = {}
    if params_json:
        try:
            params = json.loads(params_json)
        except ValueError as e:
            raise UserError(f"--params-json is not valid JSON ({e})") from None
        if not isinstance(params, dict):
            raise UserError("--params-json must be a JSON object")
    repeated: set[str] = set()
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param {pair!r} is not KEY=VALUE")
        key = key.strip().replace("-", "_")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if key in repeated:
            params[key] = (
                [*params[key], value] if isinstance(params[key], list) else [params[key], value]
            )
        else:
            params[key] = value
            repeated.add(key)
    return params


@jobs_app.command("submit")
def submit(
    kind: str = typer.Argument(..., help="Job kind: train, sample, evaluate, selftest, ..."),
    param: list[str] = typer.Option(
        None, "--param", "-p", help="KEY=VALUE, as the CLI option of that name (repeatable)."
    ),
    params_json: str = typer.Option(None, "--params-json", help="All params as a JSON object."),
    watch: bool = typer.Option(False, "--watch", help="Follow the job until it ends."),
    cache: Path = ENGINE_CACHE,
    socket: Path = ENGINE_SOCKET,
    format: Format = _FORMAT,
):
    """Queue a job. Paths in params are relative to this directory.

    Example: dit-workbench jobs submit train -p out=runs/a -p preset=nano -p steps=100
    """
    params = parse_params(param, params_json)
    with _engine_errors(), _client(cache, socket) as c:
        rec = c.submit(kind, params)
        if watch:
            _follow(c, rec["id"], format)
            return
    if format is Format.json:
        typer.echo(dump_json(rec), nl=False)
    else:
        typer.echo(f"job {rec['id']} ({rec['kind']}) {rec['state']}")


def _follow(c, job_id: int, format: Format) -> None:
    last = c.job(job_id)
    if format is Format.json:
        for rec in c.events(job_id):
            typer.echo(json.dumps(rec))
            last = rec
    elif sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn(f"job {job_id}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[phase]}"),
            TextColumn("eta {task.fields[eta]}"),
            TimeElapsedColumn(),
            transient=False,
        ) as bar:
            task = bar.add_task("job", total=1.0, phase="", eta="")
            for rec in c.events(job_id):
                bar.update(
                    task,
                    completed=rec["progress"] or 0,
                    phase=rec["phase"] or rec["state"],
                    eta=_eta(rec["eta_s"]),
                )
                last = rec
    else:
        shown = None
        for rec in c.events(job_id):
            key = (rec["state"], rec["phase"], int(10 * (rec["progress"] or 0)))
            if key != shown:
                typer.echo(
                    f"job {job_id} {rec['state']} {100 * (rec['progress'] or 0):.0f}% "
                    f"{rec['phase'] or ''} {_eta(rec['eta_s'])}".rstrip()
                )
                shown = key
            last = rec
    if format is not Format.json:
        typer.echo(
            f"job {job_id} {last['state']}" + (f": {last['error']}" if last["error"] else ""),
            err=last["state"] != "done",
        )
        if last["state"] == "done" and last["result"]:
            typer.echo(dump_json(last["result"]), nl=False)
    if last["state"] != "done":
        raise typer.Exit(1)


@jobs_app.command("watch")
def watch(
    job_id: int = _JOB_ID,
    cache: Path = ENGINE_CACHE,
    socket: Path = ENGINE_SOCKET,
    format: Format = format_option("table: a progress bar; json: one record per change."),
):
    """Follow a job until it ends (exit 0 if done, 1 otherwise); ctrl+c stops only the watching."""
    with _engine_errors(), _client(cache, socket) as c:
        _follow(c, job_id, format)


@jobs_app.command("show")
def show(
    job_id: int = _JOB_ID,
    cache: Path = ENGINE_CACHE,
    socket: Path = ENGINE_SOCKET,
    format: Format = _FORMAT,
):
    """One job's record: params, state, progress, result or error."""
    with _engine_errors(), _client(cache, socket) as c:
        _show(c.job(job_id), format)


@jobs_app.command("cancel")
def cancel(
    job_id: int = _JOB_ID,
    cache: Path = ENGINE_CACHE,
    socket: Path = ENGINE_SOCKET,
    format: Format = _FORMAT,
):
    """Cancel a queued or running job (its worker process is terminated)."""
    with _engine_errors(), _client(cache, socket) as c:
        rec = c.cancel(job_id)
    if format is Format.json:
        typer.echo(dump_json(rec), nl=False)
    else:
        typer.echo(f"job {job_id} {rec['state'] if rec['state'] != 'running' else 'cancelling'}")


@jobs_app.command("resume")
def resume(
    job_id: int = _JOB_ID,
    cache: Path = ENGINE_CACHE,
    socket: Path = ENGINE_SOCKET,
    format: Format = _FORMAT,
):
    """Continue an interrupted, cancelled or failed resumable job (training) as a new job."""
    with _engine_errors(), _client(cache, socket) as c:
        rec = c.resume(job_id)
    if format is Format.json:
        typer.echo(dump_json(rec), nl=False)
    else:
        typer.echo(f"job {rec['id']} ({rec['kind']}) {rec['state']}, resuming job {job_id}")


@jobs_app.command("logs")
def logs(
    job_id: int = _JOB_ID,
    tail: int = typer.Option(100, "--tail", "-n", help="Last N lines."),
    cache: Path = ENGINE_CACHE,
    socket: Path = ENGINE_SOCKET,
    format: Format = _FORMAT,
):
    """The last lines of a job's log."""
    with _engine_errors(), _client(cache, socket) as c:
        lines = c.logs(job_id, tail)
    if format is Format.json:
        typer.echo(dump_json(lines), nl=False)
    else:
        for line in lines:
            typer.echo(line)


# --- engine status / stop -------------------------------------------------------------------

engine_app = typer.Typer(
    help="See whether the engine of a cache runs, and stop it.", no_args_is_help=True
)


def _uptime(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _running_engine(cache: Path, socket: Path | None):
    """(client, health) of the engine serving `cache`, or (None, None) when none answers."""
    from engine.service.client import EngineClient, EngineError, EngineUnavailable

    client = EngineClient(socket_path=socket, cache_dir=cache)
    try:
        return client, client.health()
    except EngineUnavailable:
        client.close()
        return None, None
    except EngineError as e:
        client.close()
        raise UserError(str(e)) from None


def idle_text(idle_exit_s: float | None) -> str:
    if not idle_exit_s:
        return "it does not exit by itself (--idle-exit 0)"
    m = idle_exit_s / 60
    when = f"{m:.0f} min" if idle_exit_s >= 60 and m == int(m) else f"{idle_exit_s:g} s"
    return f"it exits by itself after {when} with no jobs and no clients"


@engine_app.command("status")
def engine_status(
    cache: Path = ENGINE_CACHE, socket: Path = ENGINE_SOCKET, format: Format = _FORMAT
):
    """Whether an engine serves this cache: pid, socket, jobs, uptime (exit 1 if none)."""
    client, h = _running_engine(cache, socket)
    if client is None:
        if format is Format.json:
            typer.echo(dump_json({"running": False, "cache": str(cache.resolve())}), nl=False)
        else:
            typer.echo(f"no engine is running for cache {str(cache.resolve())!r}")
        raise typer.Exit(1)
    with client:
        running = [j for j in client.jobs() if j["state"] == "running"]
    if format is Format.json:
        typer.echo(dump_json({"running": True, **h}), nl=False)
        return
    typer.echo(
        f"engine {h['version']} running: pid {h['pid']}, up {_uptime(time.time() - h['started'])}"
    )
    typer.echo(f"cache {h['cache']}, socket {h['socket']}")
    jobs = ", ".join(f"{j['id']} {j['kind']}" for j in running)
    typer.echo(
        f"jobs: {h['jobs_running']} running{f' ({jobs})' if jobs else ''}, "
        f"{h['jobs_queued']} queued; {idle_text(h.get('idle_exit_s'))}"
    )


@engine_app.command("stop")
def engine_stop(
    cache: Path = ENGINE_CACHE,
    socket: Path = ENGINE_SOCKET,
    wait: float = typer.Option(
        30.0, "--wait", metavar="SECONDS", help="How long to wait for it to exit."
    ),
):
    """Stop the engine gracefully: running jobs are recorded as interrupted (resume them with
    `jobs resume ID`), queued jobs wait for the next engine."""
    from engine.service.client import EngineError, EngineUnavailable

    client, h = _running_engine(cache, socket)
    if client is None:
        typer.echo(f"no engine is running for cache {str(cache.resolve())!r}")
        return
    with client:
        jobs = {j["id"]: j for j in client.jobs()}
        with _engine_errors():
            res = client.shutdown()
        deadline = time.monotonic() + wait
        while True:
            try:
                client.health()
            except EngineUnavailable:
                break
            except EngineError:
                pass  # answering no more while it stops
            if time.monotonic() > deadline:
                raise UserError(
                    f"the engine (pid {h['pid']}) did not exit within {wait:g} s; "
                    f"see {daemon_log(cache)}"
                )
            time.sleep(0.1)
    typer.echo(f"engine stopped (pid {h['pid']})")
    from engine.service.kinds import JOB_KINDS

    for jid in res.get("interrupting") or []:
        kind = jobs.get(jid, {}).get("kind", "?")
        how = (
            f"resume it with `dit-workbench jobs resume {jid}`"
            if getattr(JOB_KINDS.get(kind), "resumable", False)
            else "submit it again to redo it"
        )
        typer.echo(f"job {jid} ({kind}) interrupted; {how}")
    queued = [j for j in jobs.values() if j["state"] == "queued"]
    if queued:
        typer.echo(f"{len(queued)} queued job(s) will run when an engine starts again")


def daemon_log(cache: Path) -> str:
    from engine.service import daemon

    return str(daemon.run_dir(cache) / "engine.log")
