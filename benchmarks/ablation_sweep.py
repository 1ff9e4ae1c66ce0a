"""Head sweep: packed sample sets against one head at a time, and against the naive 2N sets.

A sweep over every head of a small model ("mask-head *.* tokens=relation" by default) with
`engine.intervene.ablate.run_sweep`, timed three ways on the same (prompt, seed) pairs:

1. packed (the default): several heads' sample sets share forward batches and the evaluator
   scores batch k in a worker thread while batch k + 1 samples;
2. one head at a time (`ablate.SWEEP` pack and overlap off): one head's sample set per batch,
   scored after it is sampled (the sweep before issue 17);
3. naive: a separate baseline + intervention `run_ablation` per head (2 sample sets per head).

1 and 2 reuse one cached baseline (sampled first, not timed), so their images/s count the
heads' images only (heads x n / seconds). Packed cells are compared with one-at-a-time cells
(on the CPU a packed row can differ by a pixel level, see docs/performance.md); 2 and 3 must
agree exactly. Wall-clock seconds in one process, evaluator included.

    PYTHONPATH=. python benchmarks/ablation_sweep.py [--ckpt DIR] [--n 8] [--steps 4] [--naive]
        [--device cuda]

Without --ckpt a 3-step `nano` checkpoint (3 layers x 3 heads) is trained into a temporary
folder first (not timed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="checkpoint (default: train a 3-step nano)")
    ap.add_argument("--sweep", default="mask-head *.* tokens=relation")
    ap.add_argument("--n", type=int, default=8, help="(prompt, seed) samples")
    ap.add_argument("--batch-size", type=int, default=32, help="run_sweep's batch_size")
    ap.add_argument("--naive", action="store_true", help="also time the naive 2N sample sets")
    ap.add_argument("--steps", type=int, default=4, help="denoising steps")
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each way")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    args = ap.parse_args()

    import torch

    from engine.core.sampling import SamplingSettings
    from engine.data.prompts import eval_prompts
    from engine.eval.evaluate import METRICS
    from engine.intervene.ablate import run_ablation, run_sweep
    from engine.intervene.spec import expand_sweep
    from engine.model.checkpoint import load_checkpoint
    from engine.store.cache import Store

    tmp = tempfile.TemporaryDirectory()
    path = args.ckpt
    if path is None:
        from engine.train.loop import TrainConfig, train

        path = os.path.join(tmp.name, "nano")
        cfg = TrainConfig(out=path, preset="nano", res=32, steps=3, batch=4, eval_every=3,
                          eval_prompts=2, eval_steps=2, n_train=64, log_every=1)  # fmt: skip
        train(cfg, progress=lambda rec: None)
    ckpt = load_checkpoint(path, device=args.device)
    prompts = eval_prompts()
    cells = expand_sweep(args.sweep, ckpt.num_layers, ckpt.num_heads, args.steps)
    heads = len(cells)
    sampling = SamplingSettings(steps=args.steps, batch_size=args.batch_size)
    kw = dict(n=args.n, sampling=sampling, resamples=args.resamples)
    from engine.intervene.sample import pack_rows

    pack = pack_rows(ckpt, sampling, [c for _, _, c in cells])
    print(
        f"{ckpt.meta.get('preset')} checkpoint on {ckpt.transformer.device}, {ckpt.num_layers} "
        f"layers x {ckpt.num_heads} heads; sweep {args.sweep!r} over {heads} heads; n={args.n} "
        f"samples, {args.steps} steps, batch {args.batch_size}, packed batch {pack}; "
        f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, load average "
        f"{os.getloadavg()[0]:.2f}"
    )

    from engine.intervene import ablate

    store = Store(os.path.join(tmp.name, "cache.h5"), ckpt.hash)
    base = ablate._Context(ckpt, prompts, args.n, sampling, store, None, "eval").baseline()
    print(f"baseline: {args.n} images sampled and cached (not timed): {base[0]}")
    images = heads * args.n
    timed = {}
    for rep in range(args.repeat):  # alternated, best of each: the machine's load drifts
        for name, mode in (("packed", True), ("one head at a time", False)):
            ablate.SWEEP.update(pack=mode, overlap=mode)
            t = time.perf_counter()
            res = run_sweep(ckpt, args.sweep, prompts, store=store, **kw)
            sec = time.perf_counter() - t
            assert res["baseline_reused"]
            print(f"  run {rep + 1} {name}: {sec:.2f} s")
            if name not in timed or sec < timed[name][0]:
                timed[name] = (sec, res)
    for name, (sec, _) in timed.items():
        print(f"{name}: {images} images in {sec:.2f} s = {images / sec:.2f} images/s (best)")
    ablate.SWEEP.update(pack=True, overlap=True)
    (t_packed, packed), (t_one, one) = timed["packed"], timed["one head at a time"]
    keys = ("delta", "ci_low", "ci_high")
    same = sum(
        all(a[k] == b[k] for k in keys) for a, b in zip(packed["cells"], one["cells"], strict=True)
    )
    print(f"packed cells equal to one-at-a-time cells: {same} of {len(one['cells'])}")
    print(
        f"packed / one head at a time: {t_one / t_packed:.2f}x images/s "
        f"({images / t_packed:.2f} vs {images / t_one:.2f})"
    )

    if args.naive:
        t = time.perf_counter()
        naive = {}
        for layer, head, comp in cells:
            res = run_ablation(ckpt, [comp], prompts, store=None, **kw)
            naive[layer, head] = res["interventions"][0]["metrics"]
        t_naive = time.perf_counter() - t
        print(f"naive: {2 * heads} sample sets in {t_naive:.1f} s")
        mismatch = 0
        for r in one["cells"]:
            want = naive[r["layer"], r["head"]][r["metric"]]
            if not all(np.isclose(r[k], want[k]) for k in keys):
                mismatch += 1
        print(
            f"one-at-a-time and naive delta tables agree: {mismatch == 0} "
            f"({len(one['cells'])} cells of {len(METRICS)} metrics, {mismatch} differ)"
        )
        print(
            f"head sweep over {heads} heads: {t_naive / t_packed:.2f}x faster packed, "
            f"{t_naive / t_one:.2f}x one at a time, than the naive 2N sample sets"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
