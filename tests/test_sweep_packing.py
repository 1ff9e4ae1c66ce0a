"""Packed sweeps: several heads' sample sets in one forward batch, scoring overlapped with
sampling, the packed batch size from free memory (issue 17, item 3).

Tolerance. On the CPU a row's float32 result depends on how many rows its matmuls hold (the
GEMM kernels block rows differently), so the same (prompt, seed) can differ by one level in a
few pixels between batch sizes; tests/test_model.py allows the plain sampler exactly that.
A packed set shares batches of another size than the set sampled alone, so its images are held
to that bound, and to bit equality wherever the batches are the same.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from engine.core.sampling import SamplingSettings
from engine.data.prompts import parse_prompt
from engine.intervene import ablate
from engine.intervene import sample as sample_mod
from engine.intervene.base import Batch, Composite
from engine.intervene.sample import (
    _Path,
    attention_path,
    pack_rows,
    plan_packs,
    sample_intervened,
    sample_packed,
)
from engine.intervene.spec import parse_spec

STEPS = 2
SAMPLING = SamplingSettings(steps=STEPS)
TEXTS = [
    "red square is above blue circle",
    "triangle is to the left of circle",
    "circle",  # no relation word: its chunk's head masks install nothing
    "blue circle is below red triangle",
    "square is to the right of triangle",
]
SEEDS = [0, 1, 2, 3, 4]
SOURCE = "triangle is below circle"
PROMPTS = [parse_prompt(t) for t in TEXTS if t != "circle"]  # what the evaluator can read


@pytest.fixture(scope="module")
def ckpt(nano_ckpt):
    from engine.model.checkpoint import load_checkpoint

    return load_checkpoint(nano_ckpt)


def _spec(ckpt, text):
    return parse_spec(text, ckpt.num_layers, ckpt.num_heads, STEPS)


def _by_set(ckpt, comps, batch_size, pack, texts=TEXTS):
    """Each set's images [N, H, W, 3] assembled from sample_packed's forward batches."""
    rows = {i: [None] * len(texts) for i in range(len(comps))}
    batches = sample_packed(ckpt, comps, texts, SEEDS, SAMPLING.with_batch_size(batch_size), pack)
    for pieces, images in batches:
        assert len(images) == sum(p.size for p in pieces)
        r = 0
        for p in pieces:
            for k in range(p.start, p.stop):
                assert rows[p.set][k] is None  # every sample of every set sampled once
                rows[p.set][k] = images[r]
                r += 1
    return {i: torch.stack(v) for i, v in rows.items()}


def test_packed_sets_match_each_set_alone(ckpt):
    specs = [
        "mask-head 1.2 tokens=relation",
        "zero-head 2.0",
        "zero-head 1.1 attn=self branch=uncond",
        f'patch 1.0 from="{SOURCE}" branch=both',
        'embed-add "+above -below" + mask-head 2.2 tokens=shape1 branch=both',
    ]
    comps = [_spec(ckpt, s) for s in specs]
    texts = [t for t in TEXTS if t != "circle"] + ["circle"]  # "circle" alone in the last chunk
    plan = plan_packs(ckpt, comps, texts, SAMPLING.with_batch_size(2), 3)
    assert max(len({p.set for p in pieces}) for _, pieces in plan) > 1  # sets share batches
    assert all(sum(p.size for p in pieces) <= 3 for _, pieces in plan)
    # the mask's chunk of "circle" alone installs no hook: it goes with the unhooked sets
    masked = [path for path, pieces in plan if any(p.set == 0 for p in pieces)]
    assert frozenset() in masked and any(masked)
    by_two = SAMPLING.with_batch_size(2)
    alone = {i: sample_intervened(ckpt, c, texts, SEEDS, by_two)[0] for i, c in enumerate(comps)}
    packed = _by_set(ckpt, comps, 2, 3, texts)
    for i, spec in enumerate(specs):
        diff = (packed[i].int() - alone[i].int()).abs()
        assert diff.max() <= 1, spec  # batches of 3 rows against 2: see the module doc
        assert (diff > 0).float().mean() < 0.01, spec
    # one set per batch of its own chunk's size: bit for bit
    same = _by_set(ckpt, comps[:2], len(texts), len(texts), texts)
    for i in range(2):
        at_once = SAMPLING.with_batch_size(len(texts))
        whole = sample_intervened(ckpt, comps[i], texts, SEEDS, at_once)[0]
        assert torch.equal(same[i], whole), specs[i]


@pytest.mark.parametrize(
    "spec",
    [
        "zero-head 1.1 branch=both",
        "zero-head 0.2 attn=self branch=uncond",
        "mask-head 0.1 tokens=relation branch=both",
        "mask-head 2.0 tokens=filler branch=uncond",  # the null caption is one filler
        f'patch 1.0 from="{SOURCE}" branch=both',
        f'patch 0.2 from="{SOURCE}" what=probs attn=self',
        'embed-add "+above -below" scale=3',
    ],
)
def test_intervention_on_rows_lo_hi_leaves_other_rows_alone(ckpt, spec):
    """Rows [1, 3) of a 4-row batch intervened, in both CFG halves where the branch says so:
    rows 0 and 3 are exactly the unmodified model's (same batch, same attention path)."""
    comp = _spec(ckpt, spec)
    enc, tr = ckpt.text_encoder, ckpt.transformer
    texts, seeds = TEXTS[:1] + TEXTS[3:] + TEXTS[:1], [5, 6, 7, 8]
    c, s = ckpt.codec, ckpt.codec.latent_size
    x0 = sample_mod.initial_noise(texts, seeds, (c.channels, s, s))
    null, null_mask = enc.encode([""])
    emb, mask = enc.encode(texts)
    steps = sample_mod.schedule_timesteps(STEPS, tr)
    batch = Batch(texts, texts, enc.tokenize(texts), enc.tokenize([""]), enc, STEPS, x0, 1, 3)
    sample_mod._record_packed(ckpt, [comp], [sample_mod.Piece(0, 0, 4)], batch, null,
                              null_mask, steps, SAMPLING, None)  # fmt: skip
    hooks = comp.hooks(batch)
    path = attention_path(hooks, ckpt.num_layers, STEPS)
    edited = comp.edit_embedding(batch, emb)
    got = sample_mod._denoise(tr, hooks, steps, edited, mask, null, null_mask, x0, SAMPLING)
    plain_hooks = [_Path(path)] if path else []
    plain = sample_mod._denoise(tr, plain_hooks, steps, emb, mask, null, null_mask, x0, SAMPLING)
    for r in (0, 3):
        assert torch.equal(got[r], plain[r]), (spec, r)
    for r in (1, 2):
        assert not torch.equal(got[r], plain[r]), (spec, r)


