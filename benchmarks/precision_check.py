"""bf16 autocast against float32 inference: the evaluator's metrics on the same seeds.

Samples the evaluation prompts (`--n-per-prompt` seeds each) twice on one CUDA device, once
under bf16 autocast (what every command uses on CUDA) and once in float32, evaluates both image
sets and prints per metric both rates, the paired difference with a 95% bootstrap interval
(resampling samples) and how many samples flip either way. "Within noise" means the interval
holds 0. Also the images/s of each precision and the share of images that are bit-identical.

    python benchmarks/precision_check.py --checkpoint checkpoints/mini-rte [--n-per-prompt 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from engine.core import device as D
from engine.core.sampling import SamplingSettings
from engine.data.prompts import eval_prompts
from engine.eval.evaluate import METRICS, evaluate_arrays
from engine.model.checkpoint import load_checkpoint
from engine.model.sampler import sample_images


def run(ck, texts, seeds, precision: str, batch: int) -> tuple[np.ndarray, float]:
    D.INFERENCE_PRECISION["cuda"] = precision
    sample_images(ck, texts[:2], seeds[:2], sampling=SamplingSettings(steps=2))  # warm-up
    t0 = time.perf_counter()
    imgs = sample_images(ck, texts, seeds, SamplingSettings(batch_size=batch)).numpy()
    return imgs, len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n-per-prompt", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument(
        "--limit", type=int, default=None, help="only the first N prompts (a quick try)"
    )
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    ck = load_checkpoint(a.checkpoint, device=a.device)
    prompts = [p for p in eval_prompts()[: a.limit] for _ in range(a.n_per_prompt)]
    texts = [p.text for p in prompts]
    seeds = [k % a.n_per_prompt for k in range(len(prompts))]
    imgs, rate, res = {}, {}, {}
    for prec in ("bf16", "fp32"):
        imgs[prec], rate[prec] = run(ck, texts, seeds, prec, a.batch_size)
        res[prec] = evaluate_arrays(imgs[prec], prompts)
    D.INFERENCE_PRECISION["cuda"] = "bf16"
    same = float(
        np.mean([np.array_equal(x, y) for x, y in zip(imgs["bf16"], imgs["fp32"], strict=True)])
    )
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(prompts), (a.resamples, len(prompts)))
    rows = []
    print(f"{a.checkpoint} on {ck.transformer.device}: {len(prompts)} samples, 14 steps, CFG 4.5")
    print(f"{'metric':16}{'fp32':>8}{'bf16':>8}{'delta':>9}{'95% CI':>18}{'lost':>6}{'gained':>7}")
    for m in METRICS:
        f = np.array([bool(r[m]) for r in res["fp32"].per_image])
        b = np.array([bool(r[m]) for r in res["bf16"].per_image])
        d = (b.astype(float) - f)[idx].mean(axis=1)
        lo, hi = np.percentile(d, [2.5, 97.5])
        row = {"metric": m, "fp32": f.mean(), "bf16": b.mean(), "delta": b.mean() - f.mean(),
               "ci_low": lo, "ci_high": hi, "lost": int((f & ~b).sum()),
               "gained": int((~f & b).sum())}  # fmt: skip
        rows.append({k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()})
        print(f"{m:16}{row['fp32']:8.3f}{row['bf16']:8.3f}{row['delta']:+9.3f}"
              f"{f'[{lo:+.3f}, {hi:+.3f}]':>18}{row['lost']:6d}{row['gained']:7d}")  # fmt: skip
    inside = all(r["ci_low"] <= 0 <= r["ci_high"] for r in rows)
    print(f"images/s: bf16 {rate['bf16']:.0f}, fp32 {rate['fp32']:.0f}; bit-identical images "
          f"{same:.1%}; every interval holds 0: {'yes' if inside else 'NO'}")  # fmt: skip
    if a.json:
        out = {"checkpoint": a.checkpoint, "device": str(ck.transformer.device),
               "n": len(prompts), "img_per_s": rate, "identical": same, "within_noise": inside,
               "rows": rows}  # fmt: skip
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
