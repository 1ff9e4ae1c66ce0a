"""Sampling with interventions, paired with the plain model sample for sample.

`sample_intervened(ckpt, composite, texts, seeds, ...)` does what
`engine.model.sampler.sample_images` does (same batching, same null caption, the initial noise
of each original (prompt, seed) pair) with the interventions applied; with no intervention it
gives the same images bit for bit. Hooks are installed with `engine.probe.hooks.hooked` only for
the duration of each batch's denoising run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from engine.intervene.base import Batch, Composite
from engine.model.sampler import denoise, initial_noise
from engine.probe.hooks import hooked, schedule_timesteps


def _denoise(tr, hooks, timesteps, emb, mask, null, null_mask, noise, steps, cfg):
    n = emb.shape[0]
    args = (tr, emb, mask, null.expand(n, -1, -1), null_mask.expand(n, -1), noise, steps, cfg)
    if not hooks:
        return denoise(*args)
    with hooked(tr, hooks, timesteps, cfg=True):
        return denoise(*args)


@torch.no_grad()
def sample_intervened(
    ckpt,
    composite: Composite,
    texts: Sequence[str],
    seeds: Sequence[int],
    steps: int = 14,
    cfg: float = 4.5,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """uint8 images [N, H, W, 3] and the conditional captions actually encoded.

    `noise` [N, C, S, S], if given, replaces the per-(prompt, seed) initial noise (to compare
    different prompts from one noise).
    """
    from engine.intervene.patch import Recorder

    codec, tr, enc = ckpt.codec, ckpt.transformer, ckpt.text_encoder
    shape = (codec.channels, codec.latent_size, codec.latent_size)
    null, null_mask = enc.encode([""])
    null_tokens = enc.tokenize([""])
    timesteps = schedule_timesteps(steps, tr)
    out, captions_out = [], []
    for start in range(0, len(texts), batch_size):
        bt, bs = list(texts[start : start + batch_size]), list(seeds[start : start + batch_size])
        captions = [composite.edit_caption(t) for t in bt]
        tokens = enc.tokenize(captions)
        emb, mask = enc.encode(captions)
        if noise is None:
            x0 = initial_noise(bt, bs, shape)
        else:
            x0 = noise[start : start + len(bt)]
        batch = Batch(bt, captions, tokens, null_tokens, enc, steps, x0)
        emb = composite.edit_embedding(batch, emb)
        if composite.needs_source:
            _record_sources(
                ckpt, composite, batch, null, null_mask, timesteps, steps, cfg, Recorder
            )
        hooks = composite.hooks(batch)
        lat = _denoise(tr, hooks, timesteps, emb, mask, null, null_mask, x0, steps, cfg)
        batch.recordings.clear()
        out.append(codec.decode(lat).cpu())
        captions_out.extend(captions)
        if progress:
            progress(len(bt))
    if not out:
        return torch.empty(0, codec.res, codec.res, 3, dtype=torch.uint8), []
    return torch.cat(out), captions_out


def preflight(encoder, composite: Composite, texts: Sequence[str]) -> None:
    """Raise the UserError sampling would raise (an edited caption or a source prompt the
    encoder cannot take, an unknown embed-add word) before anything is sampled."""
    edited = [composite.edit_caption(t) for t in texts]
    if edited != list(texts):
        encoder.tokenize(edited)
    sources = sorted({p.source for p in composite.parts if p.needs_source})
    if sources:
        encoder.tokenize(sources)
    for p in composite.parts:
        if hasattr(p, "direction"):
            p.direction(encoder)


def _record_sources(ckpt, composite, batch, null, null_mask, timesteps, steps, cfg, Recorder):
    """One plain run per distinct source prompt, recording what the patches need."""
    enc, tr = ckpt.text_encoder, ckpt.transformer
    by_source: dict[str, dict] = {}
    for p in composite.parts:
        if p.needs_source:
            by_source.setdefault(p.source, {})[p.record_key] = None
    for source, keys in by_source.items():
        emb, mask = enc.encode([source] * batch.size)
        recorders = {k: Recorder(k[1], k[2], k[3]) for k in keys}
        _denoise(
            tr, list(recorders.values()), timesteps, emb, mask, null, null_mask,
            batch.noise, steps, cfg,
        )  # fmt: skip
        for k, r in recorders.items():
            batch.recordings[k] = r.by_step
