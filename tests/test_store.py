"""The HDF5 cache (engine/store/cache.py): provenance, refusals, and no loss when a writer is killed."""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from engine.core.errors import UserError
from engine.store.cache import Store, cache_path

ROOT = Path(__file__).resolve().parents[1]

WRITER = r"""
import sys, numpy as np
from engine.store.cache import Store
store = Store(sys.argv[1], "h" * 64)
start = len(store.runs("synopsis"))
for i in range(start, start + 10_000):
    rng = np.random.default_rng(i)
    store.write_run("synopsis", {"x": rng.standard_normal((64, 256)).astype("f4"),
                                 "eval/spatial": np.arange(i % 7) % 2 == 0},
                    {"index": i}, run=f"run-{i:05d}")
    print(f"run-{i:05d}", flush=True)
"""


def _check_run(store: Store, run: str) -> None:
    i = int(run.split("-")[1])
    x = store.read("synopsis", run, "x")
    np.testing.assert_array_equal(
        x, np.random.default_rng(i).standard_normal((64, 256)).astype("f4")
    )
    assert store.attrs("synopsis", run)["index"] == i


def test_provenance_and_reading(tmp_path):
    store = Store(tmp_path / "c.h5", "abc")
    run = store.write_run("screening", {"m": np.ones((3, 3)), "names": ["a", "b"]}, {"k": 1})
    a = store.attrs("screening", run)
    assert a["checkpoint_hash"] == "abc" and a["k"] == 1 and a["code_version"] and a["created"]
    assert store.read("screening", run, "names") == ["a", "b"]
    with h5py.File(store.path) as f:  # plain h5py
        assert f.attrs["format"].startswith("dit-workbench-cache/")
        assert f["screening"][run]["m"].shape == (3, 3)
    with pytest.raises(UserError, match="no screening run"):
        store.read("screening", "run-9999")
    with pytest.raises(UserError, match="already exists"):
        store.write_run("screening", {"m": np.zeros(1)}, run=run)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 65])
def test_bad_run_names_are_refused(tmp_path, bad):
    store = Store(tmp_path / "c.h5", "abc")
    with pytest.raises(UserError, match="bad run name"):
        store.write_run("synopsis", {"x": np.zeros(1)}, run=bad)
    assert not store.path.exists()


def test_cache_of_another_checkpoint_is_refused_and_left_alone(tmp_path):
    Store(tmp_path / "c.h5", "a" * 64).write_run("synopsis", {"x": np.zeros(4)})
    before = (tmp_path / "c.h5").read_bytes()
    with pytest.raises(UserError, match="cache of another checkpoint"):
        Store(tmp_path / "c.h5", "b" * 64)
    assert (tmp_path / "c.h5").read_bytes() == before
    ck = SimpleNamespace(path=tmp_path / "run" / "step-0000100", hash="c" * 64)
    assert cache_path(ck, tmp_path).name == "run-step-0000100-cccccccccccc.h5"


def test_shipped_cache_is_read_beneath_and_never_written(tmp_path):
    """A checkpoint's own cache.h5 is listed and read with the user's runs; every write and
    delete goes to the user's file, and the shipped file keeps its bytes."""
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    shipped = Store(ckdir / "cache.h5", "a" * 64)
    shipped.write_run("ablation", {"d": np.arange(3.0)}, {"who": "shipped"}, run="sweep-0001")
    shipped.write_run("screening", {"m": np.zeros(2)}, run="run-0001")
    before = (ckdir / "cache.h5").read_bytes()

    ck = SimpleNamespace(path=ckdir, hash="a" * 64)
    store = Store.for_checkpoint(ck, tmp_path / "user")
    assert store.runs("ablation") == ["sweep-0001"]
    np.testing.assert_array_equal(store.read("ablation", "sweep-0001", "d"), np.arange(3.0))
    assert store.latest_run("ablation", who="shipped") == "sweep-0001"
    # new names never collide with shipped ones; the user's file holds the new run
    run = store.write_run("ablation", {"d": np.ones(2)}, {"who": "user"}, run=None)
    assert run != "sweep-0001" and store.runs("ablation") == sorted(["sweep-0001", run])
    with h5py.File(store.path) as f:
        assert list(f["ablation"]) == [run]
    # a run of the same name in the user's file shadows the shipped one
    store.write_run("screening", {"m": np.ones(2)}, run="run-0001", overwrite=True)
    np.testing.assert_array_equal(store.read("screening", "run-0001", "m"), np.ones(2))
    assert (
        store.shipped_runs("ablation") == ["sweep-0001"] and store.shipped_runs("screening") == []
    )
    with pytest.raises(UserError, match="read-only"):
        store.delete_run("ablation", "sweep-0001")
    store.delete_run("ablation", run)
    assert store.runs("ablation") == ["sweep-0001"]
    assert (ckdir / "cache.h5").read_bytes() == before
    with pytest.raises(UserError, match="shipped cache of another checkpoint"):
        Store.for_checkpoint(SimpleNamespace(path=ckdir, hash="b" * 64), tmp_path / "other")


def _kill_trials(tmp_path, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "kill.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    confirmed: list[str] = []
    for _ in range(trials):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                                text=True, env=env)  # fmt: skip
        # Kill it right after it reports a random number of runs written: in the middle of
        # writing the next one (tests/test_store_atomic.py stops one at exact points).
        for _ in range(rng.randint(1, 6)):
            line = proc.stdout.readline().strip()
            if line:
                confirmed.append(line)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        confirmed += [line for line in out.split() if line]
        store = Store(path, "h" * 64)
        runs = set(store.runs("synopsis"))
        assert set(confirmed) <= runs, "a run the writer reported done was lost"
        for run in confirmed[-5:]:
            _check_run(store, run)
    store = Store(path, "h" * 64)
    for run in confirmed:  # every run ever confirmed reads back intact
        _check_run(store, run)
    assert len(confirmed) >= trials


@pytest.mark.slow
def test_killed_writer_loses_nothing_20_trials(tmp_path):
    _kill_trials(tmp_path, trials=20, seed=0)