def test_forced_path_changes_nothing_but_the_path(ckpt):
    """`_Path` alone only reroutes attention: the same images within float rounding."""
    comp = _spec(ckpt, "mask-head 0.1 tokens=relation")
    plain, _ = sample_intervened(ckpt, Composite(), TEXTS, SEEDS, SAMPLING)
    enc = ckpt.text_encoder
    batch = Batch(TEXTS, TEXTS, enc.tokenize(TEXTS), enc.tokenize([""]), enc, STEPS)
    path = attention_path(comp.hooks(batch), ckpt.num_layers, STEPS)
    assert path == {(0, "cross", 0), (0, "cross", 1)}
    assert attention_path([_Path(path)], ckpt.num_layers, STEPS) == path
    forced = _by_set(ckpt, [Composite(parts=(_ForceOnly(path),))], len(TEXTS), len(TEXTS))[0]
    assert (forced.int() - plain.int()).abs().max() <= 1


class _ForceOnly:
    """An intervention that installs nothing but a `_Path` hook."""

    needs_source = False

    def __init__(self, path):
        self.path = path

    def edit_caption(self, caption):
        return caption

    def edit_embedding(self, batch, emb):
        return emb

    def hooks(self, batch):
        return [_Path(self.path)]


@pytest.fixture
def sweep_mode():
    saved = dict(ablate.SWEEP)
    yield ablate.SWEEP
    ablate.SWEEP.update(saved)


def test_packed_sweep_cells_equal_one_head_at_a_time(ckpt, sweep_mode):
    kw = dict(n=3, sampling=SAMPLING.with_batch_size(2), resamples=200)
    out = {}
    for pack in (False, True):
        sweep_mode.update(pack=pack, overlap=pack)
        done = []
        res = ablate.run_sweep(ckpt, "mask-head 1.* tokens=relation", PROMPTS,
                               progress=lambda d, t, done=done: done.append((d, t)),
                               **kw)  # fmt: skip
        assert done[-1][0] == done[-1][1] == 4 * 3  # baseline + 3 heads, 3 samples each
        out[pack] = res
    assert len(out[True]["cells"]) == 3 * len(ablate.METRICS)
    keys = ("layer", "head", "metric", "delta", "ci_low", "ci_high", "intervened", "lost",
            "gained")  # fmt: skip
    for a, b in zip(out[False]["cells"], out[True]["cells"], strict=True):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


