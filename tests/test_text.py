"""engine.text: categories, rte / rte-nopos, MiniLM and T5 encoders behind one interface."""

from __future__ import annotations

import json

import pytest
import torch

from engine.core.errors import UserError
from engine.data.prompts import eval_prompts
from engine.data.scenes import sample_scenes
from engine.text import (
    CATEGORIES,
    MAX_LENGTH,
    Tokens,
    build_text_encoder,
    load_text_encoder,
    word_categories,
)
from engine.text.categories import subword_categories
from engine.text.rte import dataset_vocabulary, sinusoidal_position_encoding

# --- categories ---------------------------------------------------------------------------


def _cats(caption: str) -> list[tuple[str, str]]:
    words = caption.split()
    return list(zip(words, word_categories(words), strict=True))


def test_categories_full_caption_multiword_phrase():
    assert _cats("red square is to the lower right of blue triangle") == [
        ("red", "color1"),
        ("square", "shape1"),
        ("is", "filler"),
        ("to", "relation"),
        ("the", "relation"),
        ("lower", "relation"),
        ("right", "relation"),
        ("of", "relation"),
        ("blue", "color2"),
        ("triangle", "shape2"),
    ]


def test_categories_without_colours_and_longest_phrase():
    assert word_categories("circle is directly above square".split()) == [
        "shape1",
        "filler",
        "relation",
        "relation",
        "shape2",
    ]
    # "above and to the left of" must win over "above", "to the left of" and "left of".
    assert word_categories("square is above and to the left of blue circle".split()) == [
        "shape1",
        "filler",
        *["relation"] * 6,
        "color2",
        "shape2",
    ]
    assert word_categories("square is to the lower right of blue triangle".split())[0] == "shape1"


def test_categories_inserted_filler_and_removed_relation():
    assert _cats("the red square is above the blue circle") == [
        ("the", "filler"),
        ("red", "color1"),
        ("square", "shape1"),
        ("is", "filler"),
        ("above", "relation"),
        ("the", "filler"),
        ("blue", "color2"),
        ("circle", "shape2"),
    ]
    # Relation removed: no word is a relation, shapes and colours still found.
    assert word_categories("red square is blue circle".split()) == [
        "color1",
        "shape1",
        "filler",
        "color2",
        "shape2",
    ]


def test_categories_robust_to_missing_parts():
    assert word_categories([]) == []
    assert word_categories(["the"]) == ["filler"]
    # One shape only: its side of the relation decides.
    assert word_categories("is above blue circle".split()) == [
        "filler",
        "relation",
        "color2",
        "shape2",
    ]
    assert word_categories("red square is above".split()) == [
        "color1",
        "shape1",
        "filler",
        "relation",
    ]
    # A colour with no shape after it is placed by the relation.
    assert word_categories("red is left of blue".split()) == [
        "color1",
        "filler",
        "relation",
        "relation",
        "color2",
    ]
    assert set(word_categories("xyz foo circle bar".split())) <= set(CATEGORIES)


def test_categories_every_dataset_caption():
    captions = [p.text for p in eval_prompts()] + [s.caption for s in sample_scenes(50, seed=3)]
    for caption in captions:
        cats = word_categories(caption.split())
        assert cats.count("shape1") == 1 and cats.count("shape2") == 1, caption
        assert "relation" in cats and "pad" not in cats, caption
        assert cats[cats.index("shape1") + 1] == "filler", caption  # "is"


def test_subword_categories_from_offsets():
    caption = "red triangle is above square."
    # Hand-made offsets: [CLS] red tri ##angle is above square . [SEP] pad
    offsets = [(0, 0), (0, 3), (4, 7), (7, 12), (13, 15), (16, 21), (22, 28), (28, 29), (0, 0)]
    offsets.append((0, 0))
    mask = [1] * 9 + [0]
    special = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert subword_categories(caption, offsets, mask, special) == [
        "filler",
        "color1",
        "shape1",
        "shape1",
        "filler",
        "relation",
        "shape2",
        "filler",
        "filler",
        "pad",
    ]


# --- rte ------------------------------------------------------------------------------------

CAPTIONS = [
    "red square is to the lower right of blue triangle",
    "circle is above square",
    "",
    "The red triangle is left of the blue circle.",
]


def test_rte_shapes_mask_tokens():
    enc = build_text_encoder("rte", seed=0)
    assert enc.spec == "rte" and enc.dim == 384 and enc.max_length == MAX_LENGTH
    emb, mask = enc.encode(CAPTIONS)
    assert emb.shape == (4, MAX_LENGTH, 384) and emb.dtype == torch.float32
    assert mask.shape == (4, MAX_LENGTH)
    assert mask.sum(1).tolist() == [10, 4, 1, 9]
    tok = enc.tokenize(CAPTIONS)
    assert isinstance(tok, Tokens) and len(tok) == 4
    assert all(
        len(w) == MAX_LENGTH and len(c) == MAX_LENGTH
        for w, c in zip(tok.words, tok.categories, strict=True)
    )
    assert tok.words[3][:4] == ["the", "red", "triangle", "is"]
    assert tok.categories[3][:6] == ["filler", "color1", "shape1", "filler", "relation", "relation"]
    assert tok.words[1][4] == "<pad>" and tok.categories[1][4] == "pad"
    assert tok.ids.shape == (4, MAX_LENGTH)
    assert torch.equal(tok.mask, mask)


