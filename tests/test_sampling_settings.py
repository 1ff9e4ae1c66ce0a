"""engine.core.sampling.SamplingSettings: the one check of the sampling settings and the names
its errors give."""

from __future__ import annotations

import pytest

from engine.core import limits
from engine.core.errors import UserError
from engine.core.sampling import DEFAULT_SAMPLING, SamplingSettings
from engine.core.spec import option_spelling, spec_of
from engine.ops.sample import Sample


def test_defaults_are_the_papers_and_pass_their_check():
    assert DEFAULT_SAMPLING == SamplingSettings(steps=14, cfg=4.5, batch_size=32, seed=0)
    assert DEFAULT_SAMPLING.check({"n": 4}, 264) is DEFAULT_SAMPLING


@pytest.mark.parametrize(
    ("settings", "engine", "cli"),
    [
        (SamplingSettings(batch_size=0), "param 'batch_size' must be positive",
         "--batch-size must be positive"),
        (SamplingSettings(cfg=float("nan")), "param 'cfg' must be a finite number",
         "--cfg must be a finite number"),
        (SamplingSettings(steps=5000), "param 'steps' must be at most 1000",
         "--steps must be at most 1000"),
        (SamplingSettings(seed=-1), "param 'seed' must be >= 0", "--seed must be >= 0"),
    ],
)  # fmt: skip
def test_an_error_names_the_setting_as_the_client_spells_it(settings, engine, cli):
    with pytest.raises(UserError, match=engine):
        settings.check()
    with pytest.raises(UserError, match=cli):
        settings.check(name=option_spelling(spec_of(Sample)))


def test_images_per_prompt_times_prompts_is_bounded():
    n = limits.MAX_IMAGES // 10 + 1
    with pytest.raises(
        UserError, match=r"param 'n_per_prompt' \d+ x 10 prompts: .* over the limit"
    ):
        DEFAULT_SAMPLING.check({"n_per_prompt": n}, 10)
    DEFAULT_SAMPLING.check({"n_per_prompt": n})  # without the prompts' count: only n's own bound


def test_values_are_kept_as_given():
    """The cache's run keys hash these values: an integer guidance scale stays an integer."""
    s = SamplingSettings(cfg=4)
    assert type(s.check().cfg) is int
    assert s.with_batch_size(8) == SamplingSettings(cfg=4, batch_size=8)
