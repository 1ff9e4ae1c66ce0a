"""Sampling with interventions, paired with the plain model sample for sample.

`sample_intervened(ckpt, composite, texts, seeds, ...)` does what
`engine.model.sampler.sample_images` does (same batching, same null caption, the initial noise
of each original (prompt, seed) pair) with the interventions applied; with no intervention it
gives the same images bit for bit. Hooks are installed with `engine.probe.hooks.hooked` only for
the duration of each batch's denoising run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from engine.core.sampling import DEFAULT_SAMPLING, SamplingSettings
from engine.intervene.base import Batch, Composite
from engine.model.sampler import denoise, initial_noise
from engine.probe.hooks import CROSS, SELF, Hook, Site, hooked, schedule_timesteps


def _denoise(tr, hooks, timesteps, emb, mask, null, null_mask, noise, sampling):
    n = emb.shape[0]
    args = (tr, emb, mask, null.expand(n, -1, -1), null_mask.expand(n, -1), noise, sampling)
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
    sampling: SamplingSettings = DEFAULT_SAMPLING,
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
    steps, batch_size = sampling.steps, sampling.batch_size
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
            _record_sources(ckpt, composite, batch, null, null_mask, timesteps, sampling, Recorder)
        hooks = composite.hooks(batch)
        lat = _denoise(tr, hooks, timesteps, emb, mask, null, null_mask, x0, sampling)
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


def _record_sources(ckpt, composite, batch, null, null_mask, timesteps, sampling, Recorder):
    """One plain run per distinct source prompt, recording what the patches need."""
    enc, tr = ckpt.text_encoder, ckpt.transformer
    by_source: dict[str, dict] = {}
    for p in composite.parts:
        if p.needs_source:
            by_source.setdefault(p.source, {})[p.record_key] = None
    for source, keys in by_source.items():
        emb, mask = enc.encode([source] * batch.size)
        recorders = {k: Recorder(k[1], k[2], k[3]) for k in keys}
        _denoise(tr, list(recorders.values()), timesteps, emb, mask, null, null_mask,
                 batch.noise, sampling)  # fmt: skip
        for k, r in recorders.items():
            batch.recordings[k] = r.by_step


# Packed sampling: several sample sets (one composite each) share forward batches.
#
# A set is a composite over the same (text, seed) samples. Its samples are cut into the chunks
# `sample_intervened` would use (`batch_size` rows each); the chunks of every set are laid end to
# end and cut again into forward batches of `pack` rows, so one batch holds contiguous row
# ranges [lo, hi) of a few sets, and each set's interventions act on its own rows only
# (`Batch.lo/hi`; in the CFG batch [uncond; cond] rows lo..hi and B+lo..B+hi).
#
# Rows must come out as they would alone. The model computes each row on its own, up to the
# rounding of another batch size (matmul kernels block rows by their count), except for which
# attention path a call takes: a hook that changes scores or probabilities sends the whole
# call through explicit softmax attention, the rest through scaled_dot_product_attention, and
# the two differ in rounding. So chunks are grouped by their attention path (the sites where
# their own hooks would take the explicit path) and a batch holds chunks of one path only, with
# a `_Path` hook that holds that path even when the chunks in this batch would not ask for it.


@dataclass(frozen=True)
class Piece:
    """Sample rows [start, stop) of sample set `set`, laid out in one forward batch."""

    set: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


Path = frozenset  # of (layer, "self"|"cross", step): sites on the explicit attention path


class _Path(Hook):
    """Sends the attention calls at `sites` through the explicit path and changes nothing."""

    def __init__(self, sites: Path):
        self.sites = sites

    def active(self, site: Site) -> bool:
        return (site.layer, site.attn, site.step) in self.sites

    def changes_attention(self, site: Site) -> bool:
        return self.active(site)


def attention_path(hooks: Sequence[Hook], num_layers: int, steps: int) -> Path:
    """The sites of a denoising run where `hooks` take the explicit attention path."""
    out = set()
    for h in hooks:
        for layer in range(num_layers):
            for attn in (SELF, CROSS):
                for step in range(steps):
                    site = Site(layer, attn, step, 0)
                    if h.active(site) and h.changes_attention(site):
                        out.add((layer, attn, step))
    return frozenset(out)


def _chunk_path(ckpt, composite: Composite, texts, steps: int, tokenized: dict) -> Path:
    """The attention path of one chunk sampled alone (hooks built, nothing run); `tokenized`
    caches tokenizations across the sets (a head sweep's captions are all the same)."""
    enc = ckpt.text_encoder
    captions = [composite.edit_caption(t) for t in texts]
    for key in (tuple(captions), ("",)):
        if key not in tokenized:
            tokenized[key] = enc.tokenize(list(key))
    batch = Batch(list(texts), captions, tokenized[tuple(captions)], tokenized[("",)], enc, steps)
    for p in composite.parts:
        if p.needs_source:  # the recording covers every step; only its keys are read here
            batch.recordings[p.record_key] = dict.fromkeys(range(steps))
    return attention_path(composite.hooks(batch), ckpt.num_layers, steps)


def plan_packs(
    ckpt,
    composites: Sequence[Composite],
    texts: Sequence[str],
    sampling: SamplingSettings,
    pack: int,
) -> list[tuple[Path, list[Piece]]]:
    """Forward batches of at most `pack` rows: (attention path, pieces in row order)."""
    steps, batch_size = sampling.steps, sampling.batch_size
    groups: dict[Path, list[Piece]] = {}
    tokenized: dict = {}
    for i, comp in enumerate(composites):
        for start in range(0, len(texts), batch_size):
            stop = min(len(texts), start + batch_size)
            path = _chunk_path(ckpt, comp, texts[start:stop], steps, tokenized)
            groups.setdefault(path, []).append(Piece(i, start, stop))
    out = []
    for path, pieces in groups.items():
        cur: list[Piece] = []
        room = pack
        for p in pieces:
            s = p.start
            while s < p.stop:
                take = min(room, p.stop - s)
                if cur and cur[-1].set == p.set and cur[-1].stop == s:
                    cur[-1] = Piece(p.set, cur[-1].start, s + take)
                else:
                    cur.append(Piece(p.set, s, s + take))
                s += take
                room -= take
                if room == 0:
                    out.append((path, cur))
                    cur, room = [], pack
        if cur:
            out.append((path, cur))
    return out


def pack_rows(ckpt, sampling: SamplingSettings, composites: Sequence[Composite],
              free_bytes: int | None = None) -> int:  # fmt: skip
    """Rows per packed forward batch: `sampling.batch_size` on the CPU; on CUDA as many as an
    estimate of their peak memory lets fit in 60% of the free memory (limits.MAX_BATCH at most)."""
    import torch

    from engine.core.limits import MAX_BATCH
    from engine.model.pipeline import synopsis_bytes_per_sample
    from engine.text.base import MAX_LENGTH

    steps, batch_size = sampling.steps, sampling.batch_size

    if free_bytes is None:
        dev = next(ckpt.transformer.parameters()).device
        if dev.type != "cuda":
            return batch_size
        free_bytes, _ = torch.cuda.mem_get_info(dev)
    tr = ckpt.transformer
    heads, head_dim = tr.config.num_attention_heads, tr.config.attention_head_dim
    tokens = (ckpt.codec.latent_size // tr.config.patch_size) ** 2
    self_attn, recorded = False, {}
    for comp in composites:
        for p in comp.parts:
            if not p.needs_source:  # head masks and zeroed heads add [rows, heads, Q, 20] at most
                continue
            # a batch records each patch source's layer over all its rows, one [2 rows, heads,
            # queries, D or keys] per step; patched self-attention probabilities go explicit
            self_attn |= p.attn == SELF and p.what == "probs"
            width = head_dim if p.what == "out" else (tokens if p.attn == SELF else MAX_LENGTH)
            recorded[p.record_key] = steps * 2 * heads * tokens * width * 4
    per_row = synopsis_bytes_per_sample(tr, ckpt.codec.latent_size, self_attn)
    per_row += sum(recorded.values())
    return max(1, min(MAX_BATCH, int(free_bytes * 0.6) // per_row))


@torch.no_grad()
def sample_packed(
    ckpt,
    composites: Sequence[Composite],
    texts: Sequence[str],
    seeds: Sequence[int],
    sampling: SamplingSettings = DEFAULT_SAMPLING,
    pack: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[list[Piece], torch.Tensor]]:
    """Every composite's sample set over (texts, seeds), in packed forward batches.

    Yields (pieces, uint8 images [rows, H, W, 3]) per forward batch, rows in piece order. Each
    row is what `sample_intervened(ckpt, composite, texts, seeds, sampling)` gives
    it, up to the rounding of another batch size: on the CPU bit for bit where its forward batch
    has its chunk's size, else within one level in a few pixels. `pack`: rows per forward batch
    (default `pack_rows`).
    """
    steps, batch_size = sampling.steps, sampling.batch_size
    if pack is None:
        pack = pack_rows(ckpt, sampling, composites)
    codec, tr, enc = ckpt.codec, ckpt.transformer, ckpt.text_encoder
    shape = (codec.channels, codec.latent_size, codec.latent_size)
    null, null_mask = enc.encode([""])
    null_tokens = enc.tokenize([""])
    timesteps = schedule_timesteps(steps, tr)
    for path, pieces in plan_packs(ckpt, composites, texts, sampling, pack):
        bt, bs, captions, spans = [], [], [], []
        for p in pieces:
            comp = composites[p.set]
            spans.append((len(bt), len(bt) + p.size))
            bt += texts[p.start : p.stop]
            bs += seeds[p.start : p.stop]
            captions += [comp.edit_caption(t) for t in texts[p.start : p.stop]]
        tokens = enc.tokenize(captions)
        emb, mask = enc.encode(captions)
        x0 = initial_noise(bt, bs, shape)
        recordings: dict = {}
        views = [
            Batch(bt, captions, tokens, null_tokens, enc, steps, x0, lo, hi, recordings)
            for lo, hi in spans
        ]
        for p, view in zip(pieces, views, strict=True):
            emb = composites[p.set].edit_embedding(view, emb)
        _record_packed(ckpt, composites, pieces, views[0], null, null_mask, timesteps, sampling,
                       progress)  # fmt: skip
        hooks = [h for p, v in zip(pieces, views, strict=True) for h in composites[p.set].hooks(v)]
        if path:
            hooks.append(_Path(path))
        lat = _denoise(tr, hooks, timesteps, emb, mask, null, null_mask, x0, sampling)
        recordings.clear()
        images = torch.cat([codec.decode(lat[i : i + batch_size]).cpu()
                            for i in range(0, len(bt), batch_size)])  # fmt: skip
        if progress:
            progress(len(bt))
        yield pieces, images


def _record_packed(ckpt, composites, pieces, batch, null, null_mask, timesteps, sampling,
                   progress) -> None:  # fmt: skip
    """One plain run over the whole batch per distinct source prompt, with the recorders every
    piece that patches from it needs (rows of other pieces are recorded and not read)."""
    from engine.intervene.patch import Recorder

    enc, tr = ckpt.text_encoder, ckpt.transformer
    by_source: dict[str, dict] = {}
    rows: dict[str, int] = {}
    for piece in pieces:
        seen = set()
        for p in composites[piece.set].parts:
            if p.needs_source:
                by_source.setdefault(p.source, {})[p.record_key] = None
                if p.source not in seen:
                    rows[p.source] = rows.get(p.source, 0) + piece.size
                    seen.add(p.source)
    for source, keys in by_source.items():
        emb, mask = enc.encode([source] * batch.size)
        recorders = {k: Recorder(k[1], k[2], k[3]) for k in keys}
        _denoise(tr, list(recorders.values()), timesteps, emb, mask, null, null_mask,
                 batch.noise, sampling)  # fmt: skip
        for k, r in recorders.items():
            batch.recordings[k] = r.by_step
        if progress:
            progress(rows[source])
