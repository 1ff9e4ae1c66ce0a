"""A pretrained PixArt pipeline opened from a local folder (issue 21): a tiny random
PixArt-Sigma pipeline built and saved with diffusers here (2 layers, a tiny T5, a tiny VAE, a
hand-made SentencePiece-style Unigram tokenizer), imported, then probed end to end through the
CLI: synopsis on two prompts (one free text), heads table, screening, one ablation, CSV export.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from clirunner import run_cli

from engine.core.errors import UserError
from engine.core.sampling import SamplingSettings

FREE = "a cat on a green car"
OURS = "red triangle is to the upper left of blue circle"


def build_tiny_pipeline(
    out: Path, layers: int = 2, sample_size: int = 16, alpha: bool = False
) -> Path:
    """A random PixArt-Sigma pipeline folder, as diffusers saves one: token grid sample_size/2,
    learned variance (out_channels 8) as PixArt's, a scheduler config that differs from ours."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    from engine.data.relations import ALL_PHRASES
    from engine.data.scenes import COLORS, SHAPES

    # A hand-made Unigram vocabulary (T5's kind of model): whole-word pieces for most of our
    # words, "upper" and "triangle" only as two pieces, "left" and every other word spelled
    # from letters after a lone "▁" (as T5 writes rare words): the cases categories must map.
    words = (
        {w for p, _ in ALL_PHRASES for w in p.split()}
        | set(COLORS)
        | set(SHAPES)
        | {"is", "a", "on"}
    )
    words -= {"upper", "triangle", "left"}
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -1.0) for w in sorted(words)]
    pieces += [
        ("\u2581up", -2.0),
        ("per", -2.0),
        ("\u2581tri", -2.0),
        ("angle", -2.0),
        ("\u2581", -3.0),
    ]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_ff=64,
            d_kv=16,
            num_layers=2,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size * 2,
    )
    tr = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=24 if alpha else 16,  # the size embedding needs a width / 3
        in_channels=4,
        out_channels=8,
        num_layers=layers,
        cross_attention_dim=48 if alpha else 32,
        sample_size=sample_size,
        patch_size=2,
        caption_channels=32,
        use_additional_conditions=alpha,  # PixArt-alpha 1024 conditions on size
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        num_embeds_ada_norm=1000,
        attention_bias=True,
        activation_fn="gelu-approximate",
        interpolation_scale=1,
    )
    sched = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.012,
        beta_schedule="linear",
        algorithm_type="dpmsolver++",
        solver_order=2,
    )
    from diffusers import PixArtAlphaPipeline

    pipe = (PixArtAlphaPipeline if alpha else PixArtSigmaPipeline)(
        tokenizer=tokenizer, text_encoder=t5, vae=vae, transformer=tr, scheduler=sched
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("pixart") / "pipe")


@pytest.fixture(scope="module")
def ckpt(pipe, tmp_path_factory) -> Path:
    from engine.model.pipeline import import_pipeline

    return import_pipeline(pipe, tmp_path_factory.mktemp("imported") / "ck")


def test_import_records_parts_hashes_and_configs(pipe, tmp_path, capsys, monkeypatch):
    from engine.model.checkpoint import describe, sha256_file

    out = tmp_path / "ck"
    code, stdout, err = run_cli(["import-pipeline", pipe, "--out", out], capsys, monkeypatch)
    assert code == 0, err
    assert "PixArtSigmaPipeline" in stdout and "grid 8x8" in stdout
    meta = json.loads((out / "workbench.json").read_text())
    # no weights copied: only small config files live in the checkpoint
    assert not list(out.rglob("*.safetensors"))
    parts = meta["pipeline"]["parts"]
    for part in ("transformer", "text_encoder", "tokenizer", "vae", "scheduler"):
        assert Path(parts[part]["path"]) == (pipe / part).resolve()
        for rel, rec in parts[part]["files"].items():
            assert rec["sha256"] == sha256_file(pipe / part / rel)
    tw = pipe / "transformer" / "diffusion_pytorch_model.safetensors"
    assert meta["hashes"]["transformer"] == sha256_file(tw)
    # shapes from the pipeline's configs (sample_size 16, patch 2, 4 latent channels, VAE /2)
    assert meta["grid"] == [8, 8] and meta["latent"] == [4, 16, 16] and meta["res"] == 32
    sched = json.loads((pipe / "scheduler" / "scheduler_config.json").read_text())
    assert meta["scheduler"] == sched and sched["beta_end"] == 0.012
    info = describe(out)
    assert (info["layers"], info["heads"], info["width"]) == (2, 2, 32)


