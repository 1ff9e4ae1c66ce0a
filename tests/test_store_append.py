"""Runs written batch by batch (engine.store.cache: append_run, commit_run): what lands in the cache
equals one write of the whole run, the staging file is private and goes away, a damaged one is
dropped, and a synopsis killed after a batch continues from its staging file."""

import numpy as np
import pytest

from engine.store.cache import Store


def _batches(k: int):
    rng = np.random.default_rng(k)
    return {
        "cross": rng.standard_normal((3, 4, 5)).astype(np.float16),
        "eval/spatial": rng.random(3) < 0.5,
    }


def test_appended_run_equals_one_write_of_the_whole_run(tmp_path):
    store = Store(tmp_path / "c.h5", "h" * 64)
    run = "synopsis-abc"
    whole = {k: np.concatenate([_batches(i)[k] for i in range(4)]) for k in _batches(0)}
    for i in range(4):
        store.append_run("synopsis", run, _batches(i), {"done": 3 * (i + 1)},
                         fixed={"prompts": ["a", "b"]} if i == 0 else None)  # fmt: skip
        assert not store.has_run("synopsis", run)  # staged only: readers see nothing yet
    staging = store.staging_path("synopsis", run)
    assert staging.is_file() and not staging.name.endswith(".h5")
    store.commit_run("synopsis", run, {"complete": True})
    assert not staging.exists()
    got = store.read("synopsis", run)
    for k, v in whole.items():
        np.testing.assert_array_equal(got[k], v)
    assert got["prompts"] == ["a", "b"]
    a = store.attrs("synopsis", run)
    assert a["done"] == 12 and a["complete"] is True and a["checkpoint_hash"] == "h" * 64


def test_a_damaged_staging_file_is_dropped(tmp_path):
    store = Store(tmp_path / "c.h5", "h" * 64)
    store.append_run("synopsis", "r", _batches(0), {"done": 3})
    path = store.staging_path("synopsis", "r")
    path.write_bytes(path.read_bytes()[:300])  # a writer killed mid-write
    assert store.read_staged("synopsis", "r") is None
    assert not path.exists()


@pytest.fixture(scope="module")
def ckpt(nano_ckpt):
    from engine.model.checkpoint import load_checkpoint

    return load_checkpoint(nano_ckpt)


def test_synopsis_killed_after_a_batch_continues_from_its_staging_file(ckpt, tmp_path):
    from engine.core.sampling import SamplingSettings
    from engine.data.prompts import parse_prompt
    from engine.probe.synopsis import run_synopsis

    prompts = [parse_prompt(t) for t in ("red circle above blue square",
                                         "blue triangle left of red circle")]  # fmt: skip
    kw = dict(n_per_prompt=2, sampling=SamplingSettings(steps=2, batch_size=2))
    whole = Store(tmp_path / "a.h5", ckpt.hash)
    run = run_synopsis(ckpt, prompts, store=whole, **kw)

    class Killed(BaseException):
        pass

    def kill_after_first(done, total):
        if done >= 2:
            raise Killed

    part = Store(tmp_path / "b.h5", ckpt.hash)
    part.commit_run = lambda *a, **k: None  # SIGKILL: nothing reaches the cache file
    with pytest.raises(Killed):
        run_synopsis(ckpt, prompts, store=part, progress=kill_after_first, **kw)
    del part.commit_run
    assert not part.has_run("synopsis", run)
    assert part.read_staged("synopsis", run)[1]["done"] == 2
    seen = []
    assert (
        run_synopsis(ckpt, prompts, store=part, progress=lambda d, t: seen.append(d), **kw) == run
    )
    assert seen[0] == 2  # continued after the staged batch, not from 0
    assert not part.staging_path("synopsis", run).exists()
    a, b = whole.read("synopsis", run), part.read("synopsis", run)
    assert a.keys() == b.keys()
    for k in a:
        if k != "prompts":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert part.attrs("synopsis", run)["complete"] is True
