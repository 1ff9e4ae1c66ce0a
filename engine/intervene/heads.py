"""Head interventions: mask a cross-attention head from text tokens, zero a head's output.

`mask-head L.H tokens=relation` is the paper's ablation: before the softmax of head H in layer
L's cross-attention, the logits of every key position whose token category is chosen are set to
a large negative number (half the dtype's most negative value, so the softmax gives them exactly
zero weight and the rest renormalises). The categories come from each batch row's own caption
(`Tokens.categories`); the unconditional rows hold the null caption, whose one token is a
"filler". By default only the conditional CFG branch is masked (branch=cond). Where every real
token of a row is masked the head has nothing left to attend to and its output there is zero.
A mask that hits no token in a batch (tokens=none, or a category the captions lack) installs no
hook, so the model runs exactly as without it: bit-identical images.

`zero-head L.H [attn=cross|self]` sets that head's output to zero before the heads are merged
by `to_out` (both CFG branches by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.intervene.base import Batch, Intervention, branch_rows
from engine.intervene.spec import (
    ATTNS,
    BRANCHES,
    check_head,
    check_steps,
    choice,
    format_categories,
    format_steps,
    parse_categories,
    parse_head,
    parse_steps,
    spec_error,
    unknown_options,
)
from engine.probe.hooks import CROSS, Hook, Site


def masked_logit(dtype: torch.dtype) -> float:
    """A logit that softmax turns into exactly 0 next to any real logit, without overflow."""
    return torch.finfo(dtype).min / 2


def _one_head(positional: list[str], spec: str) -> tuple[int, int]:
    if len(positional) != 1:
        raise spec_error(spec, "give exactly one head as LAYER.HEAD, e.g. 2.8")
    return parse_head(positional[0], spec)


@dataclass(frozen=True)
class MaskHead(Intervention):
    layer: int
    head: int
    tokens: tuple[str, ...] = ("relation",)
    steps: tuple[int, ...] | None = None
    branch: str = "cond"
    kind = "mask-head"

    @classmethod
    def from_args(cls, positional, options, spec) -> MaskHead:
        unknown_options(options, ("tokens", "steps", "branch"), spec)
        layer, head = _one_head(positional, spec)
        return cls(
            layer,
            head,
            parse_categories(options.get("tokens", "relation"), spec),
            parse_steps(options.get("steps", "all"), spec),
            choice(options.get("branch", "cond"), BRANCHES, "branch", spec),
        )

    def text(self) -> str:
        s = f"mask-head {self.layer}.{self.head} tokens={format_categories(self.tokens)}"
        if self.steps is not None:
            s += f" steps={format_steps(self.steps)}"
        if self.branch != "cond":
            s += f" branch={self.branch}"
        return s

    def check(self, num_layers, num_heads, steps) -> None:
        check_head(self, self.layer, self.head, num_layers, num_heads)
        check_steps(self, self.steps, steps)

    def key_mask(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked [2B, K], valid [2B, K]) over the model's CFG batch [uncond; cond]."""
        b = batch.size
        k = batch.tokens.mask.shape[1]
        cats = set(self.tokens)
        valid = torch.zeros(2 * b, k, dtype=torch.bool)
        valid[:b] = batch.null_tokens.mask[0].bool().cpu()
        valid[b:] = batch.tokens.mask.bool().cpu()
        masked = torch.zeros(2 * b, k, dtype=torch.bool)
        null_row = torch.tensor([c in cats for c in batch.null_tokens.categories[0]])
        for sl in branch_rows(batch.rows(), b, self.branch):
            for r in range(sl.start, sl.stop):
                if r < b:
                    masked[r] = null_row
                else:
                    masked[r] = torch.tensor([c in cats for c in batch.tokens.categories[r - b]])
        return masked, valid

    def hooks(self, batch: Batch) -> list[Hook]:
        masked, valid = self.key_mask(batch)
        if not masked.any():
            return []
        return [_MaskHook(self.layer, self.head, self.steps, masked, valid)]


class _MaskHook(Hook):
    def __init__(self, layer, head, steps, masked: torch.Tensor, valid: torch.Tensor):
        self.layer, self.head = layer, head
        self.steps = None if steps is None else frozenset(steps)
        self.masked = masked
        self.dead = (masked | ~valid).all(dim=-1)  # rows with nothing left to attend to
        self._dev: dict = {}

    def _on(self, t: torch.Tensor, name: str) -> torch.Tensor:
        key = (name, t.device)
        if key not in self._dev:
            self._dev[key] = getattr(self, name).to(t.device)
        return self._dev[key]

    def active(self, site: Site) -> bool:
        return (
            site.attn == CROSS
            and site.layer == self.layer
            and (self.steps is None or site.step in self.steps)
        )

    def changes_attention(self, site: Site) -> bool:
        return self.active(site)

    def scores(self, site: Site, scores: torch.Tensor) -> torch.Tensor:
        m = self._on(scores, "masked")
        if m.shape[0] != scores.shape[0]:
            raise RuntimeError(f"mask for {m.shape[0]} rows, batch has {scores.shape[0]}")
        scores[:, self.head] = scores[:, self.head].masked_fill(
            m[:, None, :], masked_logit(scores.dtype)
        )
        return scores

    def probs(self, site: Site, probs: torch.Tensor) -> torch.Tensor | None:
        if not bool(self.dead.any()):
            return None
        dead = self._on(probs, "dead")
        probs[dead, self.head] = 0
        return probs


@dataclass(frozen=True)
class ZeroHead(Intervention):
    layer: int
    head: int
    attn: str = "cross"
    steps: tuple[int, ...] | None = None
    branch: str = "both"
    kind = "zero-head"

    @classmethod
    def from_args(cls, positional, options, spec) -> ZeroHead:
        unknown_options(options, ("attn", "steps", "branch"), spec)
        layer, head = _one_head(positional, spec)
        return cls(
            layer,
            head,
            choice(options.get("attn", "cross"), ATTNS, "attn", spec),
            parse_steps(options.get("steps", "all"), spec),
            choice(options.get("branch", "both"), BRANCHES, "branch", spec),
        )

    def text(self) -> str:
        s = f"zero-head {self.layer}.{self.head}"
        if self.attn != "cross":
            s += f" attn={self.attn}"
        if self.steps is not None:
            s += f" steps={format_steps(self.steps)}"
        if self.branch != "both":
            s += f" branch={self.branch}"
        return s

    def check(self, num_layers, num_heads, steps) -> None:
        check_head(self, self.layer, self.head, num_layers, num_heads)
        check_steps(self, self.steps, steps)

    def hooks(self, batch: Batch) -> list[Hook]:
        return [_ZeroHook(self, branch_rows(batch.rows(), batch.size, self.branch))]


class _ZeroHook(Hook):
    def __init__(self, iv: ZeroHead, rows: list[slice]):
        self.iv = iv
        self.rows = rows
        self.steps = None if iv.steps is None else frozenset(iv.steps)

    def active(self, site: Site) -> bool:
        return (
            site.attn == self.iv.attn
            and site.layer == self.iv.layer
            and (self.steps is None or site.step in self.steps)
        )

    def head_out(self, site: Site, out: torch.Tensor) -> torch.Tensor:
        for sl in self.rows:
            out[sl, self.iv.head] = 0
        return out
