"""Synopsis capture overhead: sampling with the attention synopsis against plain sampling.

Same model, prompts and seeds; the two are interleaved and repeated so machine load hits both
alike; medians reported. Also the bytes the synopsis stores per sample against storing the full
attention maps A[layer, step, cfg, head, 64, 20] in float32 (the paper's store).
Targets (issue 5): time <= 1.10x, bytes <= 1/50. The last line states the ratios.

    python benchmarks/synopsis_overhead.py [--preset micro] [--n 16] [--repeats 3]
    python benchmarks/synopsis_overhead.py --device cuda --preset mini --n 512   # GPU: no RSS
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.sampling import SamplingSettings  # noqa: E402
from engine.data.prompts import eval_prompts  # noqa: E402
from engine.model.checkpoint import Checkpoint  # noqa: E402
from engine.model.codec import build_codec  # noqa: E402
from engine.model.presets import build_transformer, get_preset  # noqa: E402
from engine.model.sampler import denoise, initial_noise  # noqa: E402
from engine.probe.hooks import hooked, schedule_timesteps  # noqa: E402
from engine.probe.synopsis import (  # noqa: E402
    CrossCapture,
    category_onehot,
    reduce_tokens,
    run_synopsis,
    soft_masks,
)
from engine.store.cache import Store  # noqa: E402
from engine.text import build_text_encoder  # noqa: E402


def make_checkpoint(preset: str, path: str | None, device: str = "cpu") -> Checkpoint:
    """A trained checkpoint (--checkpoint) or a random model of the preset, on `device`."""
    from engine.core.device import resolve_device

    if path:
        from engine.model.checkpoint import load_checkpoint

        return load_checkpoint(path, device=device)
    torch.manual_seed(0)
    codec = build_codec("pixel", 32)
    enc = build_text_encoder("rte", seed=0)
    tr = build_transformer(get_preset(preset), codec.channels, codec.latent_size,
                           codec.patch_size, enc.dim).eval()  # fmt: skip
    meta = {"hashes": {"transformer": "0" * 64}}
    return Checkpoint(Path(tempfile.mkdtemp()), meta, tr, enc, codec).to(resolve_device(device))


def sample(ck, texts, seeds, steps, capture: bool):
    enc, tr, codec = ck.text_encoder, ck.transformer, ck.codec
    n = len(texts)
    emb, mask = enc.encode(texts)
    null, null_mask = enc.encode([""])
    noise = initial_noise(texts, seeds, (codec.channels, codec.latent_size, codec.latent_size))
    sampling = SamplingSettings(steps=steps)
    args = (emb, mask, null.expand(n, -1, -1), null_mask.expand(n, -1), noise, sampling)
    if not capture:
        return codec.decode(denoise(tr, *args))
    cats = enc.tokenize([""]).categories * n + enc.tokenize(texts).categories
    cap = CrossCapture(category_onehot(cats), steps, ck.num_layers)
    with hooked(tr, [cap], schedule_timesteps(steps)):
        images = codec.decode(denoise(tr, *args))
    masks = soft_masks(images.numpy())
    mass = cap.array()
    both = np.stack([mass[:, :, :n], mass[:, :, n:]], axis=2)
    reduce_tokens(both, masks)
    return images


def timed(fn):
    t0 = time.perf_counter()
    out = fn().cpu()  # the images on the host: on CUDA, waits for the work to finish
    return time.perf_counter() - t0, out


def peak_rss(args, capture: bool) -> int:
    """Peak resident memory (bytes) of a fresh process that builds the model and samples once
    (torch's allocations are invisible to tracemalloc, so whole-process peaks are compared)."""
    cmd = [sys.executable, __file__, "--preset", args.preset, "--n", str(args.n), "--steps",
           str(args.steps), "--child", "capture" if capture else "plain"]  # fmt: skip
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="micro")
    ap.add_argument("--checkpoint", help="a trained checkpoint instead of a random preset")
    ap.add_argument("--n", type=int, default=16, help="prompts (one seed each)")
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    ap.add_argument("--child", choices=("plain", "capture"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    ck = make_checkpoint(args.preset, args.checkpoint, args.device)
    gpu = next(ck.transformer.parameters()).is_cuda
    if not gpu:
        torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    prompts = eval_prompts()[: args.n]
    texts, seeds = [p.text for p in prompts], [0] * len(prompts)
    if args.child:
        sample(ck, texts, seeds, args.steps, args.child == "capture")
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return
    times = {False: [], True: []}
    sample(ck, texts[:2], seeds[:2], 2, True)  # warm-up
    for _ in range(args.repeats):
        dt, plain = timed(lambda: sample(ck, texts, seeds, args.steps, False))
        times[False].append(dt)
        dt, captured = timed(lambda: sample(ck, texts, seeds, args.steps, True))
        times[True].append(dt)
        assert torch.equal(plain, captured), "capture changed the images"
    t_plain, t_cap = statistics.median(times[False]), statistics.median(times[True])
    # peak host memory of a child process: a CPU figure (on CUDA the model's memory is elsewhere)
    m_plain, m_cap = (1, 1) if gpu else (peak_rss(args, False), peak_rss(args, True))

    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "c.h5", ck.hash)
        run = run_synopsis(ck, prompts, 1, SamplingSettings(steps=args.steps), store, detail=0)
        with h5py.File(store.path) as f:
            g = f["synopsis"][run]
            stored = raw = 0
            for ds in [g["cross"], g["masks"], *g["eval"].values()]:
                stored += ds.id.get_storage_size()  # on disk, compressed
                raw += ds.size * ds.dtype.itemsize  # uncompressed: the conservative figure
    per_sample, raw_per_sample = stored / len(prompts), raw / len(prompts)
    L, H = ck.num_layers, ck.num_heads
    full = L * args.steps * 2 * H * 64 * 20 * 4
    print(f"model {args.checkpoint or args.preset} ({L} layers x {H} heads), {len(prompts)} prompts, "
          f"{args.steps} steps, {args.repeats} repeats, "
          f"{next(ck.transformer.parameters()).device if gpu else '1 thread'}")  # fmt: skip
    print(f"{'':24}{'plain':>12}{'synopsis':>12}{'ratio':>8}")
    print(f"{'time (s, median)':24}{t_plain:12.2f}{t_cap:12.2f}{t_cap / t_plain:8.3f}")
    print(f"{'peak memory (MiB)':24}{m_plain / 2**20:12.1f}{m_cap / 2**20:12.1f}"
          f"{m_cap / max(m_plain, 1):8.3f}")  # fmt: skip
    print(f"{'bytes/sample, raw':24}{full:12d}{raw_per_sample:12.0f}{raw_per_sample / full:8.4f}")
    print(f"{'bytes/sample, on disk':24}{'':12}{per_sample:12.0f}{per_sample / full:8.4f}")
    print(f"time {t_cap / t_plain:.3f}x, peak memory {m_cap / max(m_plain, 1):.2f}x, "
          f"bytes 1/{full / raw_per_sample:.0f} uncompressed (1/{full / per_sample:.0f} on disk) "
          "(targets: time <= 1.10x, bytes <= 1/50)")  # fmt: skip


if __name__ == "__main__":
    main()
