"""`dit-workbench` (no arguments) and `dit-workbench tui`: open the Textual workbench."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from engine.errors import UserError


def default_cache() -> Path:
    return Path(os.environ.get("DIT_WORKBENCH_CACHE", "cache"))


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
    from engine.client import EngineError, connect
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

    run_tui(client, reconnect=reconnect, checkpoint=checkpoint, export_dir=exports)


def tui(
    cache: Path = typer.Option(
        None, "--cache", help="Cache folder of the engine (default ./cache)."
    ),
    checkpoints: list[Path] = typer.Option(
        None,
        "--checkpoints",
        help="Checkpoint folders for a newly started engine (repeatable; "
        "default ./checkpoints and ./runs).",
    ),  # fmt: skip
    checkpoint: str = typer.Option(None, "--checkpoint", help="Open on this checkpoint (name)."),
    socket: Path = typer.Option(None, "--socket", help="Engine socket (default in the cache)."),
    exports: Path = typer.Option(
        None, "--exports", help="Folder that `e` suggests for CSV files (default ./exports)."
    ),
):
    """Open the workbench: ranked heads, layer x head maps, head detail, screening, ablations,
    jobs and training curves, on an engine that keeps running when the terminal closes."""
    open_workbench(cache, checkpoints, checkpoint, socket, exports)
