"""The GPU-minded training loop (engine/train/loop.py): its EMA against diffusers' EMAModel, and on
CUDA (marked `gpu`, skipped without it) a short run that checkpoints and resumes on the device."""

from __future__ import annotations

import json

import pytest
import torch

CUDA = torch.cuda.is_available()


def test_foreach_ema_matches_diffusers_emamodel_with_warmup():
    from diffusers.training_utils import EMAModel

    from engine.train.state import EMA

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    ours = EMA(params, 0.999)
    ref = EMAModel(params, decay=0.999, use_ema_warmup=True)
    for _ in range(8):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        ours.step(params)
        ref.step(params)
        for a, b in zip(ours.shadow_params, ref.shadow_params, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert ours.optimization_step == ref.optimization_step == 8
    shadow = [torch.nn.Parameter(torch.zeros_like(p)) for p in params]
    ours.copy_to(shadow)
    assert all(torch.equal(s, e) for s, e in zip(shadow, ours.shadow_params, strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_gpu_training_checkpoints_and_resumes_on_the_device(tmp_path):
    from safetensors.torch import load_file

    from engine.train.loop import TrainConfig, train

    kw = dict(preset="nano", res=32, batch=8, eval_every=2, eval_prompts=2, eval_steps=2,
              n_train=64, log_every=1, device="cuda", mixed_precision="bf16")  # fmt: skip
    logs = []
    train(TrainConfig(out=str(tmp_path / "a"), steps=2, **kw), progress=logs.append)
    train(TrainConfig(out=str(tmp_path / "a"), steps=4, **kw), resume=True, progress=logs.append)
    state = (tmp_path / "a" / "latest").resolve() / "train_state"
    assert json.loads((state / "state.json").read_text())["step"] == 4
    assert load_file(state / "rng.safetensors")["noise"].numel() < 100  # CUDA philox, not mt19937
    losses = [r["loss"] for r in logs if "loss" in r]
    assert len(losses) == 4 and all(0 < x < 10 for x in losses)


def test_checkpoint_scores_run_beside_training_and_land_in_step_order(tmp_path, monkeypatch):
    """The eval images' CPU scoring runs on a thread: flush(wait=False) never blocks on it,
    the metrics lines come out in step order, and a failed evaluation is a line, not a crash."""
    import threading

    from engine.train import loop

    release = threading.Event()

    def slow_score(images, eval_set):
        release.wait(10)
        return {"spatial": float(images.sum()), "score_s": 0.5}

    monkeypatch.setattr(loop, "_score", slow_score)
    emitted, path = [], tmp_path / "metrics.jsonl"
    scores = loop._DeferredScores(path, emitted.append, batch=8, eval_set=[None, None])
    scores.submit(10, torch.ones(2).numpy(), 0.25, None)
    scores.flush(wait=False)  # still scoring: returns at once, nothing written
    assert not path.exists() and not emitted
    release.set()
    scores.submit(20, None, 0.1, "RuntimeError: out of memory")  # waits for step 10 first
    scores.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [m["step"] for m in lines] == [10, 20] == [e["step"] for e in emitted]
    assert lines[0]["spatial"] == 2.0 and lines[0]["eval_s"] == 0.75
    assert lines[0]["images_seen"] == 80 and lines[0]["eval_n"] == 2
    assert lines[1]["eval_error"] == "RuntimeError: out of memory" and "spatial" not in lines[1]
    assert all(e["event"] == "checkpoint" for e in emitted)


@pytest.mark.slow
def test_compile_trains_like_eager_and_saves_plain_weights(tmp_path):
    """`--compile` wraps only the forward: same losses as eager (to float tolerance), and the
    checkpoint holds the plain module's weights (no `_orig_mod.` prefix), loadable as usual."""
    from safetensors.torch import load_file

    from engine.model.checkpoint import load_checkpoint
    from engine.train.loop import TrainConfig, train

    kw = dict(preset="nano", res=32, batch=4, steps=2, eval_every=2, eval_prompts=2,
              eval_steps=1, n_train=16, log_every=1, device="cpu")  # fmt: skip
    losses = {}
    for compiled in (False, True):
        logs = []
        out = tmp_path / f"c{int(compiled)}"
        train(TrainConfig(out=str(out), compile=compiled, **kw), progress=logs.append)
        losses[compiled] = [r["loss"] for r in logs if "loss" in r]
        weights = (out / "latest").resolve() / "transformer" / "diffusion_pytorch_model.safetensors"
        assert not any(k.startswith("_orig_mod.") for k in load_file(weights))
        load_checkpoint(out / "latest")
    assert len(losses[True]) == 2
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
