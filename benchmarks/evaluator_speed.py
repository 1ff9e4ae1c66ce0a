"""Evaluator throughput: images/s on in-memory 128x128 renders, ours against a plain baseline.

The baseline is the straightforward evaluator one would write first: per image and per colour,
threshold with cv2.inRange, cv2.findContours, classify each contour by cv2.approxPolyDP's
vertex count (3 triangle, 4 square, else circle), centre from its moments; then the same
scoring. Both run in the same process on the same images; each is timed as the best of
--repeats runs, so a busy machine penalises both alike. The baseline's accuracy is printed
too: it has no notion of occlusion.

    PYTHONPATH=. python benchmarks/evaluator_speed.py [--n 2000] [--size 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np

from engine.data.prompts import parse_prompt
from engine.data.render import render_batch
from engine.data.scenes import CANVAS, sample_scenes
from engine.eval.detect import Detection
from engine.eval.evaluate import evaluate_arrays, score

_RANGES = {"red": ((150, 0, 0), (255, 90, 90)), "blue": ((0, 0, 150), (90, 90, 255))}


def baseline_detect(image: np.ndarray) -> list[Detection]:
    f = CANVAS / image.shape[1]
    out = []
    for color, (lo, hi) in _RANGES.items():
        mask = cv2.inRange(image, lo, hi)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            m = cv2.moments(c)
            if m["m00"] < 20 / f**2:
                continue
            approx = cv2.approxPolyDP(c, 0.04 * cv2.arcLength(c, True), True)
            shape = {3: "triangle", 4: "square"}.get(len(approx), "circle")
            cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
            out.append(Detection(color, shape, (cx + 0.5) * f, (cy + 0.5) * f, m["m00"] * f * f))
    return out


def baseline_evaluate(images, prompts) -> dict[str, float]:
    rows = [score(p, baseline_detect(img)) for img, p in zip(images, prompts, strict=True)]
    return {m: sum(r[m] for r in rows) / len(rows) for m in rows[0]}


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args()

    scenes = sample_scenes(args.n, seed=args.seed)
    images = render_batch(scenes, args.size)
    prompts = [parse_prompt(s.caption) for s in scenes]
    print(
        f"{args.n} renders at {args.size} px, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.2f} (other work on the machine slows both)"
    )

    evaluate_arrays(images[:64], prompts[:64])  # warm-up: template caches, thread pool
    t_ours, ours = best_time(lambda: evaluate_arrays(images, prompts), args.repeats)
    t_base, base = best_time(lambda: baseline_evaluate(images, prompts), args.repeats)
    rate_ours, rate_base = args.n / t_ours, args.n / t_base

    width = max(len(m) for m in ours.metrics)
    print(f"{'metric':<{width}}  {'ours':>7}  {'baseline':>8}")
    for m, v in ours.metrics.items():
        print(f"{m:<{width}}  {v:7.4f}  {base[m]:8.4f}")
    print(f"ours:     {rate_ours:8.0f} images/s ({t_ours:.3f} s for {args.n})")
    print(f"baseline: {rate_base:8.0f} images/s ({t_base:.3f} s for {args.n})")
    print(
        f"evaluator {rate_ours:.0f} images/s vs per-image findContours+approxPolyDP baseline "
        f"{rate_base:.0f} images/s: {rate_ours / rate_base:.2f}x, overall accuracy "
        f"{ours.metrics['overall']:.4f} vs {base['overall']:.4f} "
        f"({args.n} x {args.size} px, best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
