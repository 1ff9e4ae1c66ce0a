"""End to end: the real app in tmux at 80x24, with a real engine, on a real tiny checkpoint and on
the shipped `mini-rte`. Open it, export the heads table with `e` + Enter, and compare with
`dit-workbench heads --format csv` (the same rows, byte for byte); on the shipped checkpoint also
check that the relation head is on top and that nothing shipped changed."""

import csv
import hashlib
import io
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
CLI = [sys.executable, "-m", "workbench.cli"]


def _wait(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "TERM": "xterm-256color", "DIT_WORKBENCH_CACHE": "cache"}  # fmt: skip
    env.pop("TMUX", None)
    return env


def _export_in_app(work: Path, env: dict, rows: int) -> str:
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
        _wait(lambda: f"{rows} rows" in screen(), 120, "the heads table")
        subprocess.run([*tmux, "send-keys", "-t", session, "e"], check=True)
        _wait(lambda: ".csv" in screen(), 20, "the export prompt")
        subprocess.run([*tmux, "send-keys", "-t", session, "Enter"], check=True)
        _wait(lambda: list(exports.glob("*.csv")), 20, "the CSV file in exports/")
        (csv_file,) = exports.glob("*.csv")
        text = ""

        def written() -> bool:
            nonlocal text
            text = csv_file.read_text()
            return text.count("\n") == rows + 1

        _wait(written, 10, "the whole CSV")
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


def _heads_csv(ck: Path, work: Path, env: dict) -> str:
    return subprocess.run([*CLI, "heads", str(ck), "--format", "csv"], cwd=work, env=env,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def test_open_export_matches_heads_csv(nano_ckpt, tmp_path):
    work = tmp_path / "w"
    ck = work / "checkpoints" / "nano"
    shutil.copytree((nano_ckpt / "latest").resolve(), ck)
    shutil.copy(nano_ckpt / "metrics.jsonl", ck / "metrics.jsonl")
    env = _env()
    (work / "p.txt").write_text("red square is above blue circle\ncircle left of triangle\n")
    r = subprocess.run([*CLI, "synopsis", str(ck), "--prompts", "p.txt", "--n-per-prompt", "1",
                        "--steps", "2"], cwd=work, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    want = _heads_csv(ck, work, env)
    assert _export_in_app(work, env, 9) == want


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.skipif(not (ROOT / "checkpoints" / "mini-rte" / "cache.h5").is_file(),
                    reason="the shipped mini-rte results are not built")  # fmt: skip
def test_shipped_mini_rte_opens_on_its_relation_head(tmp_path):
    """The checkpoint the workbench opens first: its heads table (read from the shipped,
    read-only cache.h5) has the relation head on top, the export equals `heads --format csv`,
    and the shipped files keep their bytes."""
    work = tmp_path / "w"
    (work / "checkpoints").mkdir(parents=True)
    ck = work / "checkpoints" / "mini-rte"
    shutil.copytree(ROOT / "checkpoints" / "mini-rte", ck)
    before = _digests(ck)
    env = _env()
    want = _heads_csv(ck, work, env)
    rows = list(csv.DictReader(io.StringIO(want)))
    assert len(rows) == 36
    got = _export_in_app(work, env, 36)
    assert got == want
    top = rows[0]
    # the head that synopsis and screening both name in docs/reproduction.md
    assert (top["layer"], top["head"]) == ("2", "2")
    assert _digests(ck) == before
