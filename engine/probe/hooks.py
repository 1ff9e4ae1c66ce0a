"""Named hook points inside every attention call of a diffusers PixArt transformer.

Probes (the attention synopsis) and interventions (head masks, patches) both need to see or
change one head's attention inside the model. diffusers' swap point for that is the attention
processor, so `hooked(transformer, hooks)` installs a `HookedAttnProcessor` on every block's
`attn1` (self-attention over image tokens) and `attn2` (cross-attention to text tokens) and
restores the original processors on exit, even after an exception.

Hook points, in the order they run inside one attention call (shapes are [batch, heads, ...]):

- `scores(site, s)`   pre-softmax logits [B, H, Q, K], scale and padding mask applied;
- `probs(site, p)`    attention probabilities [B, H, Q, K];
- `head_out(site, o)` each head's output [B, H, Q, D], before the heads are merged by `to_out`.

A hook returns a replacement tensor or None (observe only). `Site` says where the call is:
layer, "cross" or "self", denoising step, and how many leading batch rows are the unconditional
CFG branch (the sampler batches [uncond; cond]).

Observing must not change the images: when no hook changes scores or probabilities, the output
still comes from `scaled_dot_product_attention` exactly as in diffusers' own processor, and the
probabilities are computed on the side. Only hooks that change logits take the explicit path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.core.errors import UserError

CROSS, SELF = "cross", "self"


@dataclass(frozen=True)
class Site:
    layer: int
    attn: str  # CROSS or SELF
    step: int  # denoising step index, -1 outside a known schedule
    n_uncond: int  # rows [0, n_uncond) are the unconditional CFG branch

    def branch_rows(self, batch: int, branch: str) -> slice:
        """Batch rows of a CFG branch: "cond", "uncond" or "both"."""
        if branch == "cond":
            return slice(self.n_uncond, batch)
        if branch == "uncond":
            return slice(0, self.n_uncond)
        return slice(0, batch)


class Hook:
    """Base class: every hook point is a no-op until a subclass overrides it."""

    def active(self, site: Site) -> bool:
        """Whether this hook wants to run at `site` (cheap; lets the processor skip work)."""
        return True

    def changes_attention(self, site: Site) -> bool:
        """True if `scores` or `probs` may return a replacement at `site`."""
        return False

    def wants_probs(self, site: Site) -> bool:
        return False

    def scores(self, site: Site, scores: torch.Tensor) -> torch.Tensor | None:
        return None

    def probs(self, site: Site, probs: torch.Tensor) -> torch.Tensor | None:
        return None

    def head_out(self, site: Site, out: torch.Tensor) -> torch.Tensor | None:
        return None


class _State:
    """What the processors share during one hooked run: current step and CFG layout."""

    def __init__(self, hooks: Sequence[Hook], timesteps: Sequence[int] | None, cfg: bool):
        self.hooks = list(hooks)
        self.index = {int(t): i for i, t in enumerate(timesteps or [])}
        self.cfg = cfg
        self.step = -1

    def on_forward(self, module, args, kwargs):
        from engine.model.sampler import CURRENT_TIMESTEP

        hint = CURRENT_TIMESTEP.get()  # under engine.model.sampler.denoise: no device read
        if hint is not None:
            self.step = self.index.get(hint, -1)
            return
        t = kwargs.get("timestep")
        if t is None and len(args) > 2:  # forward(hidden_states, encoder_hidden_states, timestep)
            t = args[2]
        if t is None:
            self.step = -1
        else:
            t = t.reshape(-1)[0] if torch.is_tensor(t) else t
            self.step = self.index.get(int(round(float(t))), -1)


class HookedAttnProcessor:
    """diffusers AttnProcessor2_0 with the hook points above (3-D inputs, as PixArt uses)."""

    def __init__(self, layer: int, attn_kind: str, state: _State):
        self.layer = layer
        self.attn_kind = attn_kind
        self.state = state

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
            raise UserError("hooked attention supports PixArt-style 3-D attention only")
        batch = hidden_states.shape[0]
        state = self.state
        site = Site(self.layer, self.attn_kind, state.step, batch // 2 if state.cfg else 0)
        hooks = [h for h in state.hooks if h.active(site)]

        residual = hidden_states
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        explicit = any(h.changes_attention(site) for h in hooks)
        observe = [h for h in hooks if h.wants_probs(site)]
        if explicit or observe:
            scores = torch.matmul(query, key.transpose(-1, -2)) * attn.scale
            if attention_mask is not None:
                scores = scores + attention_mask
            for h in hooks:
                new = h.scores(site, scores)
                scores = scores if new is None else new
            probs = scores.softmax(dim=-1)
            for h in hooks:
                new = h.probs(site, probs)
                probs = probs if new is None else new
        if explicit:
            out = torch.matmul(probs.to(value.dtype), value)
        else:
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )
        for h in hooks:
            new = h.head_out(site, out)
            out = out if new is None else new

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def attention_modules(transformer) -> list[tuple[int, str, torch.nn.Module]]:
    """(layer, "self"|"cross", Attention) for every block of a PixArt-style transformer."""
    blocks = getattr(transformer, "transformer_blocks", None)
    if blocks is None:
        raise UserError(
            f"{type(transformer).__name__} has no transformer_blocks; "
            "expected a diffusers PixArtTransformer2DModel"
        )
    found = []
    for i, block in enumerate(blocks):
        found.append((i, SELF, block.attn1))
        if getattr(block, "attn2", None) is not None:
            found.append((i, CROSS, block.attn2))
    return found


@contextlib.contextmanager
def hooked(
    transformer,
    hooks: Sequence[Hook],
    timesteps: Sequence[int] | None = None,
    cfg: bool = True,
) -> Iterator[_State]:
    """Install the hooks on every attention of `transformer` for the duration of the block.

    `timesteps` (the sampler's schedule) lets hooks see the denoising step index; `cfg` says the
    batch is [uncond; cond] halves, as `engine.model.sampler.denoise` builds it.
    """
    state = _State(hooks, timesteps, cfg)
    modules = attention_modules(transformer)
    saved = [m.processor for _, _, m in modules]
    handle = transformer.register_forward_pre_hook(state.on_forward, with_kwargs=True)
    try:
        for layer, kind, module in modules:
            module.set_processor(HookedAttnProcessor(layer, kind, state))
        yield state
    finally:
        handle.remove()
        for (_, _, module), proc in zip(modules, saved, strict=True):
            module.set_processor(proc)


def schedule_timesteps(steps: int, transformer=None) -> list[int]:
    """The timesteps the sampler visits for `steps` DPM-Solver++ steps, in order (an imported
    pipeline's transformer brings its own scheduler)."""
    from engine.model.sampler import sample_scheduler

    sched = sample_scheduler(transformer)
    sched.set_timesteps(steps)
    return [int(t) for t in sched.timesteps]
