"""What every intervention is: a small named object with a one-line text form.

An intervention can act at three places of one sampling batch, each optional:

1. `edit_caption(text)`: the conditional caption before it is encoded (drop, swap, insert words);
2. `edit_embedding(batch, emb)`: the encoded conditional caption [B, 20, C] (embedding arithmetic);
3. `hooks(batch)`: `engine.probe.hooks.Hook`s that run inside the attention calls (head masks,
   zeroed heads, patched heads); `engine.probe.hooks.hooked` installs them for one denoising run
   and restores the model's own processors afterwards, so an intervention never outlives its run.

The unconditional (null caption) branch is never edited; hooks choose their CFG branch.
A `Composite` applies several interventions together, in order (text form joined with " + ").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from engine.probe.hooks import Hook


@dataclass
class Batch:
    """One sampling batch as the interventions see it.

    `captions` are the conditional captions after every text edit, `tokens` their tokenization
    (categories per position), `null_tokens` the null caption's. Rows [lo, hi) of the batch are
    the ones an intervention acts on (the whole batch unless several sample sets share it, as
    `engine.intervene.sample.sample_packed` does for sweeps); in the model's CFG batch these
    rows are lo..hi (unconditional) and B+lo..B+hi (conditional). An intervention must leave
    every other row as the unmodified model computes it (tests/test_sweep_packing.py).
    """

    texts: list[str]  # original prompts (what the images are scored against)
    captions: list[str]  # conditional captions after text edits
    tokens: object  # engine.text.Tokens of `captions`
    null_tokens: object  # engine.text.Tokens of [""]
    encoder: object
    steps: int
    noise: torch.Tensor | None = None
    lo: int = 0
    hi: int | None = None
    # filled by the sampler for interventions that need a source run (patch):
    recordings: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.captions)

    def rows(self) -> tuple[int, int]:
        return self.lo, self.size if self.hi is None else self.hi


def branch_rows(batch_rows: tuple[int, int], n_uncond: int, branch: str) -> list[slice]:
    """Row slices of the model's CFG batch [uncond; cond] for rows [lo, hi) and a branch."""
    lo, hi = batch_rows
    out = []
    if branch in ("uncond", "both"):
        out.append(slice(lo, hi))
    if branch in ("cond", "both"):
        out.append(slice(n_uncond + lo, n_uncond + hi))
    return out


class Intervention:
    """Base class; subclasses override what they change (see the module doc)."""

    kind: str = ""

    def text(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.text()

    def check(self, num_layers: int, num_heads: int, steps: int) -> None:
        """Raise UserError when the intervention does not fit this model or schedule."""

    def edit_caption(self, caption: str) -> str:
        return caption

    def edit_embedding(self, batch: Batch, emb: torch.Tensor) -> torch.Tensor:
        return emb

    def hooks(self, batch: Batch) -> list[Hook]:
        return []

    @property
    def needs_source(self) -> bool:
        """True if the intervention needs a recorded run on another prompt (patch)."""
        return False


@dataclass(frozen=True)
class Composite:
    """Several interventions applied together, in order."""

    parts: tuple[Intervention, ...] = ()

    def text(self) -> str:
        return " + ".join(p.text() for p in self.parts) if self.parts else "none"

    def __str__(self) -> str:
        return self.text()

    def __bool__(self) -> bool:
        return bool(self.parts)

    def check(self, num_layers: int, num_heads: int, steps: int) -> None:
        for p in self.parts:
            p.check(num_layers, num_heads, steps)

    def edit_caption(self, caption: str) -> str:
        for p in self.parts:
            caption = p.edit_caption(caption)
        return caption

    def edit_embedding(self, batch: Batch, emb: torch.Tensor) -> torch.Tensor:
        for p in self.parts:
            emb = p.edit_embedding(batch, emb)
        return emb

    def hooks(self, batch: Batch) -> list[Hook]:
        out: list[Hook] = []
        for p in self.parts:
            out.extend(p.hooks(batch))
        return out

    @property
    def needs_source(self) -> bool:
        return any(p.needs_source for p in self.parts)

    @property
    def edits_text(self) -> bool:
        return any(type(p).edit_caption is not Intervention.edit_caption for p in self.parts)


def step_set(steps: Sequence[int] | None) -> frozenset[int] | None:
    return None if steps is None else frozenset(steps)
