"""Hardening, second pass (issue 20): the shared number checks, records that hold NaN, bounded
sizes, symlinks, CSV cells, special files and SIGTERM. Fast tests on tiny inputs; the cases that
need a checkpoint are in tests/test_bad_input.py's table."""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from pathlib import Path

import pytest

from engine import limits
from engine.errors import UserError, one_line

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import Engine, _short_tmp  # noqa: E402

# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, bound, expect",
    [
        (math.nan, limits.CFG, "must be a finite number"),
        (math.inf, limits.CFG, "must be a finite number"),
        (-math.inf, limits.SEED, "must be a finite number"),
        (True, limits.CFG, "must be a number"),
        ("4.5", limits.CFG, "must be a number"),
        (2**63, limits.SEED, "does not fit a 64-bit integer"),
        (2**62 + 1, limits.SEED, "at most 4,611,686,018,427,387,904"),
        (-1, limits.SEED, "must be >= 0"),
        (0, limits.BATCH, "must be positive"),
        (1.5, limits.BATCH, "must be a whole number"),
        (10**9, limits.IMAGES_PER_PROMPT, "at most 1,000,000"),
        (1001, limits.SAMPLER_STEPS, "at most 1000 (got 1001); the schedule has 1000 steps"),
        (100.5, limits.CFG, "at most 100"),
    ],
)
def test_bound_refuses_with_the_bound_named(value, bound, expect):
    with pytest.raises(UserError) as e:
        bound.check("--x", value)
    assert str(e.value).startswith("--x ") and expect in str(e.value)


def test_bound_accepts_and_normalises():
    assert limits.SEED.check("--seed", 2**62) == 2**62
    assert limits.BATCH.check("--batch-size", 4.0) == 4 and isinstance(
        limits.BATCH.check("b", 4.0), int
    )
    assert limits.CFG.check("--cfg", 0) == 0 and limits.CFG.check("--cfg", 4.5) == 4.5


def test_a_huge_integer_is_named_not_printed():
    """Python refuses to print integers over 4300 digits: the message must not try."""
    with pytest.raises(UserError) as e:
        limits.SEED.check("--seed", 10**5000)
    assert "digits" in str(e.value) and len(str(e.value)) < 200


def test_engine_params_share_the_checks():
    from engine.jobs import get_kind

    kind = get_kind("selftest")
    for bad, expect in (("nan", "finite"), ("inf", "finite"), ("-inf", "finite"), (1e6, "at most")):
        with pytest.raises(UserError, match=expect):
            kind.check({"seconds": bad})
    with pytest.raises(UserError, match="64-bit"):
        kind.check({"steps": str(2**64)})
    assert kind.check({"seconds": "0.5", "steps": "3"})["seconds"] == 0.5


def test_error_messages_are_cut_to_one_short_line():
    caption = "red " * 250_000  # 1 MB
    msg = one_line(f"cannot read prompt {caption!r}: unknown word\nsecond line")
    assert "\n" not in msg and len(msg) <= 400 and "characters in all" in msg
    assert one_line("short\nmessage") == "short message"
    assert len(limits.shown(caption)) <= limits.MAX_ECHO + 30


# --- job records that already hold NaN --------------------------------------------------------


def test_records_holding_nan_are_served(tmp_path):
    """An older engine stored NaN in a job's params and result: the records read back with
    null in their place, and a live engine answers GET /jobs and /jobs/N (was HTTP 500)."""
    from engine.job_records import JobRecords

    d = _short_tmp()
    try:
        recs = JobRecords(d / "jobs.sqlite")
        job = recs.add("selftest", {"seconds": 1.0})
        recs.close()
        db = sqlite3.connect(d / "jobs.sqlite")
        db.execute(
            "UPDATE jobs SET params = ?, result = ?, state = 'done' WHERE id = ?",
            ('{"seconds": NaN, "cfg": Infinity}', '{"m": [NaN, 1.0]}', job["id"]),
        )
        db.commit()
        db.close()
        recs = JobRecords(d / "jobs.sqlite")
        (row,) = recs.all()
        assert row["params"] == {"seconds": None, "cfg": None}
        assert row["result"] == {"m": [None, 1.0]}
        json.dumps(row, allow_nan=False)
        recs.update(row["id"], result={"x": math.inf}, eta_s=math.nan, progress=math.nan)
        row = recs.get(row["id"])
        assert row["result"] == {"x": None} and row["eta_s"] is None and row["progress"] == 0.0
        recs.close()
        e = Engine(d)
        try:
            r = e.http.get("/jobs")
            assert r.status_code == 200, r.text
            assert r.json()["jobs"][0]["params"]["seconds"] is None
            assert e.http.get(f"/jobs/{job['id']}").status_code == 200
            r = e.http.post("/jobs", json={"kind": "selftest", "params": {"seconds": "nan"}})
            assert r.status_code == 400 and "finite" in r.json()["error"]
            assert len(e.http.get("/jobs").json()["jobs"]) == 1  # never queued
        finally:
            e.stop()
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)
