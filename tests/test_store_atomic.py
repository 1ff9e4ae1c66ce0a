"""Every change to a cache file takes the one copy-on-write path (Store._rewrite through
engine.core.fs.atomic_replace): the new file is fsynced, renamed over the old one and the folder
fsynced, and a writer that dies mid-change loses nothing saved before. Also the atomic helpers
themselves (write_atomic, staged_folder)."""

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.core.errors import UserError
from engine.core.fs import atomic_replace, staged_folder, write_atomic
from engine.store.cache import Store

ROOT = Path(__file__).resolve().parents[1]
HASH = "h" * 64


def _filled(path: Path) -> Store:
    store = Store(path, HASH)
    store.write_run("ablation", {"x": np.arange(4.0), "names": ["a", "b"]}, run="keep")
    store.write_run("ablation", {"x": np.arange(3.0)}, run="gone")
    store.append_run("synopsis", "staged", {"rows": np.ones((2, 3))}, {"done": 2})
    return store


CHANGES = {
    "write_run": lambda s: s.write_run("ablation", {"x": np.zeros(5), "y": np.ones(5)}, run="new"),
    "commit_run": lambda s: s.commit_run("synopsis", "staged", {"complete": True}),
    "delete_run": lambda s: s.delete_run("ablation", "gone"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_each_change_fsyncs_the_copy_renames_it_then_fsyncs_the_folder(
    tmp_path, monkeypatch, change
):
    store = _filled(tmp_path / "c.h5")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(src).resolve(), Path(dst).resolve()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    CHANGES[change](store)
    (tmp,) = [e[1] for e in events if e[0] == "replace"]
    assert tmp.parent == tmp_path.resolve() and tmp.name.startswith(".c.h5.")
    assert events == [
        ("fsync", tmp),
        ("replace", tmp, store.path.resolve()),
        ("fsync", tmp_path.resolve()),
    ]
    assert not tmp.exists()


# The child dies (os._exit: no finally, no cleanup, as SIGKILL) in the middle of the change:
# after part of the new file is written, before anything is renamed.
DIE_MIDWAY = r"""
import os, sys
import h5py, numpy as np
from engine.store import h5
from engine.store.cache import Store

path, change, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = []

def dies_at_nth_call(real):
    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            os._exit(9)
        return real(*args, **kwargs)
    return wrapped

h5.write_dataset = dies_at_nth_call(h5.write_dataset)
h5py.Group.copy = dies_at_nth_call(h5py.Group.copy)
store = Store(path, "h" * 64)
if change == "write_run":
    store.write_run("ablation", {"x": np.zeros(5), "y": np.ones(5)}, run="new")
elif change == "commit_run":
    store.write_run("ablation", {"z": np.zeros(1)}, run="first")  # one write_dataset call
    store.commit_run("synopsis", "staged")
else:
    store.delete_run("ablation", "gone")
"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("change", CHANGES)
def test_a_writer_dying_mid_change_leaves_the_old_file_whole(tmp_path, change):
    path = tmp_path / "c.h5"
    _filled(path)
    before = _digest(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # write_run: at its second dataset; commit_run: copying the staged run (after one whole
    # write_run); delete_run: copying the first run it keeps
    nth = {"write_run": 2, "commit_run": 2, "delete_run": 1}[change]
    args = [sys.executable, "-c", DIE_MIDWAY, str(path), change, str(nth)]
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    store = Store(path, HASH)
    if change == "commit_run":  # the write before the dying change is saved, the commit is not
        assert store.runs("ablation") == ["first", "gone", "keep"]
        assert store.runs("synopsis") == []
    else:
        assert _digest(path) == before
        assert store.runs("ablation") == ["gone", "keep"]
    np.testing.assert_array_equal(store.read("ablation", "keep", "x"), np.arange(4.0))
    assert store.read("ablation", "keep", "names") == ["a", "b"]
    # the dead writer's half-written copy is beside the file, hidden; the next change works
    assert len(list(tmp_path.glob(".c.h5.*.tmp"))) == 1
    assert [p.name for p in tmp_path.glob("*.h5")] == ["c.h5"]
    CHANGES[change](store)
    assert (
        store.runs("ablation")
        == {
            "write_run": ["gone", "keep", "new"],
            "commit_run": ["first", "gone", "keep"],
            "delete_run": ["keep"],
        }[change]
    )
    if change == "commit_run":
        assert store.runs("synopsis") == ["staged"]


def test_a_full_disk_during_a_delete_changes_nothing(tmp_path, monkeypatch):
    import engine.store.cache

    store = _filled(tmp_path / "c.h5")
    before = _digest(store.path)

    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine.store.cache, "_copy_without", enospc)
    with pytest.raises(UserError, match="No space left on device; nothing was changed"):
        store.delete_run("ablation", "gone")
    assert _digest(store.path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "engine.json"
    write_atomic(target, "première\n", mode=0o640)
    assert target.read_text(encoding="utf-8") == "première\n"
    assert target.stat().st_mode & 0o777 == 0o640
    write_atomic(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"

    def fails(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", fails)
    with pytest.raises(OSError, match="I/O error"):
        write_atomic(target, "new")
    assert target.read_bytes() == b"\x00bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["engine.json"]


def test_atomic_replace_leaves_the_file_alone_when_the_block_raises(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_replace(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_staged_folder_is_the_old_folder_or_the_whole_new_one(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with staged_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    with staged_folder(tmp_path / "copy", create=False) as tmp:
        assert not tmp.exists()
        tmp.mkdir()
        (tmp / "f").write_text("x")
    assert (tmp_path / "copy" / "f").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "data"]
