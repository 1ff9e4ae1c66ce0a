"""Weight-space screening: reference ramps, metrics, analytic heads, the model's own attention,
random heads, errors, the CLI and the stored run."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine.core.errors import UserError
from engine.core.sampling import SamplingSettings
from engine.data.relations import RELATIONS
from engine.probe import screening as S

# --- reference ramps and metrics (no model) -------------------------------------------------


def test_reference_ramps_point_the_right_way_y_down():
    above = S.reference_ramp("above")
    assert above.shape == (8, 8)
    assert np.allclose(above[0], 1) and np.allclose(above[-1], -1)  # row 0 is the image top
    assert np.allclose(above, above[:, :1])  # constant along x
    assert np.allclose(S.reference_ramp("below"), -above)
    left = S.reference_ramp("left")
    assert np.allclose(left[:, 0], 1) and np.allclose(left[:, -1], -1)
    lr = S.reference_ramp("lower-right")
    assert lr[-1, -1] == pytest.approx(1) and lr[0, 0] == pytest.approx(-1)
    assert lr[0, -1] == pytest.approx(0) and lr[-1, 0] == pytest.approx(0)
    # diagonals combine the two axis ramps
    assert np.allclose(
        S.reference_ramp("upper-left"), (S.reference_ramp("above") + S.reference_ramp("left")) / 2
    )
    for r in RELATIONS:
        assert abs(S.reference_ramp(r).mean()) < 1e-12
    # the screening's grid follows the relation data's convention: "above" means y1 < y2
    from engine.data.relations import relation_of

    assert relation_of(0, -20) == "above"


def test_metrics_of_a_scaled_shifted_ramp():
    refs = S.references(RELATIONS)
    m = 3.0 * S.reference_ramp("above") + 5.0  # offset: the query bias, removed by centring
    sc = S.score_maps(np.broadcast_to(m, refs.shape), refs)
    i = {r: k for k, r in enumerate(RELATIONS)}
    assert sc["cosine"][i["above"]] == pytest.approx(1)
    assert sc["cosine"][i["below"]] == pytest.approx(-1)
    assert sc["cosine"][i["left"]] == pytest.approx(0, abs=1e-12)
    assert sc["cosine"][i["upper-left"]] == pytest.approx(1 / math.sqrt(2))
    assert sc["projection"][i["above"]] == pytest.approx(3)
    assert sc["energy"][i["above"]] == pytest.approx(1)
    assert sc["energy"][i["lower-left"]] == pytest.approx(-0.5)
    # a flat map scores 0, not NaN
    flat = S.score_maps(np.ones((8, 8, 8)), refs)
    assert np.all(flat["cosine"] == 0)


def test_fitted_direction_and_head_summary():
    rel, angle = S.direction_of(S.fit_plane(S.reference_ramp("above")))
    assert rel == "above" and angle == pytest.approx(90)
    rel, _ = S.direction_of(S.fit_plane(S.reference_ramp("lower-left")))
    assert rel == "lower-left"
    scores = np.array([[[0.9, -0.9, 0.0, 0.0, 0.5, 0.5, -0.5, -0.5]]])
    summ = S.head_summary(scores)
    assert summ["best"][0, 0] == 0 and summ["best_score"][0, 0] == pytest.approx(0.9)
    assert summ["selectivity"][0, 0] == pytest.approx(0.9 - (-0.9) / 7)


def test_bad_names_are_one_line_errors_listing_valid_values():
    with pytest.raises(UserError, match="upper-left.*lower-right") as e:
        S.check_relation("abve")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="cosine, projection, energy"):
        S.check_metric("dot")
    with pytest.raises(UserError, match="layers 0-2, heads 0-2"):
        S.parse_head("3.0", 3, 3)
    with pytest.raises(UserError, match="layers 0-2, heads 0-2"):
        S.parse_head("0.3", 3, 3)
    with pytest.raises(UserError, match="LAYER.HEAD"):
        S.parse_head("L1H2", 3, 3)
    assert S.parse_head("2.1", 3, 3) == (2, 1)


def test_compare_rankings():
    a = {(0, h): float(h) for h in range(6)}
    res = S.compare_rankings(a, dict(a), k=2)
    assert res["spearman"] == pytest.approx(1) and res["topk_overlap"] == 1
    assert res["top_a"] == [(0, 5), (0, 4)]
    rev = {k: -v for k, v in a.items()}
    res = S.compare_rankings(a, rev, k=2)
    assert res["spearman"] == pytest.approx(-1) and res["topk_overlap"] == 0
    with pytest.raises(UserError, match="share 0 heads"):
        S.compare_rankings(a, {(9, 9): 1.0})


# --- a model built in memory ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    from engine.model.presets import PRESETS, build_transformer
    from engine.text import build_text_encoder

    torch.manual_seed(0)
    enc = build_text_encoder("rte", seed=0)
    tr = build_transformer(PRESETS["nano"], 3, 32, 4, enc.dim).eval().requires_grad_(False)
    return tr, enc


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x with a @ x = b (least squares, float64), checked to be exact."""
    x = torch.linalg.lstsq(a.double(), b.double(), driver="gelsd").solution
    assert torch.allclose(a.double() @ x, b.double(), atol=1e-6)
    return x.float()


