"""End to end: the real app in tmux at 80x24, with a real engine, on a real tiny checkpoint and on
the shipped `mini-rte`. Open it, export the heads table with `e` + Enter, and compare with
`dit-workbench heads --format csv` (the same rows, byte for byte); on the shipped checkpoint also
check that the relation head is on top and that nothing shipped changed."""

import csv
import hashlib
import io
import shutil
import subprocess
from pathlib import Path

import pytest
from tmux_app import CLI, export_in_app, heads_csv, tmux_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


def test_open_export_matches_heads_csv(nano_ckpt, tmp_path):
    work = tmp_path / "w"
    ck = work / "checkpoints" / "nano"
    shutil.copytree((nano_ckpt / "latest").resolve(), ck)
    shutil.copy(nano_ckpt / "metrics.jsonl", ck / "metrics.jsonl")
    env = tmux_env()
    (work / "p.txt").write_text("red square is above blue circle\ncircle left of triangle\n")
    r = subprocess.run([*CLI, "synopsis", str(ck), "--prompts", "p.txt", "--n-per-prompt", "1",
                        "--steps", "2"], cwd=work, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    want = heads_csv(ck, work, env)
    assert export_in_app(work, env, 9) == want


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
    env = tmux_env()
    want = heads_csv(ck, work, env)
    rows = list(csv.DictReader(io.StringIO(want)))
    assert len(rows) == 36
    got = export_in_app(work, env, 36)
    assert got == want
    top = rows[0]
    # the head that synopsis and screening both name in docs/reproduction.md
    assert (top["layer"], top["head"]) == ("2", "2")
    assert _digests(ck) == before