def test_overlapped_scoring_matches_sequential_order(ckpt, sweep_mode, monkeypatch):
    """Scores of batch k are computed in a worker thread while batch k + 1 samples; the sets
    come out in order with the values of the sequential loop."""
    comps = [_spec(ckpt, f"zero-head {layer}.0") for layer in range(3)]
    ctx = ablate._Context(ckpt, PROMPTS, 4, SAMPLING.with_batch_size(2), None, None, "t")
    n_batches = len(plan_packs(ckpt, comps, ctx.texts, ctx.sampling, 2))
    sweep_mode.update(pack=True, overlap=False)
    sequential = list(ablate._scored_sets(ctx, comps))

    sampled = []  # forward batches whose denoising has started
    started = threading.Condition()
    seen = []  # per scored batch: (thread, did the next batch start sampling meanwhile?)
    real_denoise, real_score = sample_mod._denoise, ablate.per_sample_metrics

    def denoise(*args):  # zero-heads record no source: one call per forward batch
        with started:
            sampled.append(len(sampled))
            started.notify_all()
        return real_denoise(*args)

    def score(images, ps):
        k = len(seen)
        with started:
            overlapped = k + 1 >= n_batches or started.wait_for(
                lambda: len(sampled) > k + 1, timeout=60
            )
        seen.append((threading.current_thread().name, overlapped))
        return real_score(images, ps)

    monkeypatch.setattr(sample_mod, "_denoise", denoise)
    monkeypatch.setattr(ablate, "per_sample_metrics", score)
    sweep_mode.update(overlap=True)
    overlapped = list(ablate._scored_sets(ctx, comps))
    assert len(seen) == n_batches > 2
    assert all(name.startswith("ablate-eval") for name, _ in seen)
    assert all(ok for _, ok in seen)
    assert len(overlapped) == len(sequential) == 3
    for a, b in zip(sequential, overlapped, strict=True):
        assert a.shape == (4, len(ablate.METRICS)) and np.array_equal(a, b)
    # and the one-set-at-a-time path gives the same values (zero-heads take no explicit path)
    monkeypatch.setattr(ablate, "per_sample_metrics", real_score)
    monkeypatch.setattr(sample_mod, "_denoise", real_denoise)
    sweep_mode.update(pack=False)
    alone = list(ablate._scored_sets(ctx, comps))
    assert all(np.array_equal(a, b) for a, b in zip(alone, sequential, strict=True))


def test_scoring_error_in_the_worker_reaches_the_caller(ckpt, sweep_mode, monkeypatch):
    ctx = ablate._Context(ckpt, PROMPTS, 2, SAMPLING.with_batch_size(1), None, None, "t")

    def broken(images, ps):
        raise ValueError("evaluator broke")

    monkeypatch.setattr(ablate, "per_sample_metrics", broken)
    with pytest.raises(ValueError, match="evaluator broke"):
        list(ablate._scored_sets(ctx, [_spec(ckpt, "zero-head 0.0")]))


def test_pack_rows_from_free_memory(ckpt):
    paper = SamplingSettings()  # 14 steps, 32 images per forward pass
    mask = [_spec(ckpt, "mask-head 0.0 tokens=relation")]
    assert pack_rows(ckpt, paper, mask) == 32  # the CPU keeps the requested batch size
    gib = 1 << 30
    big = pack_rows(ckpt, paper, mask, free_bytes=gib)
    assert 32 < big <= 4096
    assert pack_rows(ckpt, paper, mask, free_bytes=gib // 8) < big
    assert pack_rows(ckpt, paper, mask, free_bytes=1) == 1
    assert pack_rows(ckpt, paper, mask, free_bytes=1 << 50) == 4096  # limits.MAX_BATCH
    # a self-attention probabilities patch records [2, heads, Q, Q] per step: fewer rows fit
    probs = [_spec(ckpt, f'patch 0.0 from="{SOURCE}" what=probs attn=self')]
    assert pack_rows(ckpt, paper, probs, free_bytes=gib) < big