def _plant(tr, enc, layer: int, head: int, q_targets: torch.Tensor, k_targets: torch.Tensor):
    """Set head (layer, head) so that q(p) . k(w) * scale = sum_j q_targets[p, j] k_targets[w, j]
    for the position features p and the relation words w; returns the original weights."""
    attn = tr.transformer_blocks[layer].attn2
    pos, _ = S.position_features(tr)
    rel = S.relation_tokens(enc, tr, RELATIONS).relation_emb  # [8, D]
    d = attn.to_q.out_features // attn.heads
    rows = slice(head * d, (head + 1) * d)
    saved = {n: getattr(attn, n).weight.clone() for n in ("to_q", "to_k")}
    saved["bq"] = attn.to_q.bias.clone()
    j = q_targets.shape[1]
    # the query bias reaches the map as a per-word constant: let it be random to show centring
    wq = torch.zeros(d, pos.shape[1])
    wq[:j] = _solve(pos, q_targets - attn.to_q.bias[rows][:j]).T
    wk = torch.zeros(d, rel.shape[1])
    wk[:j] = _solve(rel, k_targets / attn.scale).T
    attn.to_q.weight[rows] = wq
    attn.to_k.weight[rows] = wk
    return saved


def _restore(tr, layer, saved):
    attn = tr.transformer_blocks[layer].attn2
    attn.to_q.weight.copy_(saved["to_q"])
    attn.to_k.weight.copy_(saved["to_k"])
    attn.to_q.bias.copy_(saved["bq"])


def _ramp(rel: str) -> torch.Tensor:
    return torch.tensor(S.reference_ramp(rel).reshape(-1), dtype=torch.float32)


def test_analytic_above_head_scores_one_for_above_and_minus_one_for_below(model):
    tr, enc = model
    layer, head = 1, 2
    # every relation word's map is exactly the "above" ramp
    saved = _plant(tr, enc, layer, head, _ramp("above")[:, None], torch.ones(8, 1))
    try:
        s = S.screen_model(tr, enc)
    finally:
        _restore(tr, layer, saved)
    assert s.maps.shape == (3, 3, 8, 8, 8) and s.grid == (8, 8)
    m = s.maps[layer, head, RELATIONS.index("above")]
    assert np.allclose(m - m.mean(), S.reference_ramp("above"), atol=1e-4)
    cos = dict(zip(RELATIONS, s.scores["cosine"][layer, head], strict=True))
    assert cos["above"] == pytest.approx(1, abs=1e-4)
    assert cos["below"] == pytest.approx(-1, abs=1e-4)
    assert abs(cos["left"]) < 1e-3 and abs(cos["right"]) < 1e-3
    assert cos["upper-left"] == pytest.approx(1 / math.sqrt(2), abs=1e-3)
    assert s.scores["projection"][layer, head, 0] == pytest.approx(1, abs=1e-3)
    assert s.scores["energy"][layer, head, 0] == pytest.approx(1, abs=1e-3)
    summ = s.summary("cosine")
    assert RELATIONS[summ["best"][layer, head]] == "above"
    # a word-independent map reads no relation: its mean over the eight relations is zero
    assert abs(summ["mean"][layer, head]) < 1e-3
    row = S.relation_rows(s, "above", "cosine")[0]
    assert (row["layer"], row["head"], row["rank"]) == (layer, head, 1)
    # contrast screening removes what all relation words share: nothing is left here
    saved = _plant(tr, enc, layer, head, _ramp("above")[:, None], torch.ones(8, 1))
    try:
        c = S.screen_model(tr, enc, contrast=True)
    finally:
        _restore(tr, layer, saved)
    assert np.abs(c.maps[layer, head]).max() < 1e-3


