"""The real workbench in a tmux pane at 80x24, driven by keys, with the CLI beside it: open it,
wait for its heads table, export it with `e` + Enter and read the CSV back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from engine_process import ROOT, wait_until

CLI = [sys.executable, "-m", "workbench.cli"]


def tmux_env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "TERM": "xterm-256color", "DIT_WORKBENCH_CACHE": "cache"}  # fmt: skip
    env.pop("TMUX", None)
    return env


def export_in_app(work: Path, env: dict, rows: int) -> str:
    """Open the workbench in `work` at 80x24, wait for a heads table of `rows` rows, export it
    with `e` + Enter, quit; the CSV's text."""
    session = f"wb{os.getpid()}"
    tmux = ["tmux", "-L", session]
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-c",
                    str(work), " ".join(CLI)], env=env, check=True)  # fmt: skip

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True).stdout  # fmt: skip

    exports = work / "exports"
    try:
        wait_until(lambda: f"{rows} rows" in screen(), 120, "the heads table", poll=0.3)
        subprocess.run([*tmux, "send-keys", "-t", session, "e"], check=True)
        wait_until(lambda: ".csv" in screen(), 20, "the export prompt", poll=0.3)
        subprocess.run([*tmux, "send-keys", "-t", session, "Enter"], check=True)
        wait_until(lambda: list(exports.glob("*.csv")), 20, "the CSV file in exports/", poll=0.3)
        (csv_file,) = exports.glob("*.csv")
        text = ""

        def written() -> bool:
            nonlocal text
            text = csv_file.read_text()
            return text.count("\n") == rows + 1

        wait_until(written, 10, "the whole CSV", poll=0.3)
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True)
        return text
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        info = work / "cache" / "run" / "engine.json"
        if info.is_file():
            try:
                os.kill(json.loads(info.read_text())["pid"], signal.SIGTERM)
            except (OSError, KeyError, ValueError):
                pass


def heads_csv(ck: Path, work: Path, env: dict) -> str:
    return subprocess.run([*CLI, "heads", str(ck), "--format", "csv"], cwd=work, env=env,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
