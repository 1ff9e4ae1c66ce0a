"""Weight-space screening against the sampling-based synopsis ranking, same checkpoint, one run.

Screening: every cross-attention head x 8 relations (engine.probe.screening.screen_model: text
templates, caption projection, q.k products, scores), timed as the median of --repeats runs
on an already loaded model.

Synopsis: the smallest useful synopsis ranking, one prompt per relation (8) x 1 seed x 14
DPM-Solver++ steps with CFG 4.5, attention captured at every cross-attention call, then the
final images evaluated and turned into 8x8 object masks, and the [layer, head] relation->object1
score aggregated and ranked. It runs engine.probe.synopsis.run_synopsis and
engine.probe.ranking.rank_heads, exactly what `dit-workbench synopsis` + `heads` do.

Both are timed in the same process, on the same model; the synopsis runs on --threads torch
threads (default 1, its faster setting on a busy 2-core machine), screening on one.
Random weights are fine for timing (the images are noise, so the evaluator finds little; its
cost is included all the same).

    PYTHONPATH=. python benchmarks/screening_speed.py [--preset dit-b] [--prompts 8] [--steps 14]

The last line states the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def build(preset: str, text: str, res: int, seed: int = 0):
    from engine.model.codec import build_codec
    from engine.model.presets import build_transformer, get_preset
    from engine.text import build_text_encoder

    torch.manual_seed(seed)
    enc = build_text_encoder(text, seed=seed)
    codec = build_codec("pixel", res)
    tr = build_transformer(
        get_preset(preset), codec.channels, codec.latent_size, codec.patch_size, enc.dim
    )
    tr.eval().requires_grad_(False)
    return SimpleNamespace(transformer=tr, text_encoder=enc, codec=codec, meta={"text": text},
                           hash="0" * 64, num_layers=len(tr.transformer_blocks),
                           num_heads=tr.config.num_attention_heads)  # fmt: skip


def time_screening(ck, repeats: int) -> tuple[float, list[float]]:
    from engine.probe.screening import screen_model

    screen_model(ck.transformer, ck.text_encoder)  # warm-up (first-call allocations)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        s = screen_model(ck.transformer, ck.text_encoder)
        times.append(time.perf_counter() - t)
    assert s.scores["cosine"].shape[-1] == 8
    return statistics.median(times), times


def synopsis_prompts(n: int):
    """n prompts cycling through the 8 relations (first phrasing, colours named)."""
    from engine.data.prompts import eval_prompts
    from engine.data.relations import RELATIONS

    by_rel = {
        r: [p for p in eval_prompts() if p.relation == r and p.named_color1] for r in RELATIONS
    }
    return [by_rel[RELATIONS[i % 8]][i // 8 % len(by_rel[RELATIONS[i % 8]])] for i in range(n)]


def time_synopsis(ck, n_prompts: int, steps: int, cfg: float) -> float:
    """The real synopsis (engine.probe.synopsis.run_synopsis: sampling with capture, evaluation,
    object masks, reduction, storage) and its relation->object1 ranking, end to end."""
    import tempfile

    from engine.core.sampling import SamplingSettings
    from engine.probe.ranking import rank_heads
    from engine.probe.synopsis import run_synopsis
    from engine.store.cache import Store

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        store = Store(Path(d) / "c.h5", "0" * 64)
        sampling = SamplingSettings(steps=steps, cfg=cfg)
        run = run_synopsis(ck, synopsis_prompts(n_prompts), 1, sampling, store, detail=0)
        rows = rank_heads(store, run, "relation->object1")
        assert len(rows) == ck.num_layers * ck.num_heads
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="dit-b")
    ap.add_argument("--text", default="rte")
    ap.add_argument("--res", type=int, default=32, help="pixel codec resolution (8x8 grid)")
    ap.add_argument("--prompts", type=int, default=8, help="synopsis prompts (one per relation)")
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--cfg", type=float, default=4.5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the synopsis sampling (screening always uses 1). Default 1: on "
        "the 2-core development machine, with a training run on one core, 1 thread sampled "
        "4-5x faster than 2, so 1 is the fair (faster) synopsis.",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; building {args.preset} "
        f"(random weights), text {args.text}, pixel {args.res}px"
    )
    ck = build(args.preset, args.text, args.res)
    cfg = ck.transformer.config
    n_heads = cfg.num_layers * cfg.num_attention_heads
    screen_s, times = time_screening(ck, args.repeats)
    print(
        f"screening: {n_heads} heads x 8 relations: median {screen_s * 1000:.1f} ms "
        f"(runs: {', '.join(f'{t * 1000:.0f}' for t in times)} ms)"
    )
    syn_s = time_synopsis(ck, args.prompts, args.steps, args.cfg)
    print(
        f"synopsis ranking: {args.prompts} prompts x 1 seed x {args.steps} steps "
        f"(CFG {args.cfg}), attention captured, evaluated, ranked: {syn_s:.1f} s"
    )
    print(f"screening under 1 s: {'yes' if screen_s < 1 else 'no'} ({screen_s:.3f} s)")
    print(
        f"ratio: screening is {syn_s / screen_s:.0f}x faster than the smallest synopsis "
        f"ranking ({syn_s:.1f} s / {screen_s:.3f} s, {args.preset}, same process)"
    )


if __name__ == "__main__":
    main()
