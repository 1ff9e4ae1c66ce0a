"""End to end: the real app in tmux at 80x24, on a real tiny checkpoint, with a real engine.
Open it, export the heads table with `e` + Enter, and compare with `dit-workbench heads --format
csv` (the same rows, byte for byte)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


def _wait(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_open_export_matches_heads_csv(nano_ckpt, tmp_path):
    work = tmp_path / "w"
    ck = work / "checkpoints" / "nano"
    shutil.copytree((nano_ckpt / "latest").resolve(), ck)
    shutil.copy(nano_ckpt / "metrics.jsonl", ck / "metrics.jsonl")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "TERM": "xterm-256color", "DIT_WORKBENCH_CACHE": "cache"}  # fmt: skip
    env.pop("TMUX", None)
    cli = [sys.executable, "-m", "workbench.cli"]
    (work / "p.txt").write_text("red square is above blue circle\ncircle left of triangle\n")
    r = subprocess.run([*cli, "synopsis", str(ck), "--prompts", "p.txt", "--n-per-prompt", "1",
                        "--steps", "2"], cwd=work, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    want = subprocess.run([*cli, "heads", str(ck), "--format", "csv"], cwd=work, env=env,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    session = f"wb{os.getpid()}"
    tmux = ["tmux", "-L", session]
    cmd = " ".join([sys.executable, "-m", "workbench.cli"])
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-c",
                    str(work), cmd], env=env, check=True)  # fmt: skip

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True).stdout  # fmt: skip

    try:
        _wait(lambda: "9 rows" in screen(), 90, "the heads table")
        subprocess.run([*tmux, "send-keys", "-t", session, "e"], check=True)
        _wait(lambda: ".csv" in screen(), 20, "the export prompt")
        subprocess.run([*tmux, "send-keys", "-t", session, "Enter"], check=True)
        _wait(lambda: list(work.glob("*.csv")), 20, "the CSV file")
        (csv_file,) = work.glob("*.csv")
        _wait(lambda: csv_file.read_text() == want, 10, "the CSV to match `heads --format csv`")
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        info = work / "cache" / "run" / "engine.json"
        if info.is_file():
            try:
                os.kill(json.loads(info.read_text())["pid"], signal.SIGTERM)
            except (OSError, KeyError, ValueError):
                pass
