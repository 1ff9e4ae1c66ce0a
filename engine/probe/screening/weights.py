"""The model side of screening (torch): position features, caption-projected relation words,
every cross-attention head's scaled q.k map, and `screen` itself."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.core.errors import UserError
from engine.data.relations import PHRASINGS, RELATIONS
from engine.probe.screening.method import (
    PHRASINGS_CHOICES,
    TEMPLATE,
    TEMPLATE_SHAPES,
    check_relation,
    fit_plane,
    references,
    score_maps,
    screen_params,
)
from engine.probe.screening.results import Screening

if TYPE_CHECKING:
    import torch


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
