"""`dit-workbench ARGS` in the test's own process, as a user runs it (fast: no interpreter start)."""

from __future__ import annotations

import sys


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
