"""Text-encoder variance decomposition: how much of the caption embedding each factor explains.

Over a prompt set (the 264 evaluation prompts by default), each caption is described by five
factors: shape1, shape2, color (which colour words the caption names, e.g. "red/blue" or
"-/-"), relation (one of 8) and phrasing (the relation phrase, nested in its relation). The
embeddings X (one row per prompt; pad positions set to zero, since the DiT never attends to
them) are fitted by least squares with the additive model

    X[p] = mean + a[shape1(p)] + b[shape2(p)] + c[color(p)] + g[phrase(p)] + residual[p]

(one-hot codes, centred). The fitted phrase term g is split into its relation part (the
prompt-weighted mean of g over the phrasings of each relation) and the phrasing part (the
rest, which averages to zero within each relation). A factor's share is the sum of squares of
its fitted term over the total sum of squares of X about its mean (summed over all features):

    share_f = ||term_f - mean(term_f)||^2 / ||X - mean(X)||^2

`residual` is the share the additive model leaves (interactions: context mixing between words,
positions shifted by optional words); `overlap` = 1 - residual - sum of the shares: the
covariance between factor terms, nonzero when the factors are correlated in the prompt set (in
the evaluation set shape1 and shape2 always differ). The shares are exact: an encoder that is
additive in these factors gets back exactly its own terms' sums of squares.

Views: `all` (the whole 20-token sequence as one vector), `mean` (the mean over real tokens),
each token position (`pos N`) and each token category (`tok relation`: the mean embedding of a
caption's relation tokens, over the captions that have one). Stages: `encoder` (the text
encoder's output) and `projected` (after the DiT's caption projection).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from engine.core.errors import UserError
from engine.data.prompts import Prompt
from engine.store.cache import Store

FACTORS: tuple[str, ...] = ("shape1", "shape2", "color", "relation", "phrasing")
SHARES: tuple[str, ...] = (*FACTORS, "overlap", "residual")
TOKEN_CATEGORIES: tuple[str, ...] = ("color1", "shape1", "relation", "color2", "shape2", "filler")


def factor_levels(prompts: Sequence[Prompt]) -> dict[str, list[str]]:
    """The level of every factor for each prompt."""
    return {
        "shape1": [p.shape1 for p in prompts],
        "shape2": [p.shape2 for p in prompts],
        "color": [
            f"{p.color1 if p.named_color1 else '-'}/{p.color2 if p.named_color2 else '-'}"
            for p in prompts
        ],
        "relation": [p.relation for p in prompts],
        "phrasing": [f"{p.relation}:{p.phrase}" for p in prompts],
    }


def _centered_onehot(labels: Sequence[str]) -> np.ndarray:
    levels = sorted(set(labels))
    z = np.zeros((len(labels), len(levels)))
    index = {v: i for i, v in enumerate(levels)}
    for r, v in enumerate(labels):
        z[r, index[v]] = 1.0
    return z - z.mean(axis=0)


def _group_mean(x: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    out = np.empty_like(x)
    labels = np.asarray(labels)
    for v in set(labels.tolist()):
        rows = labels == v
        out[rows] = x[rows].mean(axis=0)
    return out


def decompose_terms(x: np.ndarray, levels: dict[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """Fitted centred terms of each factor plus the residual, each shaped like `x` [P, ...]."""
    x = np.asarray(x, dtype=np.float64)
    p = x.shape[0]
    flat = x.reshape(p, -1)
    xc = flat - flat.mean(axis=0)
    blocks = [("shape1", levels["shape1"]), ("shape2", levels["shape2"]),
              ("color", levels["color"]), ("phrase", levels["phrasing"])]  # fmt: skip
    zs = [(name, _centered_onehot(lab)) for name, lab in blocks]
    z = np.hstack([zb for _, zb in zs])
    coef = np.linalg.lstsq(z, xc, rcond=None)[0] if z.shape[1] else np.zeros((0, xc.shape[1]))
    terms, col = {}, 0
    for name, zb in zs:
        terms[name] = zb @ coef[col : col + zb.shape[1]]
        col += zb.shape[1]
    g = terms.pop("phrase")
    terms["relation"] = _group_mean(g, levels["relation"])
    terms["phrasing"] = g - terms["relation"]
    terms["residual"] = xc - sum(terms[f] for f in FACTORS)
    terms["total"] = xc
    return {k: v.reshape(x.shape) for k, v in terms.items()}


def shares(x: np.ndarray, levels: dict[str, Sequence[str]], axis=None) -> dict[str, np.ndarray]:
    """Share of each factor (and overlap, residual) in the sum of squares of `x` [P, ...].

    Sums of squares run over prompts and all remaining axes, except those kept: `axis` (an int
    or tuple of axes of x other than 0) keeps, e.g., the token position. Also returns
    `variance`: the total sum of squares divided by the number of prompts.
    """
    terms = decompose_terms(x, levels)
    x = np.asarray(x)
    keep = () if axis is None else ((axis,) if isinstance(axis, int) else tuple(axis))
    over = tuple(a for a in range(x.ndim) if a not in keep)
    ss = {k: (v**2).sum(axis=over) for k, v in terms.items()}
    total = ss["total"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {f: np.where(total > 0, ss[f] / total, np.nan) for f in (*FACTORS, "residual")}
        out["overlap"] = np.where(
            total > 0, 1.0 - out["residual"] - sum(out[f] for f in FACTORS), np.nan
        )
    out["variance"] = total / x.shape[0]
    return out


def _views(emb: np.ndarray, mask: np.ndarray, cats: list[list[str]], levels) -> list[dict]:
    """Rows for one stage: all, mean, each position, each token category."""
    rows = []
    emb = emb * mask[..., None]
    n = emb.shape[0]

    def row(view, s, count, i=None):
        pick = (lambda a: float(a)) if i is None else (lambda a: float(a[i]))
        return {"view": view, "n": count, "variance": pick(s["variance"]),
                **{k: pick(s[k]) for k in SHARES}}  # fmt: skip

    rows.append(row("all", shares(emb, levels), n))
    denom = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    rows.append(row("mean", shares(emb.sum(axis=1) / denom, levels), n))
    per_pos = shares(emb, levels, axis=1)
    for t in range(emb.shape[1]):
        if mask[:, t].any():
            rows.append(row(f"pos {t}", per_pos, int(mask[:, t].sum()), t))
    for cat in TOKEN_CATEGORIES:
        have = [r for r in range(n) if cat in cats[r]]
        if len(have) < 2:
            continue
        vecs = np.stack(
            [emb[r, [t for t, c in enumerate(cats[r]) if c == cat]].mean(axis=0) for r in have]
        )
        sub = {k: [v[r] for r in have] for k, v in levels.items()}
        rows.append(row(f"tok {cat}", shares(vecs, sub), len(have)))
    return rows


@torch.no_grad()
def variance_decomposition(
    encoder, prompts: Sequence[Prompt], projection: torch.nn.Module | None = None
) -> dict:
    """{stage: rows} for the encoder output and (if given) after `projection` (the DiT's
    caption projection). Each row: view, n, variance, and the SHARES."""
    if len(prompts) < 2:
        raise UserError("the variance decomposition needs at least two prompts")
    texts = [p.text for p in prompts]
    levels = factor_levels(prompts)
    tokens = encoder.tokenize(texts)
    emb, mask = encoder.encode(texts)
    mask_np = mask.detach().cpu().numpy().astype(np.float64)
    out = {"encoder": _views(emb.double().cpu().numpy(), mask_np, tokens.categories, levels)}
    if projection is not None:
        param = next(projection.parameters())
        proj = projection(emb.to(param.device, param.dtype)).double().cpu().numpy()
        out["projected"] = _views(proj, mask_np, tokens.categories, levels)
    return out


def variance_rows(stages: dict) -> list[dict]:
    return [{"stage": stage, **r} for stage, rows in stages.items() for r in rows]


def run_variance(
    ckpt, prompts: Sequence[Prompt], store: Store | None = None, prompts_label: str = "eval"
) -> dict:
    """The decomposition for a checkpoint's text encoder and caption projection, stored as a
    `variance` run when `store` is given. Returns {checkpoint, encoder, prompts, n, run, rows}."""
    from engine.model.checkpoint import load_checkpoint

    if not hasattr(ckpt, "transformer"):
        ckpt = load_checkpoint(ckpt)
    projection = getattr(ckpt.transformer, "caption_projection", None)
    stages = variance_decomposition(ckpt.text_encoder, prompts, projection)
    rows = variance_rows(stages)
    run = None
    if store is not None:
        run = store.write_run(
            "variance",
            {
                "stage": [r["stage"] for r in rows],
                "view": [r["view"] for r in rows],
                "n": np.array([r["n"] for r in rows], dtype=np.int64),
                "variance": np.array([r["variance"] for r in rows]),
                "shares": np.array([[r[k] for k in SHARES] for r in rows]),
                "share_names": list(SHARES),
            },
            {
                "prompts": prompts_label,
                "n_prompts": len(prompts),
                "encoder": ckpt.text_encoder.spec,
                "params": {"prompts": prompts_label, "n_prompts": len(prompts)},
            },
            run=store.new_run_name("variance", prefix="variance"),
        )
    return {
        "checkpoint": str(ckpt.path),
        "encoder": ckpt.text_encoder.spec,
        "prompts": prompts_label,
        "n": len(prompts),
        "run": run,
        "factors": list(FACTORS),
        "rows": rows,
    }