def test_analytic_relation_head_ranks_first(model):
    """A head whose map of each relation word ramps in that word's own direction."""
    tr, enc = model
    layer, head = 2, 0
    q = torch.stack([_ramp("left") * -1, _ramp("above") * -1], 1)  # x right, y down
    from engine.data.relations import DIRECTIONS

    k = torch.tensor([DIRECTIONS[r] for r in RELATIONS], dtype=torch.float32)
    k = k / torch.tensor([2.0 if a and b else 1.0 for a, b in DIRECTIONS.values()])[:, None]
    saved = _plant(tr, enc, layer, head, q, k)
    try:
        s = S.screen_model(tr, enc)
        sc = S.screen_model(tr, enc, contrast=True)
    finally:
        _restore(tr, layer, saved)
    assert np.allclose(s.scores["cosine"][layer, head], 1, atol=1e-3)
    assert np.allclose(sc.scores["cosine"][layer, head], 1, atol=1e-3)  # all word-specific
    for rel, ref in zip(RELATIONS, s.refs, strict=True):
        m = s.maps[layer, head, RELATIONS.index(rel)]
        assert np.allclose(m - m.mean(), ref, atol=1e-3)
    best = S.best_rows(s)
    assert (best[0]["layer"], best[0]["head"]) == (layer, head)
    assert best[0]["mean"] == pytest.approx(1, abs=1e-3)
    # every other head of this random model is far below
    assert best[1]["mean"] < 0.6


def test_maps_are_the_models_own_cross_attention_logits(model):
    """With hidden states = the position features and the caption-projected relation tokens as
    text, diffusers' attention computes the same logits (up to the key bias, which is the same
    for every text token at a position and cancels in the softmax)."""
    from engine.probe.hooks import Hook, hooked

    tr, enc = model
    pos, grid = S.position_features(tr)
    toks = S.relation_tokens(enc, tr, RELATIONS)
    keys = torch.cat([toks.relation_emb, toks.token_emb])
    maps = S.qk_maps(tr, pos, keys)  # [L, H, K, N]

    got = {}

    class Capture(Hook):
        def wants_probs(self, site):
            return site.attn == "cross"

        def scores(self, site, s):
            got[site.layer] = s[0].detach().clone()  # [H, N, K]

    with hooked(tr, [Capture()], cfg=False), torch.no_grad():
        for block in tr.transformer_blocks:
            block.attn2(pos[None], encoder_hidden_states=keys[None])
    for layer in range(len(tr.transformer_blocks)):
        ours = torch.from_numpy(maps[layer]).transpose(1, 2)  # [H, N, K]
        theirs = got[layer]
        centre = lambda x: x - x.mean(-1, keepdim=True)  # noqa: E731
        assert torch.allclose(centre(ours), centre(theirs), atol=1e-4)


def test_position_features_are_what_the_model_adds_row_major_from_the_top(model):
    tr, _ = model
    pos, grid = S.position_features(tr)
    assert grid == (8, 8) and pos.shape == (64, tr.inner_dim)
    pe = tr.pos_embed
    with torch.no_grad():
        proj_w, proj_b = pe.proj.weight.clone(), pe.proj.bias.clone()
        pe.proj.weight.zero_()
        pe.proj.bias.zero_()
        try:
            x = torch.zeros(1, 3, 32, 32)
            assert torch.allclose(pe(x)[0], pos)  # exactly the added features
            # token order: n = row * 8 + col, row 0 at the top of the image
            pe.proj.weight[0].fill_(1.0)
            x[:, :, 4:8, 20:24] = 1.0  # grid row 1, column 5
            assert int(pe(x)[0, :, 0].sub(pos[:, 0]).argmax()) == 1 * 8 + 5
        finally:
            pe.proj.weight.copy_(proj_w)
            pe.proj.bias.copy_(proj_b)


def test_random_heads_score_near_zero():
    """Random weights: no relation structure. Each single map of a random head is roughly a
    ramp in a random direction (the low-frequency sin-cos features are nearly linear in x and
    y), so single scores scatter around 0; the relation-head score (mean over the eight
    relations) of each head is close to 0."""
    from engine.model.presets import PRESETS, build_transformer
    from engine.text import build_text_encoder

    enc = build_text_encoder("rte", seed=1)
    means, singles = [], []
    for seed in range(2):
        torch.manual_seed(seed)
        tr = build_transformer(PRESETS["mini"], 3, 32, 4, enc.dim).eval()
        s = S.screen_model(tr, enc)
        means.append(s.summary("cosine")["mean"].ravel())
        singles.append(s.scores["cosine"].ravel())
    means, singles = np.concatenate(means), np.concatenate(singles)
    assert abs(singles.mean()) < 0.1
    assert abs(means.mean()) < 0.1
    assert np.abs(means).max() < 0.5
    assert np.percentile(np.abs(means), 90) < 0.3


