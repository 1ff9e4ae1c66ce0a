"""Learning curves and the learning-order check (issue 10, item 3)."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from clirunner import cli_result

from engine.core.errors import UserError
from engine.train.curves import learned_at, learning_order, order_matches_paper, read_curves

ROOT = Path(__file__).resolve().parents[1]


def _rec(step, color, shape, ub, sp):
    return {
        "step": step,
        "images_seen": step * 32,
        "color": color,
        "shape": shape,
        "exist_binding": ub,
        "unique_binding": ub,
        "spatial": sp,
        "overall": sp,
    }


RECORDS = [
    _rec(100, 0.6, 0.1, 0.0, 0.0),
    _rec(200, 0.4, 0.6, 0.0, 0.6),  # a lucky early relation score that does not last
    _rec(300, 0.9, 0.7, 0.6, 0.1),
    _rec(400, 0.9, 0.8, 0.7, 0.6),
]


def test_learned_at_requires_the_metric_to_stay_up():
    assert learned_at(RECORDS, "color", 0.5) == 300  # dipped to 0.4 at step 200
    assert learned_at(RECORDS, "shape", 0.5) == 200
    assert learned_at(RECORDS, "spatial", 0.5) == 400
    assert learned_at(RECORDS, "spatial", 0.9) is None


def test_learning_order_and_verdict():
    order = learning_order(RECORDS)
    assert [r["skill"] for r in order] == ["shape", "colour", "binding", "relation"]
    assert order_matches_paper(order) is False
    paper = [_rec(100, 0.9, 0.2, 0, 0), _rec(200, 0.9, 0.8, 0.1, 0), _rec(300, 1, 0.9, 0.7, 0.6)]
    assert order_matches_paper(learning_order(paper)) is True
    assert order_matches_paper(learning_order(paper[:2])) is None


def test_curves_cli_csv_and_errors(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps(r) for r in RECORDS] + ['{"step": 500, "col']  # a line cut by a crash
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert [r["step"] for r in read_curves(run)] == [100, 200, 300, 400]
    r = cli_result("curves", run, "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [int(x["step"]) for x in rows] == [100, 200, 300, 400]
    assert float(rows[2]["unique_binding"]) == 0.6
    with pytest.raises(UserError, match="no metrics.jsonl"):
        read_curves(tmp_path)


def test_no_arguments_without_a_terminal_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "workbench.cli"], capture_output=True, text=True,
                       cwd=ROOT, stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 2 and "needs a terminal" in r.stderr
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "--help"], capture_output=True,
                       text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0 and "synopsis" in r.stdout and "tui" in r.stdout
