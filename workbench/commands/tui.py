"""`dit-workbench` (no arguments) and `dit-workbench tui`: open the Textual workbench."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from engine.core.errors import UserError
from workbench.commands.engine import CHECKPOINTS, ENGINE_CACHE, ENGINE_SOCKET


def default_cache() -> Path:
    from engine.core.settings import settings

    return settings().cache_dir


def open_workbench(
    cache: Path | None = None,
    checkpoints: list[Path] | None = None,
    checkpoint: str | None = None,
    socket: Path | None = None,
    exports: Path | None = None,
) -> None:
    """Connect to the engine of `cache` (starting it detached if none runs) and run the app."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(
            "the workbench needs a terminal; run `dit-workbench --help` for the commands "
            "that work in scripts"
        )
    from engine.service.client import EngineError, connect
    from workbench.app import run_tui

    cache = cache or default_cache()
    args = [f"--checkpoints={Path(c).resolve()}" for c in checkpoints or []]
    if not args and not Path("checkpoints").is_dir():
        typer.echo("note: no ./checkpoints folder here; the engine will list ./runs only",
                   err=True)  # fmt: skip
    try:
        client = connect(cache, start=True, socket_path=socket, args=args)
    except EngineError as e:
        raise UserError(str(e)) from None

    def reconnect():
        return connect(cache, start=True, socket_path=socket, args=args)

    app = run_tui(client, reconnect=reconnect, checkpoint=checkpoint, export_dir=exports)
    typer.echo(quit_note(app.client, cache), err=True)


def quit_note(client, cache: Path) -> str:
    """What the user is told on `q`: whether the engine keeps running, why, and how to stop it."""
    try:
        h = client.health()
        running = [j for j in client.jobs() if j.get("state") == "running"]
    except Exception:
        return "the engine does not answer (not running)"
    finally:
        try:
            client.close()
        except Exception:
            pass
    return engine_note(h, running, cache)


def engine_note(h: dict, running: list[dict], cache: Path) -> str:
    from workbench.commands.engine import idle_text

    stop = "dit-workbench engine stop" + (
        f" --cache {cache}" if Path(cache).resolve() != Path("cache").resolve() else ""
    )
    n_run, n_queued = int(h.get("jobs_running") or 0), int(h.get("jobs_queued") or 0)
    idle = h.get("idle_exit_s")
    if n_run or n_queued:
        jobs = ", ".join(f"{j.get('id')} {j.get('kind')}" for j in running)
        why = f"{n_run} job(s) running" + (f" ({jobs})" if jobs else "")
        why += f", {n_queued} queued" if n_queued else ""
        after = f"; once they end, {idle_text(idle)}" if idle else "; it does not exit by itself"
        return (
            f"the engine (pid {h.get('pid')}) keeps running: {why}{after}. "
            f"Stop it now with `{stop}` (running jobs become interrupted, resumable)."
        )
    return (
        f"the engine (pid {h.get('pid')}) keeps running with no jobs: {idle_text(idle)}. "
        f"Stop it now with `{stop}`."
    )


def tui(
    cache: Path = ENGINE_CACHE,
    checkpoints: list[Path] = CHECKPOINTS,
    checkpoint: str = typer.Option(None, "--checkpoint", help="Open on this checkpoint (name)."),
    socket: Path = ENGINE_SOCKET,
    exports: Path = typer.Option(
        None, "--exports", help="Folder that `e` suggests for CSV files (default ./exports)."
    ),
):
    """Open the workbench: ranked heads, layer x head maps, head detail, screening, ablations,
    jobs and training curves, on an engine that keeps running when the terminal closes."""
    open_workbench(cache, checkpoints, checkpoint, socket, exports)