def test_multiword_phrases_have_per_token_maps(model):
    tr, enc = model
    s = S.screen_model(tr, enc)
    i = RELATIONS.index("left")
    toks = [t for t, r in enumerate(s.token_relation) if r == i]
    assert [s.token_text[t] for t in toks] == ["to", "the", "left", "of"]
    # by linearity of the key, the phrase map is the mean of its token maps
    assert np.allclose(s.maps[:, :, i], s.token_maps[:, :, toks].mean(2), atol=1e-5)
    assert s.token_scores["cosine"].shape == (3, 3, len(s.token_text))
    rows = S.token_rows(s, "left")
    assert len(rows) == 9 * 4 and {r["token"] for r in rows} == {"to", "the", "left", "of"}
    # all phrasings: averaged phrase maps
    a = S.screen_model(tr, enc, relations=["above"], phrasings="all")
    assert a.phrases == [["above", "directly above", "higher than"]]


def test_minilm_encoder_screens(model):
    """A contextual encoder: relation tokens are found by category in the template captions."""
    from engine.model.presets import PRESETS, build_transformer
    from engine.text import build_text_encoder

    enc = build_text_encoder("minilm")
    torch.manual_seed(0)
    tr = build_transformer(PRESETS["nano"], 3, 32, 4, enc.dim).eval()
    s = S.screen_model(tr, enc, relations=["above", "upper-left"])
    assert s.maps.shape == (3, 3, 2, 8, 8)
    assert "upper" in s.token_text and np.isfinite(s.scores["cosine"]).all()


# --- the CLI and the cache -----------------------------------------------------------------


