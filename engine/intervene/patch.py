"""Activation patching: copy one head's output (or attention pattern) from a source run.

`patch L.H from="red square is below blue circle"` first runs the plain model on the source
prompt, starting from each target sample's own initial noise (so source and target share the
seed and the noise), records head H of layer L at every step, then runs the target with that
head's output replaced by the recording. what=out (default) copies the head's output
[Q, D] before `to_out`; what=probs copies its attention probabilities (the pattern; the
head's values stay the target's own). attn=cross (default) or self; branch=cond (default)
patches the conditional CFG rows only; steps= limits the patched steps.

A source prompt equal to the target gives back the target's own activations: bit-identical
images (what=out). The recordings hold every head of the recorded layer, [steps, 2B, H, Q, D]
floats per patched layer and batch: lower --batch-size for large models.
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
    format_steps,
    parse_head,
    parse_steps,
    spec_error,
    unknown_options,
)
from engine.probe.hooks import Hook, Site


@dataclass(frozen=True)
class PatchHead(Intervention):
    layer: int
    head: int
    source: str
    attn: str = "cross"
    steps: tuple[int, ...] | None = None
    branch: str = "cond"
    what: str = "out"
    kind = "patch"

    @classmethod
    def from_args(cls, positional, options, spec) -> PatchHead:
        unknown_options(options, ("from", "attn", "steps", "branch", "what"), spec)
        if len(positional) != 1:
            raise spec_error(spec, "patch takes one head as LAYER.HEAD, e.g. patch 2.8 from=...")
        layer, head = parse_head(positional[0], spec)
        source = options.get("from", "").strip()
        if not source:
            raise spec_error(spec, 'patch needs from="SOURCE PROMPT"')
        return cls(
            layer,
            head,
            source,
            choice(options.get("attn", "cross"), ATTNS, "attn", spec),
            parse_steps(options.get("steps", "all"), spec),
            choice(options.get("branch", "cond"), BRANCHES, "branch", spec),
            choice(options.get("what", "out"), ("out", "probs"), "what", spec),
        )

    def text(self) -> str:
        src = self.source.replace('"', "'")
        s = f'patch {self.layer}.{self.head} from="{src}"'
        if self.attn != "cross":
            s += f" attn={self.attn}"
        if self.what != "out":
            s += f" what={self.what}"
        if self.steps is not None:
            s += f" steps={format_steps(self.steps)}"
        if self.branch != "cond":
            s += f" branch={self.branch}"
        return s

    def check(self, num_layers, num_heads, steps) -> None:
        check_head(self, self.layer, self.head, num_layers, num_heads)
        check_steps(self, self.steps, steps)

    @property
    def needs_source(self) -> bool:
        return True

    @property
    def record_key(self) -> tuple[str, int, str, str]:
        return (self.source, self.layer, self.attn, self.what)

    def hooks(self, batch: Batch) -> list[Hook]:
        rec = batch.recordings[self.record_key]
        return [_PatchHook(self, rec, branch_rows(batch.rows(), batch.size, self.branch))]


class Recorder(Hook):
    """Records one layer's per-head outputs (what=out) or probabilities at every step."""

    def __init__(self, layer: int, attn: str, what: str):
        self.layer, self.attn, self.what = layer, attn, what
        self.by_step: dict[int, torch.Tensor] = {}

    def active(self, site: Site) -> bool:
        return site.layer == self.layer and site.attn == self.attn

    def wants_probs(self, site: Site) -> bool:
        return self.what == "probs" and self.active(site)

    def probs(self, site: Site, probs: torch.Tensor) -> None:
        if self.what == "probs":
            self.by_step[site.step] = probs.detach().clone()

    def head_out(self, site: Site, out: torch.Tensor) -> None:
        if self.what == "out":
            self.by_step[site.step] = out.detach().clone()


class _PatchHook(Hook):
    def __init__(self, iv: PatchHead, rec: dict[int, torch.Tensor], rows: list[slice]):
        self.iv, self.rec, self.rows = iv, rec, rows
        self.steps = None if iv.steps is None else frozenset(iv.steps)

    def active(self, site: Site) -> bool:
        return (
            site.layer == self.iv.layer
            and site.attn == self.iv.attn
            and (self.steps is None or site.step in self.steps)
            and site.step in self.rec
        )

    def changes_attention(self, site: Site) -> bool:
        return self.iv.what == "probs" and self.active(site)

    def _copy(self, site: Site, t: torch.Tensor) -> torch.Tensor:
        src = self.rec[site.step]
        if src.shape != t.shape:
            raise RuntimeError(f"patch source shape {tuple(src.shape)} != {tuple(t.shape)}")
        for sl in self.rows:
            t[sl, self.iv.head] = src[sl, self.iv.head].to(t.dtype)
        return t

    def probs(self, site: Site, probs: torch.Tensor) -> torch.Tensor | None:
        return self._copy(site, probs) if self.iv.what == "probs" else None

    def head_out(self, site: Site, out: torch.Tensor) -> torch.Tensor | None:
        return self._copy(site, out) if self.iv.what == "out" else None
