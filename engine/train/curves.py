"""Learning dynamics: evaluator metrics over a training run's checkpoints (its metrics.jsonl).

The paper reports that DiTs learn colour first, then shape, then binding, then relations.
`learning_order` makes that claim checkable on our own runs: a skill counts as learned at the
first checkpoint where its metric reaches a threshold and stays there (at or above it at every
later checkpoint), so a lucky early evaluation does not count.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.core import columns
from engine.core.errors import UserError

COLUMNS = list(columns.CURVES)
# The paper's four skills and the metric that measures each.
SKILLS = {"colour": "color", "shape": "shape", "binding": "unique_binding", "relation": "spatial"}
PAPER_ORDER = ["colour", "shape", "binding", "relation"]


def metrics_path(run: str | os.PathLike) -> Path:
    p = Path(run)
    path = p / "metrics.jsonl" if p.is_dir() else p
    if not p.exists():
        raise UserError(
            f"run folder {str(run)!r} does not exist; give a training run or checkpoint folder holding metrics.jsonl"
        )
    if path.name != "metrics.jsonl" or not path.is_file():
        raise UserError(
            f"{str(run)!r} has no metrics.jsonl; point at a folder written by `dit-workbench train`"
        )
    return path


def read_curves(run: str | os.PathLike) -> list[dict]:
    """One dict per evaluated checkpoint, sorted by step; lines cut short by a crash skipped."""
    from engine.core.fs import regular_file
    from engine.core.limits import MAX_METADATA_BYTES, shown

    path = regular_file(metrics_path(run), "metrics file", MAX_METADATA_BYTES)
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if not isinstance(rec, dict) or "step" not in rec:
                    continue
                step = rec["step"]
                if isinstance(step, bool) or not isinstance(step, int):
                    raise UserError(
                        f"{path}:{lineno}: 'step' is {shown(step)}, not an integer; fix or "
                        "remove the line"
                    )
                rows.append(rec)
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); the file is damaged") from None
    return sorted(rows, key=lambda r: r["step"])


def curve_rows(records: list[dict]) -> list[list]:
    return [[r.get(c) for c in COLUMNS] for r in records]


def learned_at(records: list[dict], metric: str, threshold: float) -> int | None:
    """First step from which `metric` stays >= threshold to the end of the run (None: never)."""
    step = None
    for r in records:
        v = r.get(metric)
        if isinstance(v, (int, float)) and v >= threshold:
            step = r["step"] if step is None else step
        else:
            step = None
    return step


def learning_order(records: list[dict], threshold: float = 0.5) -> list[dict]:
    """The paper's four skills with the step each was learned at, in the order learned."""
    out = [
        {
            "skill": s,
            "metric": m,
            "learned_at": learned_at(records, m, threshold),
            "final": records[-1].get(m) if records else None,
        }
        for s, m in SKILLS.items()
    ]
    never = float("inf")
    return sorted(
        out,
        key=lambda r: (
            never if r["learned_at"] is None else r["learned_at"],
            PAPER_ORDER.index(r["skill"]),
        ),
    )


def order_matches_paper(order: list[dict]) -> bool | None:
    """True/False if every skill was learned and the order is (or is not) the paper's; None if
    some skill was never learned, so the order cannot be judged."""
    if any(r["learned_at"] is None for r in order):
        return None
    return [r["skill"] for r in order] == PAPER_ORDER
