"""Training throughput of our loop against a minimal plain loop on the same diffusers model.

For each preset: img/s of `engine.train.loop.train` (accelerate, EMA, caption dropout, data
pipeline) measured between its step logs after warm-up, and img/s of a bare loop (random
tensors on the device, forward, MSE, backward, AdamW; bf16 autocast on CUDA as ours) on an
identical PixArtTransformer2DModel and batch. Also sampling img/s (DPM-Solver++ 14 steps, CFG)
on the trained checkpoint, and the model FLOP utilisation: FLOPs per image (forward and
backward, counted by torch's FlopCounterMode) x our img/s / the matmul rate measured in the
same run (bf16 8192^3 products on CUDA, float32 2048^3 on the CPU). One run, one table; the last
lines state the ratios.

    python benchmarks/train_throughput.py [--presets nano,micro,mini] [--batch 32] [--steps 30]
    python benchmarks/train_throughput.py --device cuda --presets mini   # batch 512, 110 steps
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.core.device import inference_autocast, resolve_device
from engine.core.sampling import SamplingSettings
from engine.model.checkpoint import load_checkpoint
from engine.model.presets import build_transformer, get_preset
from engine.model.sampler import model_kwargs, sample_images
from engine.train.loop import TrainConfig, train


def ours(
    preset: str, batch: int, steps: int, warm: int, res: int, device: str, compile: bool
) -> tuple[float, str]:
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
        log_every=math.gcd(warm, steps),  # logs (host syncs) only where they are timed
        device=device,
        mixed_precision="bf16" if device.startswith("cuda") else "no",
        compile=compile,
    )
    train(cfg, progress=on)
    return (steps - warm) * batch / (times[steps] - times[warm]), out


def _plain_setup(preset: str, batch: int, res: int, dev, text_dim: int = 384):
    torch.manual_seed(0)
    model = build_transformer(get_preset(preset), 3, res, res // 8, text_dim).train().to(dev)
    x = torch.randn(batch, 3, res, res, device=dev)
    ctx = torch.randn(batch, 20, text_dim, device=dev)
    mask = torch.ones(batch, 20, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)
    return model, x, ctx, mask, t


def _step(model, x, ctx, mask, t, dev):
    with inference_autocast(dev) if dev.type == "cuda" else contextlib.nullcontext():
        pred = model(
            x,
            encoder_hidden_states=ctx,
            encoder_attention_mask=mask,
            timestep=t,
            **model_kwargs(),
            return_dict=False,
        )[0]
    loss = F.mse_loss(pred.float(), x)
    loss.backward()
    return loss


def plain(preset: str, batch: int, steps: int, warm: int, res: int, dev) -> float:
    model, x, ctx, mask, t = _plain_setup(preset, batch, res, dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.03)
    for i in range(steps):
        if i == warm:
            _sync(dev)
            t0 = time.perf_counter()
        _step(model, x, ctx, mask, t, dev)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(dev)
    return (steps - warm) * batch / (time.perf_counter() - t0)


def flops_per_image(preset: str, res: int, dev, batch: int = 8) -> float:
    """Forward + backward FLOPs of one training image (matmuls and attention, as torch counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    model, x, ctx, mask, t = _plain_setup(preset, batch, res, dev)
    with FlopCounterMode(display=False) as fc:
        _step(model, x, ctx, mask, t, dev)
    return fc.get_total_flops() / batch


def matmul_rate(dev) -> tuple[float, str]:
    """Measured dense matmul FLOP/s: bf16 8192^3 on CUDA, float32 2048^3 on the CPU."""
    n, dtype, what = (
        (8192, torch.bfloat16, "bf16") if dev.type == "cuda" else (2048, torch.float32, "fp32")
    )
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    reps = 50 if dev.type == "cuda" else 3
    a @ b
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(dev)
    return 2 * n**3 * reps / (time.perf_counter() - t0), what


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def sampling(run: str, dev, n: int) -> float:
    ck = load_checkpoint(run, device=str(dev))
    texts = ["red square is above blue circle"] * n
    sample_images(ck, texts[:2], [0, 1], sampling=SamplingSettings(steps=2))  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    sample_images(ck, texts, list(range(n)), SamplingSettings(batch_size=min(n, 1024)))
    _sync(dev)
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="nano,micro,mini")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--batch", type=int, default=None, help="default 32 on CPU, 512 on CUDA")
    ap.add_argument("--steps", type=int, default=None, help="default 30 on CPU, 110 on CUDA")
    ap.add_argument("--warm", type=int, default=None, help="default 5 on CPU, 10 on CUDA")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--sample-n", type=int, default=None, help="default 32 CPU, 4096 CUDA")
    ap.add_argument("--compile", action="store_true", help="our loop with torch.compile")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    dev = resolve_device(a.device)
    gpu = dev.type == "cuda"
    batch = a.batch or (512 if gpu else 32)
    steps, warm = a.steps or (110 if gpu else 30), a.warm or (10 if gpu else 5)
    sample_n = a.sample_n or (4096 if gpu else 32)
    name = torch.cuda.get_device_name(dev) if gpu else f"{torch.get_num_threads()} threads"
    rate, what = matmul_rate(dev)
    print(f"device: {dev} ({name}); batch {batch}; res {a.res}; {steps - warm} timed steps; "
          f"measured {what} matmul rate {rate / 1e12:.2f} TFLOP/s")  # fmt: skip
    print(f"{'preset':8} {'ours img/s':>11} {'plain img/s':>12} {'ratio':>6} {'GFLOP/img':>10} "
          f"{'MFU':>6} {'sample img/s':>13}")  # fmt: skip
    rows = []
    for p in a.presets.split(","):
        o, run = ours(p, batch, steps, warm, a.res, str(dev), a.compile)
        b = plain(p, batch, steps, warm, a.res, dev)
        f = flops_per_image(p, a.res, dev)
        s = sampling(run, dev, sample_n)
        mfu = f * o / rate
        rows.append({"preset": p, "ours_img_s": o, "plain_img_s": b, "ratio": o / b,
                     "gflop_per_image": f / 1e9, "mfu": mfu, "sample_img_s": s})  # fmt: skip
        print(f"{p:8} {o:11.1f} {b:12.1f} {o / b:6.3f} {f / 1e9:10.2f} {mfu:6.1%} {s:13.1f}")
    print(
        "ratios ours/plain (target >= 0.95): "
        + ", ".join(f"{r['preset']} {r['ratio']:.3f}" for r in rows)
    )
    if a.json:
        info = {"device": str(dev), "name": name, "batch": batch, "res": a.res,
                "timed_steps": steps - warm, "matmul_tflops": rate / 1e12, "matmul_dtype": what,
                "compile": a.compile, "rows": rows}  # fmt: skip
        Path(a.json).write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