def test_rte_empty_caption_no_nan():
    for spec in ("rte", "rte-nopos"):
        enc = build_text_encoder(spec)
        emb, mask = enc.encode([""])
        assert mask[0, 0] == 1 and mask.sum() == 1
        assert torch.isfinite(emb).all() and emb[0, 0].abs().sum() > 0
        tok = enc.tokenize([""])
        assert tok.words[0][0] == "<empty>" and tok.categories[0][0] == "filler"
        # Attention over the single real token is defined.
        att = torch.softmax(emb[0] @ emb[0].T / 20 + (1 - mask[0]) * -1e9, dim=-1)
        assert torch.isfinite(att).all()


def test_rte_seed_determinism():
    a, _ = build_text_encoder("rte", seed=0).encode(CAPTIONS)
    b, _ = build_text_encoder("rte", seed=0).encode(CAPTIONS)
    c, _ = build_text_encoder("rte", seed=1).encode(CAPTIONS)
    assert torch.equal(a, b)
    assert not torch.allclose(a[:, :2], c[:, :2])
    # Entries are N(0, 1).
    table = build_text_encoder("rte", seed=0).table[1:]
    assert abs(table.mean().item()) < 0.05 and abs(table.std().item() - 1) < 0.05


def test_rte_nopos_is_rte_minus_position_encoding():
    rte = build_text_encoder("rte", seed=5)
    nopos = build_text_encoder("rte-nopos", seed=5)
    assert nopos.spec == "rte-nopos" and nopos.dim == rte.dim
    caps = ["red square is above blue circle", "the red square is above the blue circle"]
    e1, m1 = rte.encode(caps)
    e0, m0 = nopos.encode(caps)
    assert torch.equal(m1, m0)
    pe = sinusoidal_position_encoding(MAX_LENGTH, 384)
    torch.testing.assert_close(e1 - e0, pe.expand_as(e1))
    # "red" at position 0 vs 1: same vector without positions, different with them.
    assert torch.equal(e0[0, 0], e0[1, 1])
    assert not torch.allclose(e1[0, 0], e1[1, 1])
    # Padding: zero vector (+ position code for rte).
    assert torch.equal(e0[0, 10], torch.zeros(384))
    torch.testing.assert_close(e1[0, 10], pe[10])


def test_position_encoding_formula():
    pe = sinusoidal_position_encoding(MAX_LENGTH, 8)
    assert pe.shape == (MAX_LENGTH, 8)
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * 4))
    torch.testing.assert_close(pe[3, 2], torch.sin(torch.tensor(3 / 10000 ** (2 / 8))))
    torch.testing.assert_close(pe[3, 3], torch.cos(torch.tensor(3 / 10000 ** (2 / 8))))


def test_rte_save_load_roundtrip(tmp_path):
    for spec, seed in (("rte", 7), ("rte-nopos", 3), ("rte:64", 1)):
        enc = build_text_encoder(spec, seed=seed)
        ckpt = tmp_path / spec.replace(":", "_")
        enc.save(ckpt)
        assert (ckpt / "text_encoder" / "rte.safetensors").is_file()
        cfg = json.loads((ckpt / "text_encoder" / "config.json").read_text())
        assert cfg["spec"] == spec and cfg["seed"] == seed
        back = load_text_encoder(ckpt)
        assert back.spec == spec and back.dim == enc.dim
        a, ma = enc.encode(CAPTIONS)
        b, mb = back.encode(CAPTIONS)
        assert torch.equal(a, b) and torch.equal(ma, mb)
    assert build_text_encoder("rte:64").dim == 64


def test_rte_load_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_text_encoder(tmp_path / "nope")
    with pytest.raises(UserError, match="no text_encoder/config.json"):
        load_text_encoder(tmp_path)
    enc = build_text_encoder("rte")
    enc.save(tmp_path)
    (tmp_path / "text_encoder" / "rte.safetensors").unlink()
    with pytest.raises(UserError, match="rte.safetensors"):
        load_text_encoder(tmp_path)
    enc.save(tmp_path)
    cfg_path = tmp_path / "text_encoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["vocab"] = cfg["vocab"][:-1]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="mismatch"):
        load_text_encoder(tmp_path)


def test_rte_unknown_word_lists_vocabulary():
    enc = build_text_encoder("rte")
    with pytest.raises(UserError) as info:
        enc.encode(["red hexagon is above blue circle"])
    msg = str(info.value)
    assert "'hexagon'" in msg and "red hexagon is above blue circle" in msg
    for word in ("circle", "diagonally", "the", "above"):
        assert word in msg
    assert "\n" not in msg
    assert set(dataset_vocabulary()) >= {"red", "blue", "is", "the", "a", "an", "<pad>"}