def _copy(pipe: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(pipe, dst)
    return dst


@pytest.mark.parametrize(
    "damage", ["not_pixart", "no_vae", "escaping_link", "pickle", "exists", "missing"]
)
def test_import_refusals_one_line(pipe, tmp_path, capsys, monkeypatch, damage):
    src, out = _copy(pipe, tmp_path), tmp_path / "ck"
    if damage == "not_pixart":
        idx = json.loads((src / "model_index.json").read_text())
        idx["_class_name"] = "StableDiffusionPipeline"
        (src / "model_index.json").write_text(json.dumps(idx))
    elif damage == "no_vae":
        shutil.rmtree(src / "vae")
    elif damage == "escaping_link":
        outside = tmp_path / "elsewhere.json"
        shutil.move(src / "vae" / "config.json", outside)
        os.symlink(outside, src / "vae" / "config.json")
    elif damage == "pickle":
        (src / "text_encoder" / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    elif damage == "exists":
        out.mkdir()
    else:
        src = tmp_path / "nowhere"
    code, stdout, err = run_cli(["import-pipeline", src, "--out", out], capsys, monkeypatch)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    word = {"not_pixart": "not PixArt", "no_vae": "no vae/", "escaping_link": "outside",
            "pickle": "pickle", "exists": "exists", "missing": "does not exist"}[damage]  # fmt: skip
    assert word in lines[0]
    assert (damage == "exists") == out.exists()  # nothing written on a refusal


def test_symlink_inside_the_folder_is_fine(pipe, tmp_path):
    from engine.model.pipeline import inspect_pipeline

    src = _copy(pipe, tmp_path)
    shutil.move(src / "vae" / "config.json", src / "vae_config.json")
    os.symlink(src / "vae_config.json", src / "vae" / "config.json")
    assert inspect_pipeline(src)["latent"] == [4, 16, 16]


def test_load_refuses_changed_parts(pipe, tmp_path):
    from engine.model.checkpoint import load_checkpoint
    from engine.model.pipeline import import_pipeline

    src = _copy(pipe, tmp_path)
    ck = import_pipeline(src, tmp_path / "ck")
    w = src / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # same size, another byte: found by the hash (the mtime changed)
    w.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its sha256"):
        load_checkpoint(ck)
    w.write_bytes(bytes(data[:-1]))
    with pytest.raises(UserError, match="bytes"):
        load_checkpoint(ck)


def test_t5_pieces_get_word_categories(ckpt):
    from engine.model.checkpoint import load_checkpoint

    enc = load_checkpoint(ckpt).text_encoder
    tok = enc.tokenize(["red triangle is to the upper left of blue circle", FREE])
    pairs = [(w, c) for w, c in zip(tok.words[0], tok.categories[0], strict=True) if c != "pad"]
    assert pairs[:6] == [("\u2581red", "color1"), ("\u2581tri", "shape1"), ("angle", "shape1"),
                         ("\u2581is", "filler"), ("\u2581to", "relation"), ("\u2581the", "relation")]  # fmt: skip
    # "upper" is two pieces; "left" is spelled from letters after a lone word-start piece
    assert pairs[6:14] == [("\u2581up", "relation"), ("per", "relation"), ("\u2581", "relation"),
                           ("l", "relation"), ("e", "relation"), ("f", "relation"),
                           ("t", "relation"), ("\u2581of", "relation")]  # fmt: skip
    assert pairs[14:] == [("\u2581blue", "color2"), ("\u2581circle", "shape2"), ("</s>", "filler")]
    # free text: no colour, shape or relation of our vocabulary in it, all filler
    assert set(tok.categories[1]) == {"filler", "pad"}


def test_sampling_uses_the_pipelines_scheduler(ckpt):
    import torch

    from engine.model.checkpoint import load_checkpoint
    from engine.model.sampler import sample_images, sample_scheduler
    from engine.probe.hooks import schedule_timesteps

    ck = load_checkpoint(ckpt)
    sched = sample_scheduler(ck.transformer)
    assert sched.config.beta_end == 0.012 and type(sched).__name__ == "DPMSolverMultistepScheduler"
    assert sample_scheduler().config.beta_end == 0.02  # our own models keep ours
    assert schedule_timesteps(3, ck.transformer) == [
        int(t) for t in (sched.set_timesteps(3) or sched.timesteps)
    ]
    a = sample_images(ck, [OURS, FREE], [0, 1], sampling=SamplingSettings(steps=2))
    assert a.shape == (2, 32, 32, 3) and a.dtype == torch.uint8
    assert torch.equal(
        a[:1], sample_images(ck, [OURS], [0], sampling=SamplingSettings(steps=2))
    )  # paired seeds


def test_pool_tokens_is_the_block_mean():
    import torch

    from engine.probe.synopsis import pool_tokens

    m = torch.rand(2, 3, 64 * 64, 7)
    p = pool_tokens(m, 64)
    grid = m.reshape(2, 3, 64, 64, 7)
    want = grid.reshape(2, 3, 8, 8, 8, 8, 7).mean(dim=(3, 5)).reshape(2, 3, 64, 7)
    assert p.shape == (2, 3, 64, 7) and torch.allclose(p, want, atol=1e-6)


def test_synopsis_two_prompts_and_heads(ckpt, tmp_path, capsys, monkeypatch):
    """Synopsis on one dataset prompt and one free-text prompt, then the heads table."""
    import h5py

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{OURS}\n{FREE}\n")
    cache = tmp_path / "cache"
    code, out, err = run_cli(["synopsis", ckpt, "--prompts", f"free:{prompts}", "--n-per-prompt",
                              1, "--steps", 2, "--cache", cache], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    assert "note: 1 of 2 samples have free-text prompts" in out
    (h5,) = cache.glob("*.h5")
    with h5py.File(h5, "r") as f:
        (run,) = f["synopsis"].keys()
        g = f["synopsis"][run]
        assert g.attrs["text_only"] == 1 and g.attrs["grid"] == 8
        cross = g["cross"][()].astype(np.float32)  # [sample, step, layer, branch, head, 3, 7]
        masks = g["masks"][()]
    assert cross.shape[:5] == (2, 2, 2, 2, 2)
    # the free prompt's image has no objects: every token is background
    assert np.all(masks[1] == np.array([0, 0, 1], dtype=masks.dtype))
    assert np.isnan(cross[1, ..., 0, :]).all() and np.isnan(cross[1, ..., 1, :]).all()
    # attention over the seven text categories sums to one for the background
    assert np.allclose(cross[:, ..., 2, :].sum(-1), 1, atol=2e-2)
    # the free prompt has no relation token: no cond-branch mass on relation
    assert np.allclose(cross[1, :, :, 1, :, 2, 2], 0, atol=1e-3)
    assert cross[0, :, :, 1, :, 2, 2].min() > 0
    code, out, err = run_cli(["heads", ckpt, "--query", "relation->background", "--cache", cache,
                              "--format", "csv"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and {r["n_samples"] for r in rows} == {"2"}
    # the score of a head is the max over steps of the cond branch, mean over samples
    want = np.nanmean(cross[:, :, :, 1, :, 2, 2].max(axis=1), axis=0)  # [layer, head]
    for r in rows:
        assert float(r["score"]) == pytest.approx(want[int(r["layer"]), int(r["head"])], abs=2e-3)


def test_token_masks_and_word_interventions_on_t5_pieces(ckpt):
    import torch

    from engine.intervene.sample import sample_intervened
    from engine.intervene.spec import parse_spec
    from engine.model.checkpoint import load_checkpoint
    from engine.model.sampler import sample_images

    ck = load_checkpoint(ckpt)
    plain = sample_images(ck, [OURS, FREE], [0, 0], sampling=SamplingSettings(steps=2))
    masked, _ = sample_intervened(ck, parse_spec("mask-head 1.1 tokens=relation", 2, 2, 2),
                                  [OURS, FREE], [0, 0], sampling=SamplingSettings(steps=2))  # fmt: skip
    # the relation's pieces ("up", "per", the lone start piece of "left"...) are masked: the
    # image changes; the free caption has no relation token, so masking changes nothing
    assert not torch.equal(masked[0], plain[0])
    assert torch.equal(masked[1], plain[1])
    _, captions = sample_intervened(
        ck, parse_spec("drop-words relation"), [OURS], [0], sampling=SamplingSettings(steps=2)
    )
    assert captions == ["red triangle is blue circle"]
    added, _ = sample_intervened(
        ck, parse_spec('embed-add "+above -below"'), [OURS], [0], sampling=SamplingSettings(steps=2)
    )
    assert not torch.equal(added[0], plain[0])


def test_screening_on_a_64x64_grid_matches_direct_products(ckpt):
    """Screening reads the transformer's own position embedding; on PixArt-Sigma's 64x64 grid
    its low-rank path gives the same maps as the direct q.k products."""
    import torch
    from diffusers import PixArtTransformer2DModel

    from engine.model.checkpoint import load_checkpoint
    from engine.probe.screening import position_features, relation_tokens, screen_model

    enc = load_checkpoint(ckpt).text_encoder
    torch.manual_seed(1)
    tr = PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                  out_channels=8, num_layers=2, cross_attention_dim=32,
                                  sample_size=128, patch_size=2, caption_channels=32,
                                  use_additional_conditions=False, norm_type="ada_norm_single",
                                  norm_elementwise_affine=False, norm_eps=1e-6,
                                  num_embeds_ada_norm=1000, attention_bias=True,
                                  activation_fn="gelu-approximate", interpolation_scale=2).eval()  # fmt: skip
    s = screen_model(tr, enc, ["above", "left"])
    assert s.grid == (64, 64) and s.maps.shape == (2, 2, 2, 64, 64)
    pos, grid = position_features(tr)
    assert torch.equal(pos, tr.pos_embed.pos_embed[0].float())  # the model's own buffer
    toks = relation_tokens(enc, tr, ["above", "left"])
    a = tr.transformer_blocks[1].attn2
    with torch.no_grad():
        q = a.to_q(pos).view(4096, 2, 16)[:, 1]  # head 1
        k = torch.nn.functional.linear(toks.relation_emb, a.to_k.weight).view(2, 2, 16)[:, 1]
        want = (k @ q.T * a.scale).reshape(2, 64, 64).numpy()
    assert np.allclose(s.maps[1, 1], want, atol=1e-4 * np.abs(want).max())


def test_screen_ablate_and_csv_export_through_the_cli(ckpt, tmp_path, capsys, monkeypatch):
    cache, prompts = tmp_path / "cache", tmp_path / "p.txt"
    prompts.write_text(f"{OURS}\nblue square is left of red circle\n")
    code, out, err = run_cli(["screen", ckpt, "--best", "--cache", cache, "--format", "csv"],
                             capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and {(r["layer"], r["head"]) for r in rows} == {
        (str(layer), str(head)) for layer in range(2) for head in range(2)
    }
    code, out, err = run_cli(["ablate", ckpt, "--intervention", "mask-head 1.1 tokens=relation",
                              "--n", 4, "--steps", 2, "--prompts", prompts, "--cache", cache,
                              "--format", "csv"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and all(
        float(r["ci_low"]) <= float(r["delta"]) <= float(r["ci_high"]) for r in rows
    )
    by_metric = {r["metric"]: r for r in rows}
    for r in by_metric.values():
        assert float(r["delta"]) == pytest.approx(float(r["intervened"]) - float(r["baseline"]))


def test_engine_lists_the_import_and_serves_its_heads_table(ckpt, tmp_path):
    """What the TUI shows comes from the engine: its checkpoint list and the heads table."""
    from engine.core import roots
    from engine.service.kinds import get_kind
    from engine.service.tables import TABLES, list_checkpoints, query

    prompts = tmp_path / "p.txt"
    prompts.write_text(f"{OURS}\n{FREE}\n")
    roots.configure(tmp_path / "cache", [ckpt.parent])
    try:
        (entry,) = [e for e in list_checkpoints() if e["name"] == ckpt.name]
        assert "error" not in entry and (entry["layers"], entry["heads"]) == (2, 2)
        assert entry["text"].startswith("t5:") and entry["codec"].startswith("vae:")
        kind = get_kind("synopsis")
        params = kind.check({"checkpoint": str(ckpt), "prompts": f"free:{prompts.name}",
                             "n_per_prompt": 1, "steps": 2}, str(tmp_path))  # fmt: skip
        assert params["prompts"] == f"free:{prompts}"

        class Rep:
            def progress(self, *a, **k):
                pass

            def log(self, line):
                pass

        kind(params, Rep())
        cols, rows = TABLES["heads"]({"checkpoint": ckpt.name, "query": "relation->background"})
        page = query(cols, rows, sort="score", limit=10)
        assert page["total"] == 4 and {"layer", "head", "score"} <= set(cols)
    finally:
        roots.configure("cache")


def test_export_of_an_import_is_refused(ckpt, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["export", ckpt, "--out", tmp_path / "x"], capsys, monkeypatch)
    assert code == 2 and err.startswith("error: ") and "imported pipeline" in err
    assert not (tmp_path / "x").exists()


def test_pixart_alpha_with_size_conditions(tmp_path):
    """PixArt-alpha at 1024 px conditions on image size and aspect ratio: the sampler passes
    them as its pipeline does (resolution = the image side), and the import records the class."""
    import torch

    from engine.model.checkpoint import load_checkpoint
    from engine.model.pipeline import import_pipeline
    from engine.model.sampler import model_kwargs, sample_images

    pipe = build_tiny_pipeline(tmp_path / "alpha", layers=1, alpha=True)
    ck = import_pipeline(pipe, tmp_path / "ck")
    assert json.loads((ck / "workbench.json").read_text())["pipeline"]["class"] == (
        "PixArtAlphaPipeline"
    )
    model = load_checkpoint(ck)
    kw = model_kwargs(model.transformer, 3)["added_cond_kwargs"]
    assert torch.equal(kw["resolution"], torch.tensor([[32.0, 32.0]] * 3))
    assert torch.equal(kw["aspect_ratio"], torch.ones(3, 1))
    images = sample_images(model, [OURS], [0], sampling=SamplingSettings(steps=2))
    assert images.shape == (1, 32, 32, 3)


def test_synopsis_batch_fits_free_memory(ckpt):
    from engine.model.checkpoint import load_checkpoint
    from engine.model.pipeline import fit_batch, synopsis_bytes_per_sample

    ck = load_checkpoint(ckpt)
    assert fit_batch(ck, 32) == 32  # on the CPU the requested batch stays
    one = synopsis_bytes_per_sample(ck.transformer, 16)
    # 64 tokens x width 32, CFG pair in float32, (8 + 2 layers) activations
    assert one == 2 * 64 * 32 * 4 * 10
    assert fit_batch(ck, 32, free_bytes=int(10 * one / 0.6) + 1) == 10
    assert fit_batch(ck, 4, free_bytes=10**12) == 4 and fit_batch(ck, 4, free_bytes=1) == 1
    with_self = synopsis_bytes_per_sample(ck.transformer, 16, self_attn=True)
    assert with_self == one + 2 * 2 * 64 * 64 * 4 * 3


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_tui_opens_the_import_and_exports_its_heads_table(pipe, tmp_path):
    """The real app at 80x24 with a real engine on an imported pipeline: its heads table,
    exported with `e`, is the CLI's `heads --format csv`, byte for byte."""
    import subprocess

    from tmux_app import CLI, export_in_app, heads_csv, tmux_env

    from engine.model.pipeline import import_pipeline

    work = tmp_path / "w"
    (work / "checkpoints").mkdir(parents=True)
    ck = import_pipeline(pipe, work / "checkpoints" / "pixart")
    env = tmux_env()
    (work / "p.txt").write_text(f"{OURS}\n{FREE}\n")
    r = subprocess.run([*CLI, "synopsis", str(ck), "--prompts", "free:p.txt", "--n-per-prompt",
                        "1", "--steps", "2"], cwd=work, env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    want = heads_csv(ck, work, env)
    assert want.count("\n") == 5
    assert export_in_app(work, env, 4) == want
