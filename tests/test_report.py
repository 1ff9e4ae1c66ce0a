"""`dit-workbench report` regenerates the reproduction report from a tiny checkpoint's cache."""

import pytest
from clirunner import cli_result

from engine.core.sampling import SamplingSettings
from engine.data.prompts import parse_prompt
from engine.intervene.ablate import run_sweep
from engine.intervene.variance import run_variance
from engine.model.checkpoint import load_checkpoint
from engine.probe.ranking import rank_heads
from engine.probe.screening import save_screening, screen
from engine.probe.synopsis import run_synopsis
from engine.store.cache import Store


@pytest.mark.slow  # the whole pipeline: synopsis, screening, two all-head sweeps, variance
def test_report_from_a_tiny_checkpoint(nano_ckpt, tmp_path):
    cache = tmp_path / "cache"
    ck = load_checkpoint(nano_ckpt)
    store = Store.for_checkpoint(ck, cache)
    cli = ["report", nano_ckpt, "--cache", cache]
    # Before anything is computed the report says what is missing and how to get it.
    r = cli_result(*cli)
    assert r.returncode == 0, r.stderr
    assert "run `dit-workbench synopsis CKPT`" in r.stdout

    prompts = [parse_prompt(t) for t in ("red square is above blue circle",
                                         "blue triangle left of red circle")]  # fmt: skip
    run = run_synopsis(
        ck, prompts, n_per_prompt=1, sampling=SamplingSettings(steps=2), store=store, detail=1
    )
    save_screening(store, screen(ck))
    for tokens in ("relation", "shape1,shape2"):
        run_sweep(ck, f"mask-head *.* tokens={tokens}", prompts, n=2, sampling=SamplingSettings(steps=2), store=store,
                  resamples=50)  # fmt: skip
    run_variance(ck, prompts, store)
    out = tmp_path / "reproduction.md"
    r = cli_result(*cli, "--out", out)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    top = rank_heads(store, run, "relation->object1")[0]
    assert f"top head **L{top['layer']}H{top['head']}**" in text
    for heading in ("Relation accuracy per encoder", "weight-space screening", "Ablations",
                    "variance decomposition", "Learning order", "Scale"):  # fmt: skip
        assert heading in text
    assert "Agreement with the synopsis ranking" in text and "Missing" not in text
    assert "L2H8" in text and "86.0%" in text  # the paper's figures beside ours
    assert text.rstrip().endswith(f"--out {out}`")
    assert "**Relation head:**" in text


def test_difference_interval_and_encoder_comparison():
    from engine.report import _encoder_comparison, diff_interval

    d, lo, hi = diff_interval(0, 500, 0, 500)
    assert d == 0 and lo < 0 < hi  # 0 of n against 0 of n is not a certain zero
    d, lo, hi = diff_interval(300, 500, 75, 500)
    assert abs(d - 0.45) < 1e-12 and 0.39 < lo < d < hi < 0.51

    def facts(text, n, spatial, colour):
        return {"info": {"preset": "micro", "step": 9000, "text": text},
                "synopsis": {"n": n, "metrics": {"spatial": spatial, "color_relation": colour}}}  # fmt: skip

    lines = _encoder_comparison(
        [facts("rte", 528, 0.30, 0.50), facts("rte-nopos", 528, 0.01, 0.12)]
    )
    assert "same step 9000" in lines[0] and lines[0].count("RTE above") == 2
    lines = _encoder_comparison([facts("rte", 528, 0.0, 0.10), facts("rte-nopos", 528, 0.0, 0.11)])
    assert lines[0].count("no difference shown") == 2
    assert _encoder_comparison([facts("rte", 528, 0.3, 0.5)]) == []  # nothing to compare
