"""Weight-space screening: find relation heads from the weights alone, without sampling.

For every layer's cross-attention (``block.attn2``) and every head:

- **queries** are the grid's 2D sin-cos positional features, exactly the ``[N, D]`` table
  ``transformer.pos_embed`` (diffusers' ``PatchEmbed``) adds to the patch tokens (its
  ``pos_embed`` buffer, or ``get_2d_sincos_pos_embed`` with the module's ``base_size`` and
  ``interpolation_scale`` when the buffer's grid differs), passed through that layer's ``to_q``
  (weight and bias);
- **keys** are each relation word's embedding after ``transformer.caption_projection``, passed
  through ``to_k`` (weight only, see below);
- the **map** of a head and a relation word is ``q(p) . k(w) * attn.scale`` on the token grid
  (8x8 here; row 0 is the top of the image, so y grows downward).

Approximation (the method's, as in the paper): in PixArt blocks (``norm_type="ada_norm_single"``)
the cross-attention reads the residual stream *without* a norm or adaLN modulation (diffusers'
``BasicTransformerBlock``: "For PixArt norm2 isn't applied here"), so its real query input is
``patch_embed(x) + pos + (outputs of earlier attention and MLP sublayers)``. Screening keeps
only the ``pos`` term: it asks what the head's query/key weights do with *position*, ignoring
image content, noise level and everything earlier layers write. The key bias is dropped: it adds
``q(p) . b_k`` to the logit of every text token at position ``p`` alike, which the softmax over
text tokens cancels. The query bias adds a constant to a word's whole map, which the metrics
below remove by centring.

**Relation word embeddings** come from template captions, so contextual encoders (``minilm``,
``t5:``) and position-aware ones (``rte``) see the word where it stands in training captions:
"red {shape1} is {phrase} blue {shape2}" for the six ordered pairs of distinct shapes; the rows
of the tokens the encoder tags ``relation`` (``Tokens.categories``) are caption-projected and
averaged over the templates. A multi-word phrase ("to the left of") gives one map per token
(``token_*`` arrays) and, by linearity of the key, its phrase map is the mean of its token maps.
``phrasings="first"`` uses each relation's first phrasing (the single word for
above/below); ``"all"`` averages the phrase maps of all its phrasings.

**Reference pattern** of a relation: the mean-centred linear ramp in the relation's direction
(``engine.data.relations.DIRECTIONS``, y downward), scaled to run from -1 to +1 across the grid;
a diagonal is the mean of its horizontal and vertical ramps. "above" is +1 on the top row: image
positions near the top attend more to the word.

**Metrics** of a map ``m`` against its relation's ramp ``r`` (``m_c = m - mean(m)``):

- ``cosine``: ``<m_c, r> / (|m_c| |r|)``, in [-1, 1];
- ``projection``: the least-squares amplitude ``<m_c, r> / <r, r>`` in logits: the map rises by
  ``2 * projection`` across the grid in the relation's direction (strength, not just shape);
- ``energy``: the signed fraction of the map's spatial energy (variance over the grid) along the
  ramp, ``sign(cos) * cos^2``, in [-1, 1].

Note on random weights: one map of a random head is roughly a ramp in a random direction (the
low-frequency sin-cos features are nearly linear in x and y), so single head x relation scores
of an untrained model scatter widely around 0; the per-head mean over relations stays near 0.

Per head: the best relation (highest score), the mean over relations (a head that reads every
relation word as a ramp in its own direction scores high on all of them: the paper's relation
head), and ``selectivity`` = best score minus the mean of the other relations' scores.

**Stored** (``Store.write_run(kind="screening")``, run names ``screen-NNNN``), per run:
``maps`` [L, H, R, 8, 8] float32 (logits, row 0 = top), ``references`` [R, 8, 8], ``cosine``,
``projection``, ``energy`` [L, H, R], ``fit`` [L, H, R, 2] (least-squares slopes along x right
and y down), ``relations`` and ``phrases`` (strings, phrasings joined by " | "), per token
``token_maps`` [L, H, T, 8, 8], ``token_cosine|projection|energy`` [L, H, T],
``token_relation`` [T] (index into relations), ``token_phrase``, ``token_text``; attributes
``params`` (JSON: method_version, relations, phrasings, contrast, template, template_shapes,
text_encoder), ``num_layers``, ``num_heads``, ``grid``, ``approximation``, plus the store's
provenance (checkpoint_hash, code_version, created, command).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engine.core.errors import UserError
from engine.data.relations import DIRECTIONS, PHRASINGS, RELATIONS

if TYPE_CHECKING:
    import torch

METRICS: tuple[str, ...] = ("cosine", "projection", "energy")
PHRASINGS_CHOICES: tuple[str, ...] = ("first", "all")
KIND = "screening"
METHOD_VERSION = 1
# Template captions: colour words kept, every ordered pair of distinct shapes.
TEMPLATE = "red {s1} is {phrase} blue {s2}"
TEMPLATE_SHAPES: tuple[tuple[str, str], ...] = (
    ("square", "circle"),
    ("circle", "square"),
    ("square", "triangle"),
    ("triangle", "square"),
    ("circle", "triangle"),
    ("triangle", "circle"),
)
APPROXIMATION = (
    "queries = to_q(2D sin-cos position features the model adds to patches) only: no image "
    "content, no earlier sublayers (PixArt's attn2 reads the un-normalised residual stream); "
    "keys = to_k(caption_projection(relation tokens in template captions)) without key bias"
)


# --- names and checks ---------------------------------------------------------------------


def check_relation(name: str, allow_all: bool = True) -> str:
    """A relation name (or "all"); a UserError listing the valid names otherwise."""
    valid = (("all",) if allow_all else ()) + RELATIONS
    if name not in valid:
        raise UserError(f"unknown relation {name!r}; use one of {', '.join(valid)}")
    return name


def check_metric(name: str) -> str:
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; use one of {', '.join(METRICS)}")
    return name


def parse_head(value: str, num_layers: int, num_heads: int) -> tuple[int, int]:
    """'L.H' (0-based, as everywhere in the workbench) checked against the model's size."""
    rng = f"layers 0-{num_layers - 1}, heads 0-{num_heads - 1}"
    parts = str(value).strip().split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UserError(f"{value!r} is not a head; write LAYER.HEAD, e.g. 0.1 ({rng})")
    layer, head = int(parts[0]), int(parts[1])
    if not (0 <= layer < num_layers and 0 <= head < num_heads):
        raise UserError(f"head {layer}.{head} is not in this model; it has {rng}")
    return layer, head


