"""The attention synopsis (issue 5): capture parity, category sums, padding and CFG, ranking,
the CLI on a nano checkpoint, resume."""

import csv
import io

import h5py
import numpy as np
import pytest
import torch
from clirunner import cli_result as cli
from diffusers import PixArtTransformer2DModel

from engine.core.errors import UserError
from engine.core.sampling import SamplingSettings
from engine.data.prompts import parse_prompt
from engine.model.checkpoint import load_checkpoint
from engine.model.sampler import denoise, sample_images
from engine.probe.hooks import CROSS, Site, hooked, schedule_timesteps
from engine.probe.ranking import parse_query, rank_heads
from engine.probe.synopsis import (
    TEXT_CATS,
    CrossCapture,
    category_onehot,
    reduce_tokens,
    run_synopsis,
    soft_masks,
)
from engine.store.cache import Store
from engine.text import CATEGORIES

TEXTS = ["red square is above blue circle", "circle is to the left of blue triangle"]


@pytest.fixture(scope="module")
def ckpt(nano_ckpt):
    return load_checkpoint(nano_ckpt)


def test_text_categories_agree_with_the_encoders():
    assert TEXT_CATS == tuple(CATEGORIES)


def test_capture_leaves_images_unchanged(ckpt):
    plain = sample_images(ckpt, TEXTS, [0, 1], sampling=SamplingSettings(steps=3))
    tok = ckpt.text_encoder.tokenize(TEXTS)
    null = ckpt.text_encoder.tokenize([""]).categories
    cap = CrossCapture(category_onehot(null * 2 + tok.categories), 3, ckpt.num_layers)
    with hooked(ckpt.transformer, [cap], schedule_timesteps(3)):
        captured = sample_images(ckpt, TEXTS, [0, 1], sampling=SamplingSettings(steps=3))
    assert torch.equal(plain, captured)
    mass = cap.array()  # [S, L, 2B, H, Q, C]
    assert mass.shape == (3, ckpt.num_layers, 4, ckpt.num_heads, 64, 7)
    np.testing.assert_allclose(mass.sum(-1), 1, atol=1e-4)
    # Padding is masked (-10000 logit): no mass on it in either branch.
    assert mass[..., TEXT_CATS.index("pad")].max() < 1e-4
    # The unconditional branch reads the empty caption: it has no relation word at all, while
    # the conditional branch does. Using the cond captions' categories for both would differ.
    assert mass[:, :, :2, ..., TEXT_CATS.index("relation")].max() == 0
    assert mass[:, :, 2:, ..., TEXT_CATS.index("relation")].min() > 0


def test_category_sums_match_a_hand_built_attention_matrix():
    cats = [["color1", "shape1", "relation", "relation", "shape2", "pad"]]
    onehot = category_onehot(cats)
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.25, 0.0], [0.5, 0.0, 0.0, 0.0, 0.5, 0.0]])
    cap = CrossCapture(onehot, 1, 1)
    cap.probs(Site(0, CROSS, 0, 0), probs[None, None])  # [B=1, H=1, Q=2, K=6]
    got = cap.mass[0][0][0, 0]
    want = np.zeros((2, 7), np.float32)
    want[0, [0, 1, 2, 4]] = [0.1, 0.2, 0.45, 0.25]
    want[1, [0, 4]] = [0.5, 0.5]
    np.testing.assert_allclose(got, want, atol=1e-7)
    # Image categories: token 0 is all object 1, token 1 half object 2 and half background.
    masks = np.array([[[1, 0, 0], [0, 0.5, 0.5]]], np.float32)  # [N=1, Q=2, A=3]
    red = reduce_tokens(got[None, None], masks)[0, 0]  # [A, C]
    np.testing.assert_allclose(red[0], want[0], atol=1e-7)
    np.testing.assert_allclose(red[1], want[1], atol=1e-7)


def test_soft_masks_follow_the_objects_on_the_token_grid():
    img = np.full((32, 32, 3), 128, np.uint8)
    img[:4, :4] = (255, 0, 0)  # top-left token, red: object 1
    img[28:, 28:] = (0, 0, 255)  # bottom-right token, blue: object 2
    m = soft_masks(img[None])[0]
    assert m[0].tolist() == [1, 0, 0] and m[63].tolist() == [0, 1, 0]
    assert m[1:63, 2].min() == 1