def test_rte_too_long_and_bad_specs():
    enc = build_text_encoder("rte")
    long = " ".join(["the"] * 15) + " red square is above blue circle"
    with pytest.raises(UserError, match=r"needs 21 words.*more than the 20"):
        enc.encode([long])
    enc.encode([" ".join(["the"] * 14) + " red square is above blue circle"])  # 20 is fine
    with pytest.raises(UserError, match="list of captions"):
        enc.encode("red square is above blue circle")
    for spec in ("bert", "", "rte:7", "rte:x", "t5:"):
        with pytest.raises(UserError):
            build_text_encoder(spec)


# --- minilm ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    try:
        yield build_text_encoder("minilm")
    finally:
        mp.undo()


def test_minilm(minilm, tmp_path):
    assert minilm.spec == "minilm" and minilm.dim == 384
    assert not any(p.requires_grad for p in minilm.model.parameters())
    assert not minilm.model.training
    caps = ["red square is to the left of blue triangle", "triangle is above circle", ""]
    emb, mask = minilm.encode(caps)
    assert emb.shape == (3, MAX_LENGTH, 384) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    assert mask[2].sum() == 2  # [CLS] [SEP]
    assert not torch.allclose(emb[0], emb[1])
    tok = minilm.tokenize(caps)
    for words, cats in zip(tok.words, tok.categories, strict=True):
        assert len(words) == len(cats) == MAX_LENGTH
        assert set(cats) <= set(CATEGORIES)
    w0, c0 = tok.words[0], tok.categories[0]
    assert w0[0] == "[CLS]" and c0[0] == "filler"
    tri = [c for w, c in zip(w0, c0, strict=True) if "tri" in w or "angle" in w]
    assert tri and set(tri) == {"shape2"}
    assert c0[w0.index("square")] == "shape1" and c0[w0.index("red")] == "color1"
    assert [c for c in c0 if c == "relation"] == ["relation"] * 4
    assert c0[w0.index("[SEP]")] == "filler" and w0[-1] == "<pad>" and c0[-1] == "pad"
    assert tok.categories[1][1] == "shape1" and "shape2" in tok.categories[1]
    # Save writes only a config; load checks it.
    minilm.save(tmp_path)
    cfg = json.loads((tmp_path / "text_encoder" / "config.json").read_text())
    assert cfg["spec"] == "minilm" and cfg["dim"] == 384
    with pytest.raises(UserError, match="needs \\d+ tokens"):
        minilm.encode([" ".join(["the"] * 19) + " square"])


# --- t5 -------------------------------------------------------------------------------------


def _tiny_t5(directory):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in dataset_vocabulary()[2:]:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(directory)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(directory)


def test_t5_tiny(tmp_path):
    d = tmp_path / "t5"
    _tiny_t5(d)
    enc = build_text_encoder(f"t5:{d}")
    assert enc.spec == f"t5:{d.resolve()}" and enc.dim == 32
    assert not any(p.requires_grad for p in enc.model.parameters())
    caps = ["red square is to the upper left of blue circle", "circle is below triangle", ""]
    emb, mask = enc.encode(caps)
    assert emb.shape == (3, MAX_LENGTH, 32) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    assert mask.sum(1).tolist() == [11, 5, 1]  # words + </s>; "" is just </s>
    tok = enc.tokenize(caps)
    assert tok.words[0][:3] == ["red", "square", "is"] and tok.words[0][10] == "</s>"
    assert tok.categories[0][:11] == [
        "color1",
        "shape1",
        "filler",
        *["relation"] * 5,
        "color2",
        "shape2",
        "filler",
    ]
    assert tok.categories[0][11:] == ["pad"] * 9 and tok.words[0][11] == "<pad>"
    assert tok.categories[2][0] == "filler" and tok.words[2][0] == "</s>"
    assert not torch.allclose(emb[0], emb[1])
    with pytest.raises(UserError, match="needs 21 tokens"):
        enc.encode([" ".join(["the"] * 16) + " red square is above"])
    # Save + load restores the same encoder.
    ckpt = tmp_path / "ckpt"
    enc.save(ckpt)
    back = load_text_encoder(ckpt)
    assert back.spec == enc.spec
    torch.testing.assert_close(back.encode(caps)[0], emb)
    # A checkpoint pointing at a different model is refused.
    cfg_path = ckpt / "text_encoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["fingerprint"] = "0" * 16
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="fingerprint"):
        load_text_encoder(ckpt)
    d.rename(tmp_path / "moved")
    with pytest.raises(UserError, match="cannot be loaded: T5 directory .* does not exist"):
        load_text_encoder(ckpt)


def test_t5_missing_or_wrong_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_text_encoder(f"t5:{tmp_path / 'missing'}")
    with pytest.raises(UserError, match="config.json"):
        build_text_encoder(f"t5:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="not a T5"):
        build_text_encoder(f"t5:{tmp_path}")