# --- reference patterns and metrics (pure numpy) ------------------------------------------


def reference_ramp(relation: str, grid: tuple[int, int] | int = 8) -> np.ndarray:
    """The mean-centred linear ramp of a relation on a [rows, cols] grid (row 0 = top).

    Runs from -1 to +1 across the grid in the relation's direction; diagonals average the
    horizontal and vertical ramps (so they also span [-1, 1]).
    """
    check_relation(relation, allow_all=False)
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    dx, dy = DIRECTIONS[relation]
    xs = _axis(gw)[None, :]
    ys = _axis(gh)[:, None]
    ramp = dx * xs + dy * ys
    if dx and dy:
        ramp = ramp / 2
    return np.broadcast_to(ramp, (gh, gw)).astype(np.float64)


def references(relations: Sequence[str], grid: tuple[int, int] | int = 8) -> np.ndarray:
    return np.stack([reference_ramp(r, grid) for r in relations])


def _axis(n: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)


def score_maps(maps: np.ndarray, refs: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of maps [..., R, gh, gw] against references [R, gh, gw] (broadcast over ...).

    Returns {"cosine", "projection", "energy"}: arrays [..., R] (float32 in, float32 out;
    float64 otherwise).
    """
    maps = np.asarray(maps)
    dtype = np.float32 if maps.dtype == np.float32 else np.float64
    m = maps.reshape(*maps.shape[:-2], -1).astype(dtype, copy=False)
    r = np.asarray(refs, dtype=np.float64).reshape(np.shape(refs)[0], -1)
    r = (r - r.mean(-1, keepdims=True)).astype(dtype)
    m = m - m.mean(-1, keepdims=True)
    dot = np.einsum("...rn,rn->...r", m, r)
    m_norm = np.sqrt(np.einsum("...n,...n->...", m, m))
    r_sq = np.einsum("rn,rn->r", r, r)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(m_norm > 0, dot / (m_norm * np.sqrt(r_sq)), 0).astype(dtype)
    cos = np.clip(cos, -1.0, 1.0)
    return {
        "cosine": cos,
        "projection": (dot / r_sq).astype(dtype),
        "energy": np.sign(cos) * cos * cos,
    }


def fit_plane(maps: np.ndarray) -> np.ndarray:
    """Least-squares slopes (a, b) of maps [..., gh, gw] ~ a*x + b*y + c, x and y in [-1, 1]
    (y downward). Returns [..., 2]."""
    maps = np.asarray(maps, dtype=np.float64)
    gh, gw = maps.shape[-2:]
    xs = np.broadcast_to(_axis(gw)[None, :], (gh, gw))
    ys = np.broadcast_to(_axis(gh)[:, None], (gh, gw))
    out = []
    for g in (xs, ys):
        g = g - g.mean()
        den = (g * g).sum()
        out.append((maps * g).sum((-2, -1)) / den if den > 0 else np.zeros(maps.shape[:-2]))
    return np.stack(out, -1)


def direction_of(slope: Sequence[float]) -> tuple[str, float]:
    """Nearest relation to a fitted slope (a, b) and its angle in degrees (0 = right, 90 = up)."""
    a, b = float(slope[0]), float(slope[1])
    angle = math.degrees(math.atan2(-b, a))
    best, best_d = RELATIONS[0], 1e9
    for rel in RELATIONS:
        dx, dy = DIRECTIONS[rel]
        d = abs((math.degrees(math.atan2(-dy, dx)) - angle + 180) % 360 - 180)
        if d < best_d:
            best, best_d = rel, d
    return best, angle


def head_summary(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per head from scores [L, H, R]: best relation index, best, mean, selectivity."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[-1]
    best = scores.argmax(-1)
    top = scores.max(-1)
    mean = scores.mean(-1)
    rest = (scores.sum(-1) - top) / (n - 1) if n > 1 else np.zeros_like(top)
    return {"best": best, "best_score": top, "mean": mean, "selectivity": top - rest}


# --- the model side (torch) --------------------------------------------------------------


def position_features(transformer) -> tuple[torch.Tensor, tuple[int, int]]:
    """The [N, D] positional features the model adds to its patch tokens, and the grid."""
    import torch
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    pe = getattr(transformer, "pos_embed", None)
    if pe is None or getattr(pe, "pos_embed", None) is None:
        raise UserError("this transformer has no 2D sin-cos position embedding to screen with")
    if getattr(pe, "pos_embed_max_size", None):
        raise UserError("screening needs a PatchEmbed without pos_embed_max_size (PixArt's)")
    gh, gw = int(pe.height), int(pe.width)
    buf = pe.pos_embed[0]
    if buf.shape[0] != gh * gw:  # as PatchEmbed.forward recomputes for another grid
        buf = get_2d_sincos_pos_embed(
            embed_dim=buf.shape[-1],
            grid_size=(gh, gw),
            base_size=pe.base_size,
            interpolation_scale=pe.interpolation_scale,
            output_type="pt",
        )
    return buf.detach().to(torch.float32).cpu(), (gh, gw)


@dataclass
class RelationTokens:
    """Caption-projected relation embeddings: one row per relation, one per phrase token."""

    relations: list[str]
    phrases: list[list[str]]  # per relation, the phrasings used
    relation_emb: torch.Tensor  # [R, D] mean over phrasings of the phrase mean
    token_emb: torch.Tensor  # [T, D]
    weights: torch.Tensor  # [R, T]: relation_emb = weights @ token_emb
    token_relation: list[int]  # relation index of each token row
    token_phrase: list[str]
    token_text: list[str]


def relation_tokens(
    text_encoder, transformer, relations: Sequence[str], phrasings: str = "first"
) -> RelationTokens:
    """Relation word embeddings after the caption projection, from template captions."""
    import torch

    if phrasings not in PHRASINGS_CHOICES:
        raise UserError(
            f"unknown phrasings {phrasings!r}; use one of {', '.join(PHRASINGS_CHOICES)}"
        )
    plan: list[tuple[int, str]] = []  # (relation index, phrase) per phrase
    for i, rel in enumerate(relations):
        chosen = PHRASINGS[rel] if phrasings == "all" else PHRASINGS[rel][:1]
        plan.extend((i, p) for p in chosen)
    captions = [
        TEMPLATE.format(s1=s1, s2=s2, phrase=phrase)
        for _, phrase in plan
        for s1, s2 in TEMPLATE_SHAPES
    ]
    tokens = text_encoder.tokenize(captions)
    # (caption, position) of every relation token: only those rows are caption-projected
    where: list[list[int]] = []
    for b, cats in enumerate(tokens.categories):
        idx = [k for k, c in enumerate(cats) if c == "relation"]
        if not idx:
            raise UserError(
                f"the text encoder tags no relation token in {captions[b]!r}; "
                "cannot screen this checkpoint's encoder"
            )
        where.append(idx)
    with torch.no_grad():
        emb, _ = text_encoder.encode(captions)  # [B, 20, C]
        rows_b = torch.tensor([b for b, idx in enumerate(where) for _ in idx])
        rows_k = torch.tensor([k for idx in where for k in idx])
        picked = emb[rows_b.to(emb.device), rows_k.to(emb.device)]
        proj = transformer.caption_projection
        if proj is not None:
            p0 = next(proj.parameters())
            picked = proj(picked.to(p0.device, p0.dtype))
        picked = picked.float().cpu()
    offsets = np.cumsum([0] + [len(idx) for idx in where])
    nt = len(TEMPLATE_SHAPES)
    tok_rows, tok_rel, tok_phrase, tok_text = [], [], [], []
    for j, (ri, phrase) in enumerate(plan):
        texts = [tokens.words[j * nt][k] for k in where[j * nt]]
        # templates whose phrase tokenized alike (a contextual tokenizer might split it otherwise)
        same = [j * nt + t for t in range(nt) if len(where[j * nt + t]) == len(texts)]
        rows = torch.stack([picked[offsets[b] : offsets[b + 1]] for b in same]).mean(0)
        for k, word in enumerate(texts):
            tok_rows.append(rows[k])
            tok_rel.append(ri)
            tok_phrase.append(phrase)
            tok_text.append(word)
    phrases = [[p for r, p in plan if r == i] for i in range(len(relations))]
    # relation = mean over its phrasings of the mean over each phrasing's tokens
    weights = torch.zeros(len(relations), len(tok_rows))
    for i in range(len(relations)):
        for phrase in phrases[i]:
            cols = [
                t
                for t, (r, ph) in enumerate(zip(tok_rel, tok_phrase, strict=True))
                if r == i and ph == phrase
            ]
            weights[i, cols] += 1.0 / (len(cols) * len(phrases[i]))
    token_emb = torch.stack(tok_rows)
    return RelationTokens(
        list(relations),
        phrases,
        weights @ token_emb,
        token_emb,
        weights,
        tok_rel,
        tok_phrase,
        tok_text,
    )


def low_rank(x: torch.Tensor, rtol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [N, r], B [r, D]) with A @ B = x up to rtol of its largest singular value.

    The 2D sin-cos features are functions of y (first half) and x (second half) on an 8x8
    grid, so their rank is at most 8 + 8: projecting B instead of x through a layer's to_q
    does a quarter of the work (DiT-B: 16 rows instead of 64) for the same queries.
    """
    import torch

    x = x.double()
    if x.shape[0] > x.shape[1]:
        # More positions than features (PixArt-Sigma: 4096 x 1152): x = U S V^T from the
        # smaller Gram matrix x^T x = V S^2 V^T; A = x V, B = V^T (an N x N eigh is minutes).
        ev, v = torch.linalg.eigh(x.T @ x)
        ev, v = ev.flip(0), v.flip(1)
        sv = ev.clamp(min=0).sqrt()
        r = max(1, int((sv > sv[0] * rtol).sum()))
        v = v[:, :r]
        return (x @ v).float(), v.T.float()
    ev, u = torch.linalg.eigh(x @ x.T)  # x = U S V^T: the Gram matrix gives U and S^2 cheaply
    ev, u = ev.flip(0), u.flip(1)
    sv = ev.clamp(min=0).sqrt()
    r = max(1, int((sv > sv[0] * rtol).sum()))
    u, sv = u[:, :r], sv[:r]
    return (u * sv).float(), ((u / sv).T @ x).float()


def qk_maps(transformer, queries_in: torch.Tensor, keys_in: torch.Tensor) -> np.ndarray:
    """Scaled q.k of every cross-attention head: [L, H, K, N] for inputs [N, D] and [K, D].

    q = to_q(queries_in) with its bias, k = to_k(keys_in) without (see the module doc). One
    product per layer covers all its heads (a loop over layers reads each weight matrix once,
    in place: stacking them first would copy them, which costs more than the products).
    """
    import torch
    import torch.nn.functional as F

    attns = [b.attn2 for b in transformer.transformer_blocks]
    if not attns or any(a is None for a in attns):
        raise UserError("a transformer block has no cross-attention (attn2); nothing to screen")
    coef, basis = low_rank(queries_in)
    out = []
    with torch.no_grad():
        for a in attns:
            dev, dtype = a.to_q.weight.device, a.to_q.weight.dtype
            qb = F.linear(basis.to(dev, dtype), a.to_q.weight).float()  # [r, Dq]
            q = coef.to(dev) @ qb
            if a.to_q.bias is not None:
                q = q + a.to_q.bias.float()
            k = F.linear(keys_in.to(dev, dtype), a.to_k.weight).float()
            q = q.view(q.shape[0], a.heads, -1).transpose(0, 1)  # [H, N, d]
            k = k.view(k.shape[0], a.heads, -1).transpose(0, 1)  # [H, K, d]
            if a.norm_q is not None:
                q = a.norm_q(q)
            if a.norm_k is not None:
                k = a.norm_k(k)
            out.append(torch.bmm(k, q.transpose(1, 2)) * float(a.scale))  # [H, K, N]
        maps = torch.stack(out)
    return maps.cpu().numpy()


@dataclass
class Screening:
    """One screening of a checkpoint; arrays are float32 unless noted."""

    relations: list[str]
    phrases: list[list[str]]
    grid: tuple[int, int]
    maps: np.ndarray  # [L, H, R, gh, gw] phrase map of each relation word
    refs: np.ndarray  # [R, gh, gw]
    scores: dict[str, np.ndarray]  # metric -> [L, H, R]
    fit: np.ndarray  # [L, H, R, 2] fitted slopes (a, b) of each map (x right, y down)
    token_maps: np.ndarray  # [L, H, T, gh, gw]
    token_scores: dict[str, np.ndarray]  # metric -> [L, H, T], against the token's relation
    token_relation: list[int]
    token_phrase: list[str]
    token_text: list[str]
    params: dict = field(default_factory=dict)
    run: str | None = None

    @property
    def num_layers(self) -> int:
        return self.maps.shape[0]

    @property
    def num_heads(self) -> int:
        return self.maps.shape[1]

    def relation_index(self, relation: str) -> int:
        check_relation(relation, allow_all=False)
        if relation not in self.relations:
            raise UserError(
                f"relation {relation!r} was not screened (screened: {', '.join(self.relations)})"
            )
        return self.relations.index(relation)

    def summary(self, metric: str = "cosine") -> dict[str, np.ndarray]:
        return head_summary(self.scores[check_metric(metric)])

    # storage

    def arrays(self) -> dict:
        out = {
            "relations": list(self.relations),
            "phrases": [" | ".join(p) for p in self.phrases],
            "maps": self.maps.astype(np.float32),
            "references": self.refs.astype(np.float32),
            "fit": self.fit.astype(np.float32),
            "token_maps": self.token_maps.astype(np.float32),
            "token_relation": np.asarray(self.token_relation, dtype=np.int32),
            "token_phrase": list(self.token_phrase),
            "token_text": list(self.token_text),
        }
        for m in METRICS:
            out[m] = self.scores[m].astype(np.float32)
            out[f"token_{m}"] = self.token_scores[m].astype(np.float32)
        return out

    @classmethod
    def from_arrays(cls, a: dict, params: dict | None = None, run: str | None = None) -> Screening:
        maps = np.asarray(a["maps"])
        return cls(
            relations=list(a["relations"]),
            phrases=[p.split(" | ") for p in a["phrases"]],
            grid=(maps.shape[-2], maps.shape[-1]),
            maps=maps,
            refs=np.asarray(a["references"]),
            scores={m: np.asarray(a[m]) for m in METRICS},
            fit=np.asarray(a["fit"]),
            token_maps=np.asarray(a["token_maps"]),
            token_scores={m: np.asarray(a[f"token_{m}"]) for m in METRICS},
            token_relation=[int(i) for i in a["token_relation"]],
            token_phrase=list(a["token_phrase"]),
            token_text=list(a["token_text"]),
            params=params or {},
            run=run,
        )


def screen_params(
    relations: Sequence[str] = RELATIONS, phrasings: str = "first", contrast: bool = False
) -> dict:
    """What determines a screening besides the checkpoint (stored and matched on)."""
    return {
        "method_version": METHOD_VERSION,
        "relations": list(relations),
        "phrasings": phrasings,
        "contrast": bool(contrast),
        "template": TEMPLATE,
        "template_shapes": [list(p) for p in TEMPLATE_SHAPES],
    }


@contextlib.contextmanager
def _few_threads(n: int = 1):
    """Run torch's CPU ops on `n` threads: the products here are small (well under a GFLOP for
    DiT-B), so extra threads only add synchronisation, which costs several times the work
    itself on a busy machine (measured: 0.13 s on one thread vs ~1 s on two with one core
    taken by a training run)."""
    import torch

    before = torch.get_num_threads()
    if before > n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def screen_model(
    transformer,
    text_encoder,
    relations: Sequence[str] | None = None,
    phrasings: str = "first",
    contrast: bool = False,
) -> Screening:
    """Screen every cross-attention head of a transformer against the given relations.

    ``contrast``: score each relation word's map minus the mean map of all screened relation
    words, i.e. only the part of the map that tells this relation word from the others (what
    changes between an "above" and a "below" caption); the part every relation word shares
    (from the caption projection's biases, the shared "to the ... of" tokens) drops out.
    """
    relations = list(relations or RELATIONS)
    for r in relations:
        check_relation(r, allow_all=False)
    with _few_threads():
        pos, grid = position_features(transformer)
        toks = relation_tokens(text_encoder, transformer, relations, phrasings)
        tok_maps = qk_maps(transformer, pos, toks.token_emb)  # [L, H, T, N]
    n_layers, n_heads = tok_maps.shape[:2]
    # a relation's map is the same average of its token maps as its embedding (k is linear)
    rel_maps = np.einsum("rt,lhtn->lhrn", toks.weights.numpy(), tok_maps)
    rel_maps = rel_maps.reshape(n_layers, n_heads, len(relations), *grid)
    tok_maps = tok_maps.reshape(n_layers, n_heads, tok_maps.shape[2], *grid)
    if contrast:
        if len(relations) < 2:
            raise UserError("contrast screening needs at least two relations")
        common = rel_maps.mean(2, keepdims=True)
        rel_maps, tok_maps = rel_maps - common, tok_maps - common
    refs = references(relations, grid).astype(np.float32)
    scores = score_maps(rel_maps, refs)
    token_scores = score_maps(tok_maps, refs[toks.token_relation])
    return Screening(
        relations=relations,
        phrases=toks.phrases,
        grid=grid,
        maps=rel_maps.astype(np.float32),
        refs=refs.astype(np.float32),
        scores={k: v.astype(np.float32) for k, v in scores.items()},
        fit=fit_plane(rel_maps).astype(np.float32),
        token_maps=tok_maps.astype(np.float32),
        token_scores={k: v.astype(np.float32) for k, v in token_scores.items()},
        token_relation=list(toks.token_relation),
        token_phrase=toks.token_phrase,
        token_text=toks.token_text,
        params=screen_params(relations, phrasings, contrast),
    )


def screen(
    ckpt, relations: Sequence[str] | None = None, phrasings: str = "first", contrast: bool = False
) -> Screening:
    """Screen a loaded checkpoint (``engine.model.checkpoint.load_checkpoint``)."""
    s = screen_model(ckpt.transformer, ckpt.text_encoder, relations, phrasings, contrast)
    s.params["text_encoder"] = ckpt.meta.get("text")
    return s


# --- the cache ----------------------------------------------------------------------------


def _params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def save_screening(store, s: Screening, run: str | None = None) -> str:
    """Store a screening as a new run of kind "screening" (atomic, with provenance)."""
    attrs = {
        "params": _params_key(s.params),
        "num_layers": s.num_layers,
        "num_heads": s.num_heads,
        "grid": f"{s.grid[0]}x{s.grid[1]}",
        "approximation": APPROXIMATION,
        "metrics": ",".join(METRICS),
    }
    if s.params.get("text_encoder"):
        attrs["text_encoder"] = s.params["text_encoder"]
    name = store.write_run(KIND, s.arrays(), attrs, run=run or store.new_run_name(KIND, "screen"))
    s.run = name
    return name


def load_screening(store, run: str) -> Screening:
    attrs = store.attrs(KIND, run)
    try:
        params = json.loads(attrs.get("params", "{}"))
    except (TypeError, ValueError):
        params = {}
    return Screening.from_arrays(store.read(KIND, run), params, run)


def find_screening(store, params: dict) -> str | None:
    """The newest stored run screened with these params, or None."""
    from engine import __version__

    return store.latest_run(KIND, params=_params_key(params), code_version=__version__)


# --- rows for tables ----------------------------------------------------------------------


def _rank(rows: list[dict], key: str) -> list[dict]:
    rows.sort(key=lambda r: (-r[key], r["layer"], r["head"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows


def relation_rows(s: Screening, relation: str = "all", metric: str = "cosine") -> list[dict]:
    """One row per head x relation (or one relation), ranked by `metric` (best first)."""
    check_metric(metric)
    rels = list(s.relations) if check_relation(relation) == "all" else [relation]
    idx = [s.relation_index(r) for r in rels]
    rows = []
    for layer in range(s.num_layers):
        for head in range(s.num_heads):
            for i in idx:
                rows.append(
                    {
                        "layer": layer,
                        "head": head,
                        "relation": s.relations[i],
                        **{m: float(s.scores[m][layer, head, i]) for m in METRICS},
                    }
                )
    return _rank(rows, metric)


def best_rows(s: Screening, metric: str = "cosine") -> list[dict]:
    """One row per head, ranked by the mean of `metric` over relations (the relation-head
    score), with the best relation, its score and the selectivity (best minus the mean of the
    other relations)."""
    summ = s.summary(metric)
    rows = []
    for layer in range(s.num_layers):
        for head in range(s.num_heads):
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "mean": float(summ["mean"][layer, head]),
                    "best_relation": s.relations[int(summ["best"][layer, head])],
                    "best": float(summ["best_score"][layer, head]),
                    "selectivity": float(summ["selectivity"][layer, head]),
                }
            )
    return _rank(rows, "mean")


def token_rows(s: Screening, relation: str = "all", metric: str = "cosine") -> list[dict]:
    """One row per head x relation token (each token scored against its relation's ramp)."""
    check_metric(metric)
    check_relation(relation)
    rows = []
    for t, ri in enumerate(s.token_relation):
        rel = s.relations[ri]
        if relation != "all" and rel != relation:
            continue
        for layer in range(s.num_layers):
            for head in range(s.num_heads):
                rows.append(
                    {
                        "layer": layer,
                        "head": head,
                        "relation": rel,
                        "phrase": s.token_phrase[t],
                        "token": s.token_text[t],
                        **{m: float(s.token_scores[m][layer, head, t]) for m in METRICS},
                    }
                )
    return _rank(rows, metric)


def head_scores(s: Screening, relation: str = "all", metric: str = "cosine") -> dict:
    """{(layer, head): score} for ranking heads: one relation's score, or (all) the mean over
    relations, which is what marks a relation head."""
    check_metric(metric)
    if check_relation(relation) == "all":
        vals = s.scores[metric].mean(-1)
    else:
        vals = s.scores[metric][..., s.relation_index(relation)]
    return {
        (layer, head): float(vals[layer, head])
        for layer in range(s.num_layers)
        for head in range(s.num_heads)
    }


def map_detail(s: Screening, layer: int, head: int, relation: str) -> dict:
    """The QK map of one head and relation word, its reference ramp, scores and fitted slope."""
    i = s.relation_index(relation)
    nearest, angle = direction_of(s.fit[layer, head, i])
    return {
        "layer": layer,
        "head": head,
        "relation": relation,
        "phrases": s.phrases[i],
        "qk": s.maps[layer, head, i].astype(float).tolist(),
        "reference": s.refs[i].astype(float).tolist(),
        **{m: float(s.scores[m][layer, head, i]) for m in METRICS},
        "fitted_direction": nearest,
        "fitted_angle_deg": angle,
    }


# --- agreement with a sampling-based ranking ----------------------------------------------


def compare_rankings(a: dict, b: dict, k: int = 5) -> dict:
    """Agreement of two head rankings given as {head: score} (higher = more relevant).

    Spearman's rank correlation over the heads both score (ties get average ranks) and the
    overlap of their top-k heads (|A_k & B_k| / k), with the top-k lists themselves.
    """
    from scipy.stats import spearmanr

    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise UserError(
            f"the two rankings share {len(common)} heads; need at least 2 to compare "
            "(were they made for the same checkpoint?)"
        )
    x = np.array([a[h] for h in common], dtype=np.float64)
    y = np.array([b[h] for h in common], dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        rho = float("nan")
    else:
        rho = float(spearmanr(x, y).statistic)
    k = max(1, min(int(k), len(common)))
    top_a = sorted(common, key=lambda h: -a[h])[:k]
    top_b = sorted(common, key=lambda h: -b[h])[:k]
    # a random ranking's expected overlap is k / n
    return {
        "n_heads": len(common),
        "k": k,
        "spearman": rho,
        "topk_overlap": len(set(top_a) & set(top_b)) / k,
        "topk_chance": k / len(common),
        "top_a": top_a,
        "top_b": top_b,
    }


def synopsis_head_scores(store, run: str | None = None, query: str = "relation->object1"):
    """(run, {(layer, head): score}) of a stored synopsis ranking for `query`.

    Uses `engine.probe.ranking.rank_heads`; its rows are dicts with layer/head/score.
    """
    from engine.probe.ranking import rank_heads

    if run is None:
        run = store.latest_run("synopsis", complete=True)
        if run is None:
            raise UserError(
                f"no synopsis run in {store.path}; run `dit-workbench synopsis CKPT` first "
                "(or give --cache where it is stored)"
            )
    ranked = rank_heads(store, run, query=query)
    return run, _as_head_scores(ranked)


def _as_head_scores(ranked) -> dict:
    if (
        isinstance(ranked, tuple)
        and len(ranked) == 2
        and isinstance(ranked[0], list)
        and (ranked[0] and isinstance(ranked[0][0], str))
    ):  # (columns, rows)
        cols, rows = ranked
        ranked = [dict(zip(cols, r, strict=False)) for r in rows]
    if isinstance(ranked, dict):
        return {(int(k[0]), int(k[1])): float(v) for k, v in ranked.items()}
    out = {}
    for r in ranked:
        if isinstance(r, dict):
            out[(int(r["layer"]), int(r["head"]))] = float(r["score"])
        else:
            out[(int(r[0]), int(r[1]))] = float(r[2])
    return out


def compare_with_synopsis(
    s: Screening,
    store,
    relation: str = "all",
    metric: str = "cosine",
    query: str = "relation->object1",
    synopsis_run: str | None = None,
    k: int = 5,
) -> dict:
    """Agreement between this screening's head ranking and a stored synopsis ranking."""
    run, syn = synopsis_head_scores(store, synopsis_run, query)
    res = compare_rankings(head_scores(s, relation, metric), syn, k)
    res["synopsis_run"] = run
    return res


# --- the engine: a job kind and two tables -------------------------------------------------
# Wire-up (owners of engine/service/kinds.py and engine/service/tables.py):
#   "screen": JobKind("engine.probe.screening:run_screen",
#                     "engine.probe.screening:validate_screen", heavy=False, help=...),
#   TABLES["screening"] = screening_table; TABLES["screen_map"] = screen_map_table


def _checkpoint_dir(value: str, cwd: str | None = None):
    """A checkpoint named by a request: a path (relative to the client's cwd), else a name under
    the engine's checkpoint roots."""
    import os

    from engine.core import roots
    from engine.model.checkpoint import resolve_checkpoint_dir

    if not isinstance(value, str) or not value.strip():
        raise UserError("give checkpoint=PATH (a checkpoint or training run folder)")
    p = os.path.normpath(os.path.join(cwd or os.getcwd(), os.path.expanduser(value)))
    if os.path.isdir(p):
        return resolve_checkpoint_dir(p)
    return resolve_checkpoint_dir(roots.resolve(value, "checkpoint"))


def validate_screen(params: dict, cwd: str | None) -> dict:
    from engine.core import roots
    from engine.ops.params import Param, check_params

    params = dict(params)
    if "ckpt" in params and "checkpoint" not in params:
        params["checkpoint"] = params.pop("ckpt")
    spec = {
        "checkpoint": Param(str),
        "phrasings": Param(str, "first", choices=PHRASINGS_CHOICES),
        "contrast": Param(bool, False),
        "cache": Param(str, None, path=True),
        "device": Param(str, "auto"),
    }
    p = check_params("screen", params, spec, cwd)
    from engine.core.device import check_device

    p["device"] = check_device(p["device"])
    p["checkpoint"] = str(_checkpoint_dir(p["checkpoint"], cwd))
    p["cache"] = p["cache"] or str(roots.cache_dir())
    return p


def run_screen(params: dict, report) -> dict:
    import time

    from engine.model.checkpoint import load_checkpoint
    from engine.store.cache import Store

    report.progress(0.0, "load")
    ckpt = load_checkpoint(params["checkpoint"], device=params.get("device", "auto"))
    report.progress(0.5, "screen")
    t = time.perf_counter()
    s = screen(ckpt, RELATIONS, params.get("phrasings", "first"), params.get("contrast", False))
    seconds = time.perf_counter() - t
    store = Store.for_checkpoint(ckpt, params.get("cache"))
    run = save_screening(store, s)
    report.log(
        f"screened {s.num_layers * s.num_heads} heads x {len(s.relations)} relations in "
        f"{seconds:.3f} s; stored as {run} in {store.path}"
    )
    report.progress(1.0, "done")
    return {"run": run, "cache": str(store.path), "seconds": seconds}


def _stored(params: dict) -> Screening:
    """The screening a table asks for: run=NAME, or the newest default one (else the newest)."""
    from types import SimpleNamespace

    from engine.core import roots
    from engine.model.checkpoint import read_meta
    from engine.store.cache import Store

    # A table request names a checkpoint under the engine's folders only (never any path).
    name = params.get("checkpoint") or ""
    p, meta = read_meta(roots.resolve(name, "checkpoint"))
    store = Store.for_checkpoint(
        SimpleNamespace(path=p, hash=meta["hashes"]["transformer"]), roots.cache_dir()
    )
    run = params.get("run")
    if not run:
        want = screen_params(RELATIONS, "first", False)
        want["text_encoder"] = meta.get("text")
        run = find_screening(store, want) or store.latest_run(KIND)
    if not run:
        raise UserError(
            f"no screening stored for {p.name}; run `dit-workbench screen {p}` (or press x)"
        )
    return load_screening(store, run)


def screening_table(params: dict) -> tuple[list[str], list[list]]:
    """Every head x relation (relation=all or one), ranked by metric (cosine by default)."""
    s = _stored(params)
    rows = relation_rows(s, params.get("relation", "all"), params.get("metric", "cosine"))
    cols = ["layer", "head", "relation", *METRICS, "rank"]
    return cols, [[r[c] for c in cols] for r in rows]


def screen_map_table(params: dict) -> tuple[list[str], list[list]]:
    """The QK map of head layer.head for a relation, and its reference ramp: kind, map."""
    s = _stored(params)
    try:
        layer, head = int(params.get("layer")), int(params.get("head"))
    except (TypeError, ValueError):
        raise UserError("table 'screen_map' needs layer=L and head=H (integers)") from None
    layer, head = parse_head(f"{layer}.{head}", s.num_layers, s.num_heads)
    d = map_detail(s, layer, head, check_relation(params.get("relation", "above"), False))
    return ["kind", "map"], [["qk", d["qk"]], ["reference", d["reference"]]]
