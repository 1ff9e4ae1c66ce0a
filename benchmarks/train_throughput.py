"""Training throughput of our loop against a minimal plain loop on the same diffusers model.

For each preset: img/s of `engine.train.train` (accelerate, EMA, caption dropout, data
pipeline) measured between its step logs after warm-up, and img/s of a bare loop (random
tensors, forward, MSE, backward, AdamW) on an identical PixArtTransformer2DModel and batch.
Also sampling img/s (DPM-Solver++ 14 steps, CFG) on the trained checkpoint. One run, one table;
the last line states the ratios.

    python benchmarks/train_throughput.py [--presets nano,micro,mini] [--batch 32] [--steps 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from engine.model.checkpoint import load_checkpoint
from engine.model.presets import build_transformer, get_preset
from engine.model.sampler import model_kwargs, sample_images
from engine.train import TrainConfig, train


def ours(preset: str, batch: int, steps: int, warm: int, res: int) -> tuple[float, str]:
    times: dict[int, float] = {}

    def on(rec):
        if "loss" in rec:
            times[rec["step"]] = time.perf_counter()

    out = tempfile.mkdtemp(prefix="bench-train-") + "/run"
    cfg = TrainConfig(
        out=out,
        preset=preset,
        res=res,
        steps=steps,
        batch=batch,
        eval_every=steps,
        eval_prompts=8,
        n_train=2000,
        log_every=1,
    )
    train(cfg, progress=on)
    return (steps - warm) * batch / (times[steps] - times[warm]), out


def plain(preset: str, batch: int, steps: int, warm: int, res: int, text_dim: int = 384) -> float:
    torch.manual_seed(0)
    model = build_transformer(get_preset(preset), 3, res, res // 8, text_dim).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.03)
    x = torch.randn(batch, 3, res, res)
    ctx = torch.randn(batch, 20, text_dim)
    mask = torch.ones(batch, 20)
    t = torch.randint(0, 1000, (batch,))
    for i in range(steps):
        if i == warm:
            t0 = time.perf_counter()
        pred = model(
            x,
            encoder_hidden_states=ctx,
            encoder_attention_mask=mask,
            timestep=t,
            **model_kwargs(),
            return_dict=False,
        )[0]
        loss = F.mse_loss(pred, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (steps - warm) * batch / (time.perf_counter() - t0)


def sampling(run: str, n: int = 32) -> float:
    ck = load_checkpoint(run)
    texts = ["red square is above blue circle"] * n
    sample_images(ck, texts[:2], [0, 1], steps=2)  # warm-up
    t0 = time.perf_counter()
    sample_images(ck, texts, list(range(n)), steps=14, cfg=4.5, batch_size=n)
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="nano,micro,mini")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--res", type=int, default=32)
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {device}; batch {a.batch}; res {a.res}; {a.steps - a.warm} timed steps")
    print(f"{'preset':8} {'ours img/s':>11} {'plain img/s':>12} {'ratio':>6} {'sample img/s':>13}")
    ratios = []
    for p in a.presets.split(","):
        o, run = ours(p, a.batch, a.steps, a.warm, a.res)
        b = plain(p, a.batch, a.steps, a.warm, a.res)
        s = sampling(run)
        ratios.append((p, o / b))
        print(f"{p:8} {o:11.1f} {b:12.1f} {o / b:6.3f} {s:13.1f}")
    print("ratios ours/plain (target >= 0.95): " + ", ".join(f"{p} {r:.3f}" for p, r in ratios))


if __name__ == "__main__":
    main()
