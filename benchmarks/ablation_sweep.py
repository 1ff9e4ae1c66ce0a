"""Head sweep: one shared baseline (N + 1 sample sets) against the naive 2N sample sets.

A sweep over every head of a small model ("mask-head *.* tokens=relation" by default) with
`engine.intervene.ablate.run_sweep`, which samples and scores the baseline once, against the
naive loop that runs a separate baseline + intervention ablation per head (`run_ablation` with
no cache, 2 sample sets per head). Both sample the same (prompt, seed) pairs, so their delta
tables must agree exactly (checked). Times are wall-clock seconds in one process, including
the evaluator; the sweep goes first, each from an empty cache.

    PYTHONPATH=. python benchmarks/ablation_sweep.py [--ckpt DIR] [--n 4] [--steps 4]

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
    ap.add_argument("--n", type=int, default=4, help="(prompt, seed) samples")
    ap.add_argument("--steps", type=int, default=4, help="denoising steps")
    ap.add_argument("--resamples", type=int, default=500)
    args = ap.parse_args()

    import torch

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
    ckpt = load_checkpoint(path)
    prompts = eval_prompts()
    cells = expand_sweep(args.sweep, ckpt.num_layers, ckpt.num_heads, args.steps)
    heads = len(cells)
    kw = dict(n=args.n, seed=0, steps=args.steps, cfg=4.5, resamples=args.resamples)
    print(
        f"{ckpt.meta.get('preset')} checkpoint, {ckpt.num_layers} layers x {ckpt.num_heads} "
        f"heads; sweep {args.sweep!r} over {heads} heads; n={args.n} samples, "
        f"{args.steps} steps; {os.cpu_count()} CPU cores, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )

    t = time.perf_counter()
    store = Store(os.path.join(tmp.name, "cache.h5"), ckpt.hash)
    sweep = run_sweep(ckpt, args.sweep, prompts, store=store, **kw)
    t_sweep = time.perf_counter() - t
    print(f"sweep: {sweep['sample_sets']} sample sets in {t_sweep:.1f} s")

    t = time.perf_counter()
    naive = {}
    for layer, head, comp in cells:
        res = run_ablation(ckpt, [comp], prompts, store=None, **kw)
        naive[layer, head] = res["interventions"][0]["metrics"]
    t_naive = time.perf_counter() - t
    print(f"naive: {2 * heads} sample sets in {t_naive:.1f} s")

    mismatch = 0
    for r in sweep["cells"]:
        want = naive[r["layer"], r["head"]][r["metric"]]
        if not all(np.isclose(r[k], want[k]) for k in ("delta", "ci_low", "ci_high")):
            mismatch += 1
    print(
        f"delta tables agree: {mismatch == 0} "
        f"({len(sweep['cells'])} cells of {len(METRICS)} metrics, {mismatch} differ)"
    )
    print(
        f"sample sets: naive {2 * heads} / sweep {sweep['sample_sets']} = "
        f"{2 * heads / sweep['sample_sets']:.2f}x fewer"
    )
    print(
        f"head sweep over {heads} heads: {t_naive / t_sweep:.2f}x faster than the naive 2N "
        f"sample sets ({t_sweep:.1f} s vs {t_naive:.1f} s)"
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
