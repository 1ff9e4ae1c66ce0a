"""The sampling settings every sampling operation shares: DPM-Solver++ steps, guidance scale,
images per forward pass and the first seed, in one object that is checked once (by the
operation, before a model is loaded) and passed whole down to the sampler.

The defaults are the paper's, written here only. Torch-free: the engine checks a job's settings
with it before queueing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from engine.core import limits
from engine.core.spec import Spelling, job_spelling, param


@dataclass(frozen=True)
class SamplingSettings:
    """`steps` of DPM-Solver++, guidance scale `cfg`, `batch_size` images per forward pass,
    first image `seed`. The values are kept as given (no coercion): the cache's run keys hash
    them, so an int guidance scale and a float one name different runs, as they always did."""

    steps: int = 14
    cfg: float = 4.5
    batch_size: int = 32
    seed: int = 0

    def check(
        self,
        counts: Mapping[str, int] | None = None,
        n_prompts: int | None = None,
        name: Spelling = job_spelling,
    ) -> SamplingSettings:
        """These settings, or UserError naming the first one out of its bound.

        `counts`: the images-per-prompt parameters by name ({"n": 4}); with `n_prompts`, their
        product is held to limits.MAX_IMAGES. `name` spells a parameter for the error."""
        for k, v in (counts or {}).items():
            limits.IMAGES_PER_PROMPT.check(name(k), v)
            if n_prompts is not None:
                limits.check_count(f"{name(k)} {v} x {n_prompts} prompts", v * n_prompts,
                                   limits.MAX_IMAGES, "images")  # fmt: skip
        for field, (bound, _) in _DECLARED.items():
            bound.check(name(field), getattr(self, field))
        return self

    @classmethod
    def of(cls, op) -> SamplingSettings:
        """The settings held by an operation's (or any object's) four fields of these names."""
        return cls(op.steps, op.cfg, op.batch_size, op.seed)

    def with_batch_size(self, batch_size: int) -> SamplingSettings:
        return replace(self, batch_size=batch_size)


DEFAULT_SAMPLING = SamplingSettings()


# An operation's field for one setting: its default, bound and help are declared here, once.
_DECLARED = {
    "seed": (limits.SEED, "First image seed (then seed+1, ...)."),
    "steps": (limits.SAMPLER_STEPS, f"DPM-Solver++ steps (paper: {DEFAULT_SAMPLING.steps})."),
    "cfg": (limits.CFG, f"Classifier-free guidance scale (paper: {DEFAULT_SAMPLING.cfg})."),
    "batch_size": (limits.BATCH, "Images per forward pass."),
}


def sampling_param(name: str, help: str | None = None):
    """The dataclass field of sampling setting `name` for an operation (`help` where the
    operation uses it otherwise, e.g. a seed that also shuffles prompts)."""
    bound, text = _DECLARED[name]
    return param(getattr(DEFAULT_SAMPLING, name), bound=bound, help=help or text)
