"""`dit-workbench ARGS` as a user runs it: in the test's own process (fast: no interpreter
start), or as a real subprocess where the test needs signals or the terminal's view."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, capsys, monkeypatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `dit-workbench *args`."""
    from workbench.cli import main

    monkeypatch.setattr(sys, "argv", ["dit-workbench", *map(str, args)])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def cli_subprocess(args: list, cwd: Path) -> subprocess.Popen:
    """`dit-workbench *args` started in `cwd` (its default cache under it), stdout and stderr
    piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DIT_WORKBENCH_CACHE": str(cwd / "cache")},
        # As from a terminal: a test run started in the background (`cmd &` in a script) has
        # SIGINT ignored, the child would inherit that, and Python then never sees ctrl+c.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_result(*args) -> subprocess.CompletedProcess:
    """`dit-workbench *args` run in this process, returned as `subprocess.run(...,
    capture_output=True, text=True)` would return it: the exit code, stdout and stderr without
    the seconds a new interpreter spends importing torch."""
    import contextlib
    import io
    from unittest import mock

    from workbench.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        mock.patch.object(sys, "argv", ["dit-workbench", *map(str, args)]),
    ):
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
