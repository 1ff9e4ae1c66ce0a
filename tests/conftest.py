"""Shared fixtures: one tiny trained checkpoint for every test module that needs a model, and
engine daemons that are stopped when their test ends."""

import os
import shutil

import engine_process
import pytest

# Each xdist worker, and every engine or CLI process it starts, gets its share of the cores:
# torch otherwise runs one thread per core in every worker and they spin against each other.
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


@pytest.fixture(scope="session")
def nano_ckpt(tmp_path_factory):
    """A 3-step `nano` checkpoint (rte, pixel 32 px): the issues' "3-step nano checkpoint".

    Returns the run folder; `load_checkpoint` follows its `latest` link.
    """
    from engine.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("nano") / "run"
    cfg = TrainConfig(
        out=str(out),
        preset="nano",
        res=32,
        steps=3,
        batch=4,
        eval_every=3,
        eval_prompts=2,
        eval_steps=2,
        n_train=64,
        log_every=1,
    )
    train(cfg, progress=lambda rec: None)
    return out


@pytest.fixture
def short_tmp():
    """A folder under /tmp for engine caches (socket paths allow 107 bytes), removed after."""
    d = engine_process.short_tmp()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start_engine():
    """`start_engine(cache, *server_args)` -> a running `Engine`; every engine started through
    it is stopped when the test ends, passed or failed."""
    started: list[engine_process.Engine] = []

    def start(cache, *args: str) -> engine_process.Engine:
        started.append(engine_process.Engine(cache, *args))
        return started[-1]

    yield start
    for e in started:
        e.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """For `--dist loadgroup`: the tests that share a module-scoped fixture (an engine, a world of
    checkpoints and caches) run on one worker, in file order, so it is built once; every other
    test is handed out on its own, which keeps both workers busy to the end."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info else ()
        # the last definition of a name is the one in force (an override comes last)
        if any(fdefs[-1].scope in ("class", "module", "package") for fdefs in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