def test_any_pixart_transformer_works():
    """Different width, heads and depth than the presets, built straight from diffusers."""
    torch.manual_seed(0)
    tr = PixArtTransformer2DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2,
        cross_attention_dim=32, sample_size=16, patch_size=2, caption_channels=24,
        use_additional_conditions=False, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6,
    ).eval()  # fmt: skip
    emb, mask = torch.randn(2, 20, 24), torch.ones(2, 20, dtype=torch.long)
    mask[:, 12:] = 0
    noise = torch.randn(2, 4, 16, 16)
    plain = denoise(
        tr, emb, mask, emb * 0, mask, noise, sampling=SamplingSettings(steps=2, cfg=2.0)
    )
    cats = [["relation"] * 12 + ["pad"] * 8] * 4
    cap = CrossCapture(category_onehot(cats), 2, 2)
    with hooked(tr, [cap], schedule_timesteps(2)):
        captured = denoise(
            tr, emb, mask, emb * 0, mask, noise, sampling=SamplingSettings(steps=2, cfg=2.0)
        )
    assert torch.equal(plain, captured)
    assert cap.array().shape == (2, 2, 4, 4, 64, 7)


def test_ranking_and_queries(ckpt, tmp_path):
    store = Store.for_checkpoint(ckpt, tmp_path)
    prompts = [parse_prompt(t) for t in TEXTS]
    run = run_synopsis(ckpt, prompts, n_per_prompt=2, sampling=SamplingSettings(steps=3, batch_size=3), store=store,
                       detail=2, self_attn=True)  # fmt: skip
    rows = rank_heads(store, run, "relation->object1")
    assert len(rows) == 9 and [r["rank"] for r in rows] == list(range(1, 10))
    assert rows[0]["score"] >= rows[-1]["score"]
    # The score is the max over steps, then the mean over samples: recompute it by hand.
    with h5py.File(store.path) as f:
        cross = f["synopsis"][run]["cross"][()].astype(np.float32)
    v = cross[:, :, :, 1, :, 0, TEXT_CATS.index("relation")]  # cond, object1, relation
    want = np.nanmean(np.nanmax(v, axis=1), axis=0)
    top = rows[0]
    assert top["score"] == pytest.approx(want[top["layer"], top["head"]], rel=1e-5)
    assert len(rank_heads(store, run, "self:object1->object2")) == 9
    early = rank_heads(store, run, "relation->object1", steps="0-0")
    assert all(r["peak_step"] == 0 for r in early)
    with pytest.raises(UserError, match="unknown query"):
        parse_query("relation->nowhere")
    with pytest.raises(UserError, match="outside the run's steps"):
        rank_heads(store, run, steps="0-7")


def test_resume_continues_an_interrupted_run(ckpt, tmp_path):
    prompts = [parse_prompt(t) for t in TEXTS]
    whole = Store(tmp_path / "a.h5", ckpt.hash)
    run = run_synopsis(
        ckpt, prompts, n_per_prompt=2, sampling=SamplingSettings(steps=2, batch_size=2), store=whole
    )

    class Stop(Exception):
        pass

    def stop_after_first(done, total):
        if done >= 2:
            raise Stop

    part = Store(tmp_path / "b.h5", ckpt.hash)
    with pytest.raises(Stop):
        run_synopsis(ckpt, prompts, n_per_prompt=2, sampling=SamplingSettings(steps=2, batch_size=2), store=part,
                     progress=stop_after_first)  # fmt: skip
    assert part.attrs("synopsis", run)["complete"] is False
    assert (
        run_synopsis(
            ckpt,
            prompts,
            n_per_prompt=2,
            sampling=SamplingSettings(steps=2, batch_size=2),
            store=part,
        )
        == run
    )
    a, b = whole.read("synopsis", run), part.read("synopsis", run)
    assert part.attrs("synopsis", run)["complete"] is True
    np.testing.assert_array_equal(a["cross"], b["cross"])
    assert a["prompts"] == b["prompts"]


def test_cli_synopsis_then_heads_csv(nano_ckpt, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(TEXTS) + "\n")
    cache = tmp_path / "cache"
    r = cli("synopsis", nano_ckpt, "--prompts", prompts, "--n-per-prompt", "1", "--steps", "3",
            "--cache", cache)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli("heads", nano_ckpt, "--query", "relation->object1", "--format", "csv", "--cache", cache)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 9 and {"layer", "head", "score", "rank", "peak_step", "z"} <= set(rows[0])
    (path,) = cache.glob("*.h5")
    with h5py.File(path) as f:  # plain h5py, no package code
        (run,) = f["synopsis"].keys()
        g = f["synopsis"][run]
        assert g["cross"].shape[0] == 2 and g.attrs["checkpoint_hash"] == f.attrs["checkpoint_hash"]
    r = cli("heads", nano_ckpt, "--query", "relation->sky", "--cache", cache)
    assert r.returncode == 2 and "unknown query" in r.stderr and "Traceback" not in r.stderr
    r = cli("heads", nano_ckpt, "--cache", tmp_path / "empty")
    assert r.returncode == 2 and "no complete synopsis run" in r.stderr
