"""The attention synopsis: how much attention each head sends between token categories, per
denoising step, summarised inside the attention call and reduced once the images exist.

Cross-attention (attn2). For every head, image token q and text category c, the capture hook
sums the attention probabilities over the text tokens of category c:
    mass[q, c] = sum_{k in c} A[q, k]
Categories are color1, shape1, relation, color2, shape2, filler and pad (engine.text); padding
is a category of its own, and the padding mask (a -10000 logit) already gives it ~0 mass, so
the seven masses of a query sum to 1. The CFG batch is [uncond; cond]: each branch is summed
with the categories of its own caption (the empty caption for uncond) and kept apart.

Image categories. Once a batch's images are decoded, each is split into object 1 (red),
object 2 (blue) and background with the evaluator's colour masks (engine.eval.detect.color_masks),
area-averaged to the 8x8 token grid: soft masks w[q, a] in [0, 1]. The synopsis value is the
mask-weighted mean over image tokens:
    S[a, c] = sum_q w[q, a] mass[q, c] / sum_q w[q, a]
(NaN when the image has no pixel of category a). Stored per sample:
    cross [sample, step, layer, branch, head, 3 image cats, 7 text cats]  float16
Self-attention (attn1), optional second pass with the same noise and the masks known:
    self  [sample, step, layer, branch, head, 3 query cats, 3 key cats]   float16
      = sum_{q,k} w[q, a] A[q, k] w[k, b] / sum_q w[q, a]
Full per-token cross maps [step, layer, head, 64, 7] (cond branch) are kept for the first
`detail` samples, with their images, for the TUI's head-detail pane.

Resume. Completed batches are appended to the run's staging file (engine.store.cache: append_run,
constant cost per batch) as they finish; the run goes into the cache file at the end, or with
complete=False when the run is interrupted by an error, ctrl+c or a cancel. Calling again with the
same parameters continues after the last stored sample, from the staging file if a killed run
left one, else from the cache. The run name is derived from the parameters, so the same request
always finds its run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence

import numpy as np

from engine.core import limits
from engine.core.errors import UserError
from engine.core.sampling import DEFAULT_SAMPLING, SamplingSettings
from engine.data.prompts import Prompt
from engine.store.cache import Store

KIND = "synopsis"
IMAGE_CATS = ("object1", "object2", "background")
# engine.text.CATEGORIES, spelled out so table reads need not import the encoders (torch);
# tests/test_probe.py checks that the two agree.
TEXT_CATS = ("color1", "shape1", "relation", "color2", "shape2", "filler", "pad")
BRANCHES = ("uncond", "cond")
GRID = 8


def category_onehot(categories: Sequence[Sequence[str]]):
    """[B, K, 7] float: which text category each token position belongs to."""
    import torch

    idx = torch.tensor([[TEXT_CATS.index(c) for c in row] for row in categories])
    return torch.nn.functional.one_hot(idx, len(TEXT_CATS)).float()


def soft_masks(images: np.ndarray, grid: int = GRID) -> np.ndarray:
    """[N, grid*grid, 3] fraction of each token's pixels that are object 1, object 2, background
    (row-major tokens, row 0 at the top, as PixArt's patch order)."""
    import cv2

    from engine.eval.detect import color_masks

    out = np.zeros((len(images), grid * grid, 3), dtype=np.float32)
    for i, img in enumerate(images):
        red, blue = color_masks(np.ascontiguousarray(img))
        r = cv2.resize(red.astype(np.float32) / 255, (grid, grid), interpolation=cv2.INTER_AREA)
        b = cv2.resize(blue.astype(np.float32) / 255, (grid, grid), interpolation=cv2.INTER_AREA)
        out[i, :, 0], out[i, :, 1] = r.reshape(-1), b.reshape(-1)
        out[i, :, 2] = np.clip(1 - out[i, :, 0] - out[i, :, 1], 0, 1)
    return out


def reduce_tokens(mass: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """mass [..., N, H, Q, C] (N samples) and masks [N, Q, A] -> [..., N, H, A, C], the
    mask-weighted mean over image tokens (NaN where a mask is empty)."""
    total = masks.sum(axis=1)  # [N, A]
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = np.einsum("...nhqc,nqa->...nhac", mass, masks)
        return weighted / total[:, None, :, None]


def pool_tokens(m, grid: int, to: int = GRID):
    """[B, H, grid*grid, C] per-token values -> [B, H, to*to, C], area-averaged (row-major)."""
    import torch.nn.functional as F

    b, h, _, c = m.shape
    x = m.permute(0, 1, 3, 2).reshape(b * h, c, grid, grid)
    x = F.adaptive_avg_pool2d(x, to)
    return x.reshape(b, h, c, to * to).permute(0, 1, 3, 2)


def is_free(prompt) -> bool:
    """A free-text prompt (outside our dataset's vocabulary: engine.data.prompts.free_prompt)."""
    return not prompt.relation


class CrossCapture:
    """Hook: per-token category masses of every cross-attention head, for one batch."""

    def __init__(self, onehot, steps: int, layers: int, grid: int = GRID):
        self.onehot = onehot  # [2B, K, C]: uncond rows first
        self.mass: list[list] = [[None] * layers for _ in range(steps)]
        self.grid = grid  # the model's token grid side; masses are kept on the GRID x GRID one

    # the Hook protocol (engine.probe.hooks.Hook), written out to keep this module torch-free
    def active(self, site):
        return site.attn == "cross" and site.step >= 0

    def changes_attention(self, site):
        return False

    def wants_probs(self, site):
        return True

    def scores(self, site, s):
        return None

    def probs(self, site, p):
        import torch

        if self.onehot.device != p.device:  # copied to the device once per batch
            self.onehot = self.onehot.to(p.device)
        m = torch.einsum("bhqk,bkc->bhqc", p.float(), self.onehot)
        if self.grid != GRID:  # a pretrained model's larger grid: area-average to GRID x GRID
            m = pool_tokens(m, self.grid)
        self.mass[site.step][site.layer] = m  # stays on the device until the batch ends
        return None

    def head_out(self, site, o):
        return None

    def array(self) -> np.ndarray:
        """[step, layer, 2B, H, Q, C]: one copy to the host for the whole batch."""
        import torch

        if any(m is None for row in self.mass for m in row):
            raise RuntimeError("some step or layer was not captured (is the schedule right?)")
        return torch.stack([torch.stack(row) for row in self.mass]).cpu().numpy()


class SelfCapture(CrossCapture):
    """Hook: object -> object/background self-attention of every head, given the soft masks."""

    def __init__(self, masks, steps: int, layers: int):
        import torch

        self.masks = torch.from_numpy(masks)  # [B, Q, A]
        self.w = None  # the masks of both CFG branches, on the device (copied once)
        self.mass = [[None] * layers for _ in range(steps)]

    def active(self, site):
        return site.attn == "self" and site.step >= 0

    def probs(self, site, p):
        import torch

        if self.w is None or self.w.device != p.device:  # both branches see the same image
            self.w = torch.cat([self.masks, self.masks]).to(p.device)
        w = self.w
        num = torch.einsum("bqa,bhqk,bkc->bhac", w, p.float(), w)
        den = w.sum(1)[:, None, :, None]
        self.mass[site.step][site.layer] = num / den
        return None


def _run_key(ckpt_hash: str, texts, seeds, steps, cfg, detail, self_attn) -> str:
    h = hashlib.sha256(
        json.dumps([ckpt_hash, list(texts), list(seeds), steps, cfg, detail, self_attn]).encode()
    )
    return h.hexdigest()[:12]


def synopsis_items(prompts: Sequence[Prompt], n_per_prompt: int, seed: int):
    return [(p, seed + k) for p in prompts for k in range(n_per_prompt)]


def run_synopsis(
    ckpt,
    prompts: Sequence[Prompt],
    n_per_prompt: int = 8,
    sampling: SamplingSettings = DEFAULT_SAMPLING,
    store: Store | None = None,
    progress: Callable[[int, int], None] | None = None,
    detail: int = 8,
    self_attn: bool = False,
    prompts_label: str = "eval",
) -> str:
    """Sample every (prompt, seed) with capture, evaluate, reduce and store; returns the run
    name. Continues a stored incomplete run with the same parameters. `sampling` comes checked
    (engine.ops.synopsis checks it with the prompts' count before a model is loaded)."""
    limits.NON_NEGATIVE.check("--detail", detail)
    if store is None:
        raise UserError("the synopsis needs a cache to write to")
    steps, cfg = sampling.steps, sampling.cfg
    items = synopsis_items(prompts, n_per_prompt, sampling.seed)
    n_free = sum(is_free(p) for p, _ in items)
    grid = ckpt.codec.latent_size // ckpt.transformer.config.patch_size
    if ckpt.meta.get("source") == "pipeline":
        from engine.model.pipeline import fit_batch

        sampling = sampling.with_batch_size(fit_batch(ckpt, sampling.batch_size, self_attn))
    texts, seeds = [p.text for p, _ in items], [s for _, s in items]
    enc, codec = ckpt.text_encoder, ckpt.codec
    enc.tokenize(sorted(set(texts)))  # unknown words fail before any sampling
    run = f"synopsis-{_run_key(ckpt.hash, texts, seeds, steps, cfg, detail, self_attn)}"
    attrs = {
        "role": "synopsis",
        "prompts": prompts_label,
        "n_samples": len(items),
        "n_per_prompt": n_per_prompt,
        "seed": sampling.seed,
        "steps": steps,
        "cfg": cfg,
        "encoder": enc.spec,
        "codec": codec.spec,
        "layers": ckpt.num_layers,
        "heads": ckpt.num_heads,
        "image_categories": json.dumps(IMAGE_CATS),
        "text_categories": json.dumps(TEXT_CATS),
        "branches": json.dumps(BRANCHES),
        "self_attn": self_attn,
        "detail": min(detail, len(items)),
        "mask_source": "engine.eval.detect.color_masks, area-averaged to 8x8",
        "grid": grid,
        "text_only": n_free,
        "image_categories_note": (
            f"{n_free} of {len(items)} samples have free-text prompts: no object masks, their "
            "image tokens all count as background (object1/object2 use the other samples)"
            if n_free
            else ""
        ),
    }
    done, seconds = _resume_point(store, run, detail)
    if done is None:  # complete already
        if progress:
            progress(len(items), len(items))
        return run
    if progress:
        progress(done, len(items))
    try:
        _sample_batches(ckpt, store, run, attrs, items, done, seconds, sampling, detail,
                        self_attn, grid, progress)  # fmt: skip
    except BaseException:  # an error, ctrl+c or a cancel: what is done goes into the cache
        if store.read_staged(KIND, run) is not None:
            store.commit_run(KIND, run)
        raise
    store.commit_run(KIND, run)
    return run


def _resume_point(store: Store, run: str, detail: int) -> tuple[int | None, float]:
    """(samples already done, seconds spent on them); done is None when the run is complete.
    A staging file a killed run left is continued when it is consistent; else the cache's
    partial run is copied into a fresh staging file and continued; a run stored before a
    metric (or the centres) existed cannot be continued (its images are gone): it starts
    again."""
    staged = store.read_staged(KIND, run)
    if staged is not None:
        old, a = staged
        done = int(a.get("done", 0))
        if _consistent(old, done, detail):
            return done, float(a.get("seconds", 0.0))
        store.discard_staged(KIND, run)
    if not store.has_run(KIND, run):
        return 0, 0.0
    a = store.attrs(KIND, run)
    if a.get("complete"):
        return None, 0.0
    old = store.read(KIND, run)
    done = int(a.get("done", 0))
    if not done or not _consistent(old, done, detail):
        return 0, 0.0
    rows = {k: v for k, v in old.items() if k not in ("prompts", "seeds")}
    store.append_run(KIND, run, rows, {k: v for k, v in a.items() if k != "created"})
    return done, float(a.get("seconds", 0.0))


def _consistent(old: dict, done: int, detail: int) -> bool:
    from engine.eval.evaluate import METRICS

    need = ("cross", "masks", "color_centres", *(f"eval/{m}" for m in METRICS))
    if not all(k in old and len(old[k]) == done for k in need):
        return False
    return all(
        len(old[k]) == min(detail, done) for k in ("detail_maps", "detail_images") if k in old
    )


def _sample_batches(ckpt, store, run, attrs, items, done, seconds0, sampling, detail, self_attn,
                    grid, progress) -> None:  # fmt: skip
    """Sample, capture, evaluate and append batch after batch from sample `done` on."""
    from engine.eval.detect import Detection
    from engine.eval.evaluate import METRICS, color_centres, evaluate_arrays
    from engine.model.sampler import denoise, initial_noise
    from engine.probe.hooks import hooked, schedule_timesteps

    enc, tr, codec = ckpt.text_encoder, ckpt.transformer, ckpt.codec
    texts, seeds = [p.text for p, _ in items], [s for _, s in items]
    steps, batch_size = sampling.steps, sampling.batch_size
    timesteps = schedule_timesteps(steps, tr)
    shape = (codec.channels, codec.latent_size, codec.latent_size)
    null, null_mask = enc.encode([""])
    null_cats = enc.tokenize([""]).categories
    t0 = time.perf_counter()
    fixed = {"prompts": texts, "seeds": np.asarray(seeds, dtype=np.int64)}  # with the first rows
    for start in range(done, len(items), batch_size):
        data: dict[str, list] = {"cross": [], "self": [], "masks": [], "detail_maps": [],
                                 "detail_images": [], "color_centres": []}  # fmt: skip
        evals: dict[str, list] = {m: [] for m in METRICS}
        bt, bs = texts[start : start + batch_size], seeds[start : start + batch_size]
        n = len(bt)
        tok = enc.tokenize(bt)
        emb, mask = enc.encode(bt)
        onehot = category_onehot(null_cats * n + tok.categories)
        noise = initial_noise(bt, bs, shape)
        cap = CrossCapture(onehot, steps, ckpt.num_layers, grid)
        uncond = (null.expand(n, -1, -1), null_mask.expand(n, -1))
        with hooked(tr, [cap], timesteps):
            lat = denoise(tr, emb, mask, *uncond, noise, sampling)
        images = codec.decode(lat).cpu().numpy()
        masks = soft_masks(images)
        free = np.array([is_free(p) for p, _ in items[start : start + n]])
        masks[free] = (0.0, 0.0, 1.0)  # free text: no objects to mask, every token background
        mass = cap.array()  # [S, L, 2n, H, Q, C]
        both = np.stack([mass[:, :, :n], mass[:, :, n:]], axis=2)  # [S, L, 2, n, H, Q, C]
        red = reduce_tokens(both, masks)  # [S, L, 2, n, H, A, C]
        data["cross"].append(red.transpose(3, 0, 1, 2, 4, 5, 6).astype(np.float16))
        data["masks"].append(masks.astype(np.float16))
        keep = max(0, min(detail - start, n))
        if keep:
            data["detail_maps"].append(
                mass[:, :, n : n + keep].transpose(2, 0, 1, 3, 4, 5).astype(np.float16)
            )
            data["detail_images"].append(images[:keep])
        if self_attn:
            fine = masks if grid == GRID else soft_masks(images, grid)
            if grid != GRID:
                fine[free] = (0.0, 0.0, 1.0)
            sc = SelfCapture(fine, steps, ckpt.num_layers)
            with hooked(tr, [sc], timesteps):
                denoise(tr, emb, mask, *uncond, noise, sampling)
            s = sc.array()  # [S, L, 2n, H, A, A]
            s = np.stack([s[:, :, :n], s[:, :, n:]], axis=2)
            data["self"].append(s.transpose(3, 0, 1, 2, 4, 5, 6).astype(np.float16))
        batch_prompts = [p for p, _ in items[start : start + n]]
        res = evaluate_arrays(images, batch_prompts)
        for m in METRICS:
            evals[m].append(np.array([bool(r[m]) for r in res.per_image]))
        # Kept so the report can set the colours' placement against a shuffled-prompt chance.
        data["color_centres"].append(
            np.array(
                [
                    color_centres(p, [Detection(**d) for d in r["detections"]])
                    for p, r in zip(batch_prompts, res.per_image, strict=True)
                ],
                dtype=np.float32,
            ).reshape(n, 4)
        )
        done = start + n
        rows = {k: np.concatenate(v) for k, v in data.items() if v}
        rows.update({f"eval/{m}": np.concatenate(v) for m, v in evals.items()})
        seconds = round(seconds0 + time.perf_counter() - t0, 2)
        store.append_run(KIND, run, rows, {**attrs, "done": done, "complete": done >= len(items),
                                           "seconds": seconds}, fixed)  # fmt: skip
        fixed = None
        if progress:
            progress(done, len(items))
