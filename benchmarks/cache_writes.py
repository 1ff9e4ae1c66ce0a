"""Cache write time per batch across a long synopsis-shaped run: appending to the run's staging
file (engine.store.cache.append_run, what the synopsis does) against rewriting the whole run each
batch (write_run, what it did before).

Each batch holds `--batch` samples of a micro model's synopsis rows (cross [14 steps, 6 layers,
2 branches, 3 heads, 3, 7] float16, masks, centres, eval flags; values drawn at random, so
compression is the worst case). Prints the median write time of the first and last 20 batches of
a `--batches` run (500 by default) and their ratio (target <= 1.5), and the old way's for its
first and `--old-batches`-th batches (the old way rewrites everything, so only a short run).

    python benchmarks/cache_writes.py [--batches 500] [--batch 8] [--old-batches 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.store.cache import Store

SHAPE = (14, 6, 2, 3, 3, 7)  # steps, layers, branches, heads, image cats, text cats (micro)


def batch_rows(rng, n: int) -> dict:
    return {
        "cross": rng.random((n, *SHAPE), dtype=np.float32).astype(np.float16),
        "masks": rng.random((n, 64, 3), dtype=np.float32).astype(np.float16),
        "color_centres": rng.random((n, 4), dtype=np.float32),
        **{f"eval/{m}": rng.random(n) < 0.5 for m in ("color", "shape", "spatial")},
    }


def appended(folder: Path, batches: int, n: int) -> list[float]:
    store, rng, times = Store(folder / "append.h5", "h" * 64), np.random.default_rng(0), []
    for i in range(batches):
        rows = batch_rows(rng, n)
        t0 = time.perf_counter()
        store.append_run("synopsis", "run", rows, {"done": (i + 1) * n})
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    store.commit_run("synopsis", "run", {"complete": True})
    print(f"commit at the end (one copy-on-write swap): {time.perf_counter() - t0:.3f} s")
    return times


def rewritten(folder: Path, batches: int, n: int) -> list[float]:
    store, rng, times, acc = (
        Store(folder / "rewrite.h5", "h" * 64),
        np.random.default_rng(0),
        [],
        {},
    )
    for i in range(batches):
        for k, v in batch_rows(rng, n).items():
            acc.setdefault(k, []).append(v)
        t0 = time.perf_counter()
        arrays = {k: np.concatenate(v) for k, v in acc.items()}
        store.write_run("synopsis", arrays, {"done": (i + 1) * n}, run="run", overwrite=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=500)
    ap.add_argument("--batch", type=int, default=8, help="samples per batch")
    ap.add_argument("--old-batches", type=int, default=60)
    a = ap.parse_args()
    k = 20
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as d:
        t = appended(Path(d), a.batches, a.batch)
        first, last = np.median(t[:k]) * 1e3, np.median(t[-k:]) * 1e3
        print(f"append: {a.batches} batches of {a.batch}: first {k} {first:.1f} ms/batch, "
              f"last {k} {last:.1f} ms/batch, ratio {last / first:.2f} (target <= 1.5)")  # fmt: skip
        if a.old_batches:
            o = rewritten(Path(d), a.old_batches, a.batch)
            of, ol = np.median(o[:k]) * 1e3, np.median(o[-k:]) * 1e3
            print(f"rewrite (before): {a.old_batches} batches: first {k} {of:.1f} ms/batch, "
                  f"last {k} {ol:.1f} ms/batch, ratio {ol / of:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
