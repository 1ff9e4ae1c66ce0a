"""Shared fixtures: one tiny trained checkpoint for every test module that needs a model."""

import pytest

from engine.train.loop import TrainConfig, train


@pytest.fixture(scope="session")
def nano_ckpt(tmp_path_factory):
    """A 3-step `nano` checkpoint (rte, pixel 32 px): the issues' "3-step nano checkpoint".

    Returns the run folder; `load_checkpoint` follows its `latest` link.
    """
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
