"""Sampling as in the paper: DPM-Solver++ (diffusers) over PixArt's linear beta schedule, CFG.

Each image's starting noise comes from its own (prompt, seed) pair, so the same pair gives the
same image whatever else is in the batch: the ablation runs compare paired seeds.
The model sees CFG as one batch of 2B: the unconditional half first, then the conditional half
(probes rely on this order).
"""

from __future__ import annotations

import contextvars
import hashlib
import warnings
from collections.abc import Callable, Sequence

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from engine.core.device import inference_autocast
from engine.core.sampling import DEFAULT_SAMPLING, SamplingSettings

NOISE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**NOISE)


def sample_scheduler(transformer=None) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ over our schedule; an imported pipeline's transformer carries its own
    scheduler config (engine.model.pipeline), which is used as it is."""
    cfg = getattr(transformer, "workbench_scheduler_config", None)
    if cfg:
        import diffusers

        return _quiet(getattr(diffusers, cfg["_class_name"]).from_config(cfg))
    return _quiet(
        DPMSolverMultistepScheduler(**NOISE, algorithm_type="dpmsolver++", solver_order=2)
    )


def _quiet(sched):
    """DPM-Solver++'s set_timesteps builds its sigmas with np.array(tensor), which under NumPy 2
    warns on every call that torch's __array__ takes no `copy` keyword (harmless: the copy is made
    anyway). Silenced here, where it arises, instead of in every caller and test."""
    inner = sched.set_timesteps

    def set_timesteps(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"__array__ implementation doesn't accept a copy keyword"
            )
            return inner(*args, **kwargs)

    sched.set_timesteps = set_timesteps
    return sched


# The timestep of the forward pass `denoise` is running, as a host int: engine.probe.hooks reads
# it instead of the device tensor (reading that would wait for the device at every step).
CURRENT_TIMESTEP: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "CURRENT_TIMESTEP", default=None
)


def item_seed(text: str, seed: int) -> int:
    """A stable 63-bit seed for one (prompt, seed) pair (Python's hash() is salted per process)."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def initial_noise(
    texts: Sequence[str], seeds: Sequence[int], shape: tuple[int, ...]
) -> torch.Tensor:
    out = torch.empty((len(texts), *shape))
    for i, (t, s) in enumerate(zip(texts, seeds, strict=True)):
        g = torch.Generator().manual_seed(item_seed(t, s))
        out[i] = torch.randn(shape, generator=g)
    return out


def model_kwargs(transformer=None, batch: int = 1, device=None) -> dict:
    # use_additional_conditions=False, but PixArt's forward still reads these keys.
    if transformer is None or not transformer.config.get("use_additional_conditions"):
        return {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
    # PixArt-alpha at 1024 px conditions on the image size and aspect ratio, as its pipeline.
    res = float(getattr(transformer, "workbench_pixel_res", 0) or 0)
    return {
        "added_cond_kwargs": {
            "resolution": torch.tensor([[res, res]], device=device).repeat(batch, 1),
            "aspect_ratio": torch.tensor([[1.0]], device=device).repeat(batch, 1),
        }
    }


@torch.no_grad()
def denoise(
    transformer,
    cond: torch.Tensor,
    cond_mask: torch.Tensor,
    uncond: torch.Tensor,
    uncond_mask: torch.Tensor,
    noise: torch.Tensor,
    sampling: SamplingSettings = DEFAULT_SAMPLING,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run DPM-Solver++ from `noise` [B, C, S, S] for `sampling.steps` steps at guidance
    `sampling.cfg`; returns the final latents."""
    steps, cfg = sampling.steps, sampling.cfg
    device = next(transformer.parameters()).device
    dtype = next(transformer.parameters()).dtype
    sched = sample_scheduler(transformer)
    # The schedule stays on the host: the solver's step lookup and the probes' step index read
    # it there, with no device sync per step.
    sched.set_timesteps(steps)
    x = noise.to(device)
    ctx = torch.cat([uncond, cond]).to(device, dtype)
    mask = torch.cat([uncond_mask, cond_mask]).to(device)
    autocast = inference_autocast(device)  # bf16 on CUDA; nothing (float32) on the CPU
    for i, t in enumerate(sched.timesteps):
        xin = torch.cat([x, x]).to(dtype)
        tt = t.expand(xin.shape[0]).to(device)
        hint = CURRENT_TIMESTEP.set(int(t))
        with autocast:
            eps = transformer(
                xin,
                encoder_hidden_states=ctx,
                encoder_attention_mask=mask,
                timestep=tt,
                **model_kwargs(transformer, xin.shape[0], device),
                return_dict=False,
            )[0].float()
        CURRENT_TIMESTEP.reset(hint)
        if eps.shape[1] == 2 * x.shape[1]:  # learned variance (PixArt's out_channels 8): drop it
            eps = eps[:, : x.shape[1]]
        e_u, e_c = eps.chunk(2)
        eps = e_u + cfg * (e_c - e_u)
        x = sched.step(eps, t, x, return_dict=False)[0]
        if on_step:
            on_step(i)
    return x


@torch.no_grad()
def sample_images(
    ckpt,
    texts: Sequence[str],
    seeds: Sequence[int],
    sampling: SamplingSettings = DEFAULT_SAMPLING,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """uint8 [N, H, W, 3] images for (text, seed) pairs, `sampling.batch_size` at a time
    (`sampling.seed` is not read: each pair carries its seed)."""
    batch_size = sampling.batch_size
    codec, tr, enc = ckpt.codec, ckpt.transformer, ckpt.text_encoder
    shape = (codec.channels, codec.latent_size, codec.latent_size)
    null, null_mask = enc.encode([""])
    out = []
    for start in range(0, len(texts), batch_size):
        bt, bs = list(texts[start : start + batch_size]), list(seeds[start : start + batch_size])
        emb, mask = enc.encode(bt)
        n = len(bt)
        lat = denoise(
            tr,
            emb,
            mask,
            null.expand(n, -1, -1),
            null_mask.expand(n, -1),
            initial_noise(bt, bs, shape),
            sampling,
        )
        out.append(codec.decode(lat).cpu())
        if progress:
            progress(n)
    return torch.cat(out) if out else torch.empty(0, codec.res, codec.res, 3, dtype=torch.uint8)
