"""Interventions, ablation runs with paired-bootstrap intervals, sweeps, variance (issue 7)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from engine.core.errors import UserError
from engine.core.sampling import SamplingSettings
from engine.data.prompts import eval_prompts, parse_prompt
from engine.eval.evaluate import METRICS
from engine.intervene.ablate import (
    ablation_rows,
    draw_samples,
    head_deltas,
    paired_bootstrap,
    run_ablation,
    run_sweep,
    sweep_rows,
)
from engine.intervene.base import Composite
from engine.intervene.heads import MaskHead, ZeroHead
from engine.intervene.patch import PatchHead
from engine.intervene.spec import expand_sweep, format_steps, parse_spec, parse_steps
from engine.intervene.text import DropWords, EmbedAdd, InsertFiller, SwapWords
from engine.intervene.variance import FACTORS, factor_levels, shares, variance_decomposition
from engine.text.base import MAX_LENGTH, Tokens

STEPS = 2  # denoising steps in model tests: enough to exercise every step-dependent path
SAMPLING = SamplingSettings(steps=STEPS)


@pytest.fixture(scope="module")
def ckpt(nano_ckpt):
    from engine.model.checkpoint import load_checkpoint

    return load_checkpoint(nano_ckpt)


# spec parsing


@pytest.mark.parametrize(
    "text, cls",
    [
        ("mask-head 2.1 tokens=relation", MaskHead),
        ("mask-head 0.0 tokens=shape2,color steps=0-3,5 branch=both", MaskHead),
        ("zero-head 1.2 attn=self steps=1", ZeroHead),
        ("drop-words relation,shape2", DropWords),
        ("swap-words above=below left=right", SwapWords),
        ("insert-filler the where=after-shape1 count=2", InsertFiller),
        ('embed-add "+above -below" scale=0.5', EmbedAdd),
        ('patch 1.0 from="red square is below blue circle" what=probs steps=0-1', PatchHead),
    ],
)
def test_spec_round_trip(text, cls):
    comp = parse_spec(text, 3, 3, 14)
    assert len(comp.parts) == 1 and isinstance(comp.parts[0], cls)
    again = parse_spec(comp.text(), 3, 3, 14)
    assert again == comp and again.text() == comp.text()


def test_registry_names_each_class_by_its_kind():
    from engine.intervene.registry import INTERVENTIONS

    for name, kind in INTERVENTIONS.items():
        cls = kind.load()
        assert cls.kind == name and callable(cls.from_args)


def test_spec_details_and_composition():
    c = parse_spec('mask-head 0.0 tokens=relation + embed-add "+above -below" + zero-head 1.2')
    assert [type(p) for p in c.parts] == [MaskHead, EmbedAdd, ZeroHead]
    assert c.parts[1].terms == ((1.0, "above"), (-1.0, "below"))
    assert parse_spec("embed-add +above -below").parts[0].terms == c.parts[1].terms
    m = parse_spec("mask-head 0.1 tokens=color steps=0,2,4-6").parts[0]
    assert m.tokens == ("color1", "color2") and m.steps == (0, 2, 4, 5, 6) and m.branch == "cond"
    assert parse_spec("mask-head 0.1 tokens=none").parts[0].tokens == ()
    assert parse_spec("zero-head 0.1").parts[0].branch == "both"
    assert parse_steps("0-13") == tuple(range(14)) and parse_steps("all") is None
    assert format_steps((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8"
    p = parse_spec("patch 2.8 from='a red square is above a blue circle'").parts[0]
    assert p.source == "a red square is above a blue circle" and p.what == "out"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("mask-head 3.0 tokens=relation", "head 3.0 is not in this model"),
        ("mask-head 0.3", "head 0.3 is not in this model"),
        ("mask-head 2", "not a head"),
        ("mask-head 0.0 tokens=verbs", "unknown token category 'verbs'"),
        ("mask-head 0.0 steps=0-20", "names step 20"),
        ("mask-head 0.0 steps=3-1", "runs backwards"),
        ("zero-head 0.0 attn=both", "attn='both' is not one of cross|self"),
        ("mask-head 0.0 colour=red", "unknown option colour="),
        ("ablate-head 0.0", "unknown intervention 'ablate-head'"),
        ("embed-add scale=2", "needs words"),
        ("patch 0.0", 'needs from="SOURCE PROMPT"'),
        ("insert-filler the where=middle", "where='middle'"),
        ("", "empty intervention"),
        ("mask-head 0.0 +", "empty intervention"),
        ('mask-head 0.0 tokens="relation', "unclosed quote"),
    ],
)
def test_bad_specs_are_clear(text, problem):
    with pytest.raises(UserError) as e:
        parse_spec(text, 3, 3, 14)
    msg = str(e.value)
    assert problem in msg
    assert "\n" not in msg
    if "names step" not in problem:  # (that one says what to change instead)
        assert "valid forms: mask-head L.H" in msg and "zero-head L.H" in msg
        assert "layers 0-2 and heads 0-2" in msg


def test_expand_sweep():
    cells = expand_sweep("mask-head *.* tokens=relation", 3, 3, 14)
    assert [(layer, head) for layer, head, _ in cells] == [
        (i, j) for i in range(3) for j in range(3)
    ]
    assert cells[5][2].text() == "mask-head 1.2 tokens=relation"
    one = expand_sweep('zero-head 2.* + embed-add "+above -below"', 3, 3)
    assert [c.text() for _, _, c in one][0] == 'zero-head 2.0 + embed-add "+above -below"'
    with pytest.raises(UserError, match="exactly one head written with"):
        expand_sweep("mask-head 0.0", 3, 3)
    with pytest.raises(UserError, match="exactly one head written with"):
        expand_sweep("mask-head *.* + zero-head *.1", 3, 3)


# caption edits


def test_caption_edits():
    cap = "red square is to the left of blue circle"
    assert DropWords(("relation",)).edit_caption(cap) == "red square is blue circle"
    assert DropWords(("color1", "color2")).edit_caption(cap) == "square is to the left of circle"
    assert SwapWords((("left", "right"),)).edit_caption(cap) == cap.replace("left", "right")
    ins = parse_spec("insert-filler the").parts[0]
    assert ins.edit_caption(cap) == "red square is the to the left of blue circle"
    assert InsertFiller("a", "start", 2).edit_caption(cap) == "a a " + cap
    assert InsertFiller("the", "after-shape1").edit_caption(cap).startswith("red square the is")
    assert InsertFiller("the", "before-color1").edit_caption("square is above circle") == (
        "square is above circle"
    )
    assert InsertFiller("the", "3").edit_caption("square is above circle") == (
        "square is above the circle"
    )


# bootstrap


def test_bootstrap_no_difference_is_exactly_zero():
    x = np.random.default_rng(0).integers(0, 2, size=(40, 3)).astype(bool)
    d, lo, hi = paired_bootstrap(x, x)
    assert (d == 0).all() and (lo == 0).all() and (hi == 0).all()


def test_bootstrap_matches_a_known_distribution():
    rng = np.random.default_rng(1)
    n = 400
    base = rng.normal(0.0, 1.0, n)
    inter = base + rng.normal(0.3, 1.0, n)  # paired: differences ~ N(0.3, 1)
    d, lo, hi = paired_bootstrap(base, inter, resamples=4000)
    diff = inter - base
    se = diff.std(ddof=1) / np.sqrt(n)
    assert d == pytest.approx(diff.mean())
    assert lo == pytest.approx(diff.mean() - 1.96 * se, abs=0.15 * se)
    assert hi == pytest.approx(diff.mean() + 1.96 * se, abs=0.15 * se)


def test_bootstrap_coverage_on_paired_bernoulli():
    """Per-sample correct/wrong pairs with a known true delta: the 95% interval covers it in
    about 95% of repeated experiments."""
    rng = np.random.default_rng(2)
    n, trials, true_delta = 100, 300, -0.2
    covered = 0
    for t in range(trials):
        base = rng.random(n) < 0.7
        # an intervention that breaks ~2/7 of the correct samples: true delta -0.2
        inter = base & (rng.random(n) >= 0.2 / 0.7)
        _, lo, hi = paired_bootstrap(base, inter, resamples=1000, seed=t)
        covered += lo <= true_delta <= hi
    assert 0.90 <= covered / trials <= 0.99


def test_draw_samples_documented_order():
    prompts = eval_prompts()
    ps, seeds = draw_samples(prompts, 4, 0)
    order = np.random.default_rng(0).permutation(len(prompts))
    assert [p.text for p in ps] == [prompts[i].text for i in order[:4]] and seeds == [0] * 4
    ps, seeds = draw_samples(prompts[:3], 7, 5)
    assert seeds == [5, 5, 5, 6, 6, 6, 7] and {p.text for p in ps} == {p.text for p in prompts[:3]}
    with pytest.raises(UserError):
        draw_samples(prompts, 0, 0)


# variance decomposition


class AdditiveEncoder:
    """Embeddings that are exactly a sum of per-factor vectors (per position), phrasing
    vectors centred within their relation: the decomposition must give back their shares."""

    spec = "synthetic"

    def __init__(self, prompts, dim=6, seed=0):
        rng = np.random.default_rng(seed)
        self.levels = factor_levels(prompts)
        self.by_text = {p.text: i for i, p in enumerate(prompts)}
        self.vec = {}
        for f in FACTORS:
            scale = {"shape1": 1.0, "shape2": 2.0, "color": 0.5, "relation": 1.5, "phrasing": 0.7}
            for lev in sorted(set(self.levels[f])):
                self.vec[f, lev] = rng.normal(0, scale[f], (MAX_LENGTH, dim))
        for rel in set(self.levels["relation"]):  # centre phrasings within each relation
            phr = sorted({ph for ph in self.levels["phrasing"] if ph.startswith(rel + ":")})
            mean = np.mean([self.vec["phrasing", ph] for ph in phr], axis=0)
            for ph in phr:
                self.vec["phrasing", ph] = self.vec["phrasing", ph] - mean

    def term(self, f, i):
        return self.vec[f, self.levels[f][i]]

    def tokenize(self, captions):
        n = len(captions)
        return Tokens([["w"] * MAX_LENGTH] * n, [["filler"] * MAX_LENGTH] * n,
                      torch.ones(n, MAX_LENGTH, dtype=torch.long), None)  # fmt: skip

    def encode(self, captions):
        rows = [sum(self.term(f, self.by_text[c]) for f in FACTORS) for c in captions]
        return torch.tensor(np.stack(rows)), torch.ones(len(captions), MAX_LENGTH, dtype=torch.long)


def test_variance_exact_on_synthetic_encoder():
    prompts = eval_prompts()
    enc = AdditiveEncoder(prompts)
    rows = {r["view"]: r for r in variance_decomposition(enc, prompts)["encoder"]}
    n = len(prompts)
    terms = {f: np.stack([enc.term(f, i) for i in range(n)]) for f in FACTORS}
    terms = {f: t - t.mean(axis=0) for f, t in terms.items()}
    total = sum(terms.values())
    ss_total = (total**2).sum()
    for f in FACTORS:
        assert rows["all"][f] == pytest.approx((terms[f] ** 2).sum() / ss_total, abs=1e-10)
        for t in (0, 7, 19):
            want = (terms[f][:, t] ** 2).sum() / (total[:, t] ** 2).sum()
            assert rows[f"pos {t}"][f] == pytest.approx(want, abs=1e-10)
    assert rows["all"]["residual"] == pytest.approx(0, abs=1e-10)
    # shape1 and shape2 always differ in the eval set: their terms covary (overlap != 0),
    # and the shares, overlap and residual still add to one
    r = rows["all"]
    assert sum(r[k] for k in (*FACTORS, "overlap", "residual")) == pytest.approx(1, abs=1e-12)


def test_variance_on_real_encoder_and_projection():
    from engine.text.rte import RandomTokenEncoder

    prompts = eval_prompts()
    enc = RandomTokenEncoder.build("rte-nopos:16", seed=0)
    proj = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.GELU(), torch.nn.Linear(8, 8))
    stages = variance_decomposition(enc, prompts, proj)
    for stage in ("encoder", "projected"):
        rows = {r["view"]: r for r in stages[stage]}
        # without positions a shape1 token is a function of the shape1 word alone
        assert rows["tok shape1"]["shape1"] == pytest.approx(1.0, abs=1e-9)
        assert rows["tok shape2"]["shape2"] == pytest.approx(1.0, abs=1e-9)
        rel = rows["tok relation"]
        assert rel["relation"] + rel["phrasing"] == pytest.approx(1.0, abs=1e-9)
    # a generic check of `shares`: a factor that is the whole signal gets share 1
    levels = factor_levels(prompts)
    x = np.array([[{"circle": 1.0, "square": 2.0, "triangle": 4.0}[s]] for s in levels["shape2"]])
    assert shares(x, levels)["shape2"] == pytest.approx(1.0)


# model tests (3-step nano checkpoint, 2 denoising steps, a handful of samples)


TEXTS = ["red square is above blue circle", "triangle is to the left of circle"]


def test_noop_interventions_are_bit_identical(ckpt):
    from engine.intervene.sample import sample_intervened
    from engine.model.sampler import sample_images

    seeds = [0, 1]
    plain = sample_images(ckpt, TEXTS, seeds, SAMPLING)
    for spec in ("mask-head 0.0 tokens=none", 'embed-add "+above -below" scale=0'):
        images, captions = sample_intervened(ckpt, parse_spec(spec), TEXTS, seeds, SAMPLING)
        assert torch.equal(images, plain), spec
        assert captions == TEXTS
    # a mask that does hit the relation tokens changes the images
    images, _ = sample_intervened(
        ckpt, parse_spec("mask-head 0.0 tokens=relation + mask-head 1.0"), TEXTS, seeds, SAMPLING
    )
    assert not torch.equal(images, plain)


def test_noop_ablation_has_exactly_zero_delta(ckpt, tmp_path):
    from engine.store.cache import Store

    store = Store.for_checkpoint(ckpt, tmp_path)
    prompts = [parse_prompt(t) for t in TEXTS]
    res = run_ablation(
        ckpt,
        ["mask-head 0.0 tokens=none", 'embed-add "+above -below" scale=0'],
        prompts, n=2, sampling=SAMPLING, store=store, resamples=200,
    )  # fmt: skip
    assert not res["baseline_reused"] and res["baseline_run"].startswith("baseline-")
    for entry in res["interventions"]:
        for m in METRICS:
            s = entry["metrics"][m]
            assert s["delta"] == 0 and s["ci_low"] == 0 and s["ci_high"] == 0, (entry, m)
            assert s["intervened"] == s["baseline"] == res["baseline"][m]
            assert s["lost"] == s["gained"] == 0
        assert store.attrs("ablation", entry["run"])["intervention"] == entry["intervention"]
    images = store.read("ablation", res["interventions"][0]["run"], "images")
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    # the baseline is cached: a second run samples only the intervention
    done = []
    again = run_ablation(
        ckpt, ["zero-head 2.2"], prompts, n=2, sampling=SAMPLING, store=store,
        resamples=200, progress=lambda d, t: done.append((d, t)),
    )  # fmt: skip
    assert again["baseline_reused"] and again["baseline_run"] == res["baseline_run"]
    assert done[-1] == (2, 2)
    rows = ablation_rows(store)
    assert len(rows) == 3 * len(METRICS)
    assert {r["intervention"] for r in rows} == {
        "mask-head 0.0 tokens=none",
        'embed-add "+above -below" scale=0',
        "zero-head 2.2",
    }
    assert set(rows[0]) >= {"run", "intervention", "metric", "baseline", "intervened", "delta",
                            "ci_low", "ci_high", "n"}  # fmt: skip


def test_masking_every_head_from_relation_removes_the_relation(ckpt):
    """With every head blind to the relation tokens, "above" and "below" (same length, so the
    other tokens keep their positions) give the same images from the same noise."""
    from engine.intervene.sample import sample_intervened
    from engine.model.sampler import initial_noise

    texts = ["red square is above blue circle", "red square is below blue circle"]
    c, s = ckpt.codec, ckpt.codec.latent_size
    noise = initial_noise(["x", "x"], [3, 3], (c.channels, s, s))
    every = " + ".join(
        f"mask-head {layer}.{head} tokens=relation"
        for layer in range(ckpt.num_layers)
        for head in range(ckpt.num_heads)
    )
    plain, _ = sample_intervened(ckpt, Composite(), texts, [0, 0], SAMPLING, noise=noise)
    masked, _ = sample_intervened(ckpt, parse_spec(every), texts, [0, 0], SAMPLING, noise=noise)
    assert not torch.equal(plain[0], plain[1])  # the model does read the relation word
    assert torch.equal(masked[0], masked[1])


def test_patch_from_the_same_prompt_is_a_noop(ckpt):
    from engine.intervene.sample import sample_intervened
    from engine.model.sampler import sample_images

    text = "red square is above blue circle"
    plain = sample_images(ckpt, [text, text], [0, 1], SAMPLING)
    for spec in (f'patch 1.2 from="{text}"', f'patch 0.1 from="{text}" attn=self branch=both'):
        images, _ = sample_intervened(ckpt, parse_spec(spec), [text, text], [0, 1], SAMPLING)
        assert torch.equal(images, plain), spec
    other, _ = sample_intervened(
        ckpt, parse_spec('patch 0.0 from="triangle is below circle" branch=both'),
        [text, text], [0, 1], SAMPLING,
    )  # fmt: skip
    assert not torch.equal(other, plain)


def test_sweep_fills_the_ablation_table(ckpt, tmp_path):
    from engine.store.cache import Store

    store = Store.for_checkpoint(ckpt, tmp_path)
    prompts = [parse_prompt(t) for t in TEXTS]
    res = run_sweep(
        ckpt, "zero-head 2.*", prompts, n=2, sampling=SAMPLING, store=store, resamples=100
    )
    assert res["sample_sets"] == 3 + 1  # N heads -> N + 1 sample sets
    rows = sweep_rows(store)
    assert len(rows) == 3 * len(METRICS) == len(res["cells"])
    assert {(r["layer"], r["head"]) for r in rows} == {(2, 0), (2, 1), (2, 2)}
    assert set(rows[0]) >= {"layer", "head", "metric", "delta", "ci_low", "ci_high"}
    assert all(r["ci_low"] <= r["delta"] <= r["ci_high"] for r in rows)
    deltas = head_deltas(store, "shape")
    assert set(deltas) == {(2, 0), (2, 1), (2, 2)}
    data = store.read("ablation", res["run"])
    assert data["delta"].shape == (3, 3, len(METRICS)) and np.isnan(data["delta"][0]).all()


def test_cli_ablate_json_and_errors(nano_ckpt, tmp_path, monkeypatch, capsys):
    """The issue's done-when command (with 2 steps to stay fast), and a bad spec's message."""
    from workbench import cli

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["dit-workbench", *map(str, args)])
        try:
            cli.main()
        except SystemExit as e:
            return e.code
        return 0

    base = ["ablate", nano_ckpt, "--n", "4", "--steps", STEPS, "--cache", tmp_path]
    code = run(*base, "--intervention", "mask-head 0.0 tokens=relation", "--format", "json",
               "--resamples", "200")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    res = json.loads(out)
    stats = res["interventions"][0]["metrics"]
    assert set(stats) == set(METRICS)
    for s in stats.values():
        assert {"baseline", "intervened", "delta", "ci_low", "ci_high"} <= set(s)
        assert s["ci_low"] <= s["delta"] <= s["ci_high"]
    assert run(*base, "--intervention", "mask-head 7.0 tokens=relation") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "head 7.0 is not in this model" in err
    assert "layers 0-2 and heads 0-2" in err and "valid forms" in err
    assert run("ablate", nano_ckpt, "--list", "--cache", tmp_path, "--format", "csv") == 0
    assert "mask-head 0.0 tokens=relation" in capsys.readouterr().out