def _cli(args, capsys):
    from workbench import cli

    argv = sys.argv
    sys.argv = ["dit-workbench", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_csv_lists_every_head_x_relation_and_stores_the_run(nano_ckpt, tmp_path):
    cache = tmp_path / "cache"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "screen",
            str(nano_ckpt),
            "--format",
            "csv",
            "--cache",
            str(cache),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3 * 3 * 8
    assert {(int(x["layer"]), int(x["head"]), x["relation"]) for x in rows} == {
        (layer, head, rel) for layer in range(3) for head in range(3) for rel in RELATIONS
    }
    assert [int(x["rank"]) for x in rows] == list(range(1, 73))
    cos = [float(x["cosine"]) for x in rows]
    assert cos == sorted(cos, reverse=True)

    from engine.model.checkpoint import read_meta
    from engine.store.cache import Store

    files = list(cache.glob("*.h5"))
    assert len(files) == 1
    store = Store(files[0])
    (run,) = store.runs("screening")
    attrs = store.attrs("screening", run)
    _, meta = read_meta(nano_ckpt)
    assert attrs["checkpoint_hash"] == meta["hashes"]["transformer"]
    assert json.loads(attrs["params"])["relations"] == list(RELATIONS)
    assert "screen" in attrs["command"] and attrs["approximation"]
    s = S.load_screening(store, run)
    assert s.maps.shape == (3, 3, 8, 8, 8)
    got = {(int(x["layer"]), int(x["head"]), x["relation"]): float(x["cosine"]) for x in rows}
    assert got[(1, 2, "below")] == pytest.approx(float(s.scores["cosine"][1, 2, 1]), abs=1e-6)


def test_cli_modes_reuse_and_errors(nano_ckpt, tmp_path, capsys):
    cache = tmp_path / "c"
    base = ["screen", nano_ckpt, "--cache", cache]
    code, out, err = _cli([*base, "--best", "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["rows"]) == 9 and doc["run"]
    assert {"mean", "best_relation", "best", "selectivity", "rank"} <= set(doc["rows"][0])
    # the stored run is reused, not duplicated
    code, out, err = _cli([*base, "--relation", "left", "--top", "4", "--format", "csv"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and {x["relation"] for x in rows} == {"left"}
    from engine.store.cache import Store

    (f,) = cache.glob("*.h5")
    assert len(Store(f).runs("screening")) == 1
    # --map: the map beside the ramp; csv gives 64 cells, json the two 8x8 grids
    code, out, err = _cli([*base, "--map", "2.1", "--relation", "above"], capsys)
    assert code == 0, err
    assert "L2H1" in out and "ramp 'above'" in out and "cosine" in out
    code, out, err = _cli(
        [*base, "--map", "2.1", "--relation", "above", "--format", "json"], capsys
    )
    d = json.loads(out)["maps"][0]
    assert np.array(d["qk"]).shape == (8, 8) and d["reference"][0][0] == pytest.approx(1)
    code, out, err = _cli([*base, "--map", "0.0", "-r", "below", "--format", "csv"], capsys)
    assert len(list(csv.DictReader(io.StringIO(out)))) == 64
    # --tokens
    code, out, err = _cli([*base, "--tokens", "-r", "right", "--format", "csv"], capsys)
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out)))) == 9 * 4
    # errors: one line, exit 2, nothing stored
    for args, needle in (
        (["--relation", "abve"], "above, below"),
        (["--map", "3.0"], "layers 0-2, heads 0-2"),
        (["--map", "0.7"], "layers 0-2, heads 0-2"),
        (["--metric", "dot"], "cosine, projection, energy"),
    ):
        code, out, err = _cli([*base, *args], capsys)
        assert code == 2 and needle in err and err.count("\n") == 1, err
    assert len(Store(f).runs("screening")) == 1
    # --compare without a synopsis run: a clear error
    code, out, err = _cli([*base, "--compare"], capsys)
    assert code == 2 and "synopsis" in err


def test_engine_job_and_tables(nano_ckpt, tmp_path):
    from engine.core import roots
    from engine.service.kinds import get_kind
    from engine.service.probe_tables import screen_map_table, screening_table

    class Report:
        def __init__(self):
            self.lines = []

        def progress(self, fraction, phase=None, eta_s=None):
            pass

        def log(self, line):
            self.lines.append(line)

    saved = (roots.cache_dir(), roots.checkpoint_roots())
    roots.configure(tmp_path / "cache", [nano_ckpt.parent])
    try:
        kind = get_kind("screen")
        p = kind.check({"checkpoint": str(nano_ckpt)}, None)
        assert p["cache"] == str(tmp_path / "cache") and p["phrasings"] == "first"
        with pytest.raises(UserError, match="phrasings"):
            kind.check({"checkpoint": str(nano_ckpt), "phrasings": "some"}, None)
        rep = Report()
        res = kind(p, rep)
        assert res["run"] and "stored as" in rep.lines[0] and "rows" not in res
        cols, rows = screening_table({"checkpoint": nano_ckpt.name, "relation": "below"})
        assert cols == ["layer", "head", "relation", "cosine", "projection", "energy", "rank"]
        assert len(rows) == 9 and {r[2] for r in rows} == {"below"}
        cols, rows = screen_map_table(
            {"checkpoint": str(nano_ckpt), "layer": "1", "head": "2", "relation": "left"}
        )
        maps = dict(rows)
        assert np.array(maps["qk"]).shape == (8, 8) and maps["reference"][0][0] == 1.0
        with pytest.raises(UserError, match="layers 0-2"):
            screen_map_table({"checkpoint": str(nano_ckpt), "layer": "5", "head": "0"})
    finally:
        roots.configure(*saved)


def test_cli_compare_with_a_stored_synopsis_ranking(nano_ckpt, tmp_path, capsys):
    """--compare: Spearman and top-k overlap between screening and a real synopsis ranking."""
    from scipy.stats import spearmanr

    from engine.data.prompts import parse_prompt
    from engine.model.checkpoint import load_checkpoint
    from engine.probe.ranking import rank_heads
    from engine.probe.synopsis import run_synopsis
    from engine.store.cache import Store

    cache = tmp_path / "cache"
    ck = load_checkpoint(nano_ckpt)
    s = S.screen(ck)
    store = Store.for_checkpoint(ck, cache)
    S.save_screening(store, s)
    prompts = [parse_prompt("red square is above blue circle")]
    run = run_synopsis(
        ck, prompts, n_per_prompt=2, sampling=SamplingSettings(steps=2), store=store, detail=0
    )
    syn = {(r["layer"], r["head"]): r["score"] for r in rank_heads(store, run)}
    mean = s.summary("cosine")["mean"]
    keys = sorted(syn)
    want = spearmanr([mean[k] for k in keys], [syn[k] for k in keys]).statistic
    code, out, err = _cli(
        ["screen", nano_ckpt, "--cache", cache, "--compare", "--k", "3", "--format", "json"], capsys
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["spearman"] == pytest.approx(want, abs=1e-6)
    assert res["synopsis_run"] == run and res["n_heads"] == 9 and res["k"] == 3
    assert 0 <= res["topk_overlap"] <= 1
    code, out, err = _cli(["screen", nano_ckpt, "--cache", cache, "--compare"], capsys)
    assert code == 0 and "spearman" in out and "topk_overlap" in out
