"""Numbers and sizes a user may give, checked in one place by the CLI and the engine alike.

Every number that reaches a model, the cache or the job records passes `Bound.check`: it must
be finite (no NaN or infinity: JSON cannot carry them and a NaN guidance scale gives black
images), of the right kind (an integer where one is stored), and inside the bound named here.
Sizes that decide how much memory is allocated (model config, images, request bodies) are
checked against these bounds *before* anything is allocated, and the error names the bound.

Importable without torch: the engine checks job parameters with it before queueing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.core.errors import UserError

INT64_MAX = 2**63 - 1

# --- resource bounds (what docs/reliability.md lists) ---------------------------------------

MAX_IMAGES = 1_000_000  # images one sample run writes (prompts x n); streamed to disk
MAX_SAMPLER_STEPS = 1000  # the noise schedule has 1000 training steps: more cannot help
MAX_BATCH = 4096  # images per forward pass
MAX_SEED = 2**62  # seeds are stored as int64; seed + image index must still fit
MAX_CFG = 100.0  # classifier-free guidance scale (engine.core.sampling has the default)
MAX_RENDER_SIZE = 2048  # dataset render --size, pixels per side
MAX_RENDER_SCENES = 10_000_000  # dataset render --n
MAX_EVAL_PIXELS = 4096 * 4096  # an image `evaluate` decodes (width x height, from its header)
MAX_EVAL_FILE_BYTES = 4 * MAX_EVAL_PIXELS  # an image file `evaluate` reads
EVAL_CHUNK = 64  # images `evaluate` holds decoded at once
MAX_METADATA_BYTES = 256 * 2**20  # metadata.jsonl / prompts files read whole
MAX_LAYERS = 256  # transformer config.json num_layers
MAX_HEADS = 256  # num_attention_heads
MAX_HEAD_DIM = 1024  # attention_head_dim
MAX_WIDTH = 16384  # heads x head dim
MAX_BODY_BYTES = 1 * 2**20  # an engine request body
MAX_JSON_DEPTH = 32  # nesting of an engine request body
MAX_JOB_ID = INT64_MAX  # SQLite's INTEGER PRIMARY KEY
MAX_ECHO = 80  # characters of user input quoted back in an error message


@dataclass(frozen=True)
class Bound:
    """A closed interval [lo, hi] (None: unbounded on that side) for a number.

    `integer`: the value must be a whole number (and fits int64, as the cache stores it);
    `why`: said after the bound in the error, e.g. "the cache stores seeds as int64"."""

    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    why: str = ""

    def check(self, name: str, value):
        """`value` as an int or float inside the bound; UserError naming `name` otherwise."""
        return check_number(name, value, self.lo, self.hi, integer=self.integer, why=self.why)


def check_number(name: str, value, lo=None, hi=None, *, integer: bool = False, why: str = ""):
    """The one number check: finite, integral if asked (and within int64), in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{name} must be a number (got {shown(value)})")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{name} must be a finite number (got {value})")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise UserError(f"{name} must be a whole number (got {value})")
            value = int(value)
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise UserError(f"{name} {shown(value)} does not fit a 64-bit integer")
    if lo is not None and value < lo:
        rng = "positive" if integer and lo == 1 else f">= {_num(lo)}"
    elif hi is not None and value > hi:
        rng = f"at most {_num(hi)}"
    else:
        return value
    raise UserError(f"{name} must be {rng} (got {shown(value)})" + (f"; {why}" if why else ""))


def check_count(name: str, value: int, limit: int, what: str) -> int:
    """A count derived from several inputs (prompts x n, layers...) within its bound."""
    if value > limit:
        raise UserError(f"{name}: {value:,} {what} is over the limit of {limit:,}")
    return value


def _num(x) -> str:
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return f"{x:,}" if isinstance(x, int) and abs(x) >= 10_000 else str(x)


def shown(value, limit: int = MAX_ECHO) -> str:
    """`repr(value)` cut to `limit` characters: user input quoted in an error stays short."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits>"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 3]}... ({len(text):,} characters)"


# --- the bounds of the parameters that several commands and job kinds share -----------------

SEED = Bound(0, MAX_SEED, integer=True, why="seeds are stored as 64-bit integers")
CFG = Bound(0.0, MAX_CFG)
SAMPLER_STEPS = Bound(1, MAX_SAMPLER_STEPS, integer=True, why="the schedule has 1000 steps")
BATCH = Bound(1, MAX_BATCH, integer=True)
IMAGES_PER_PROMPT = Bound(1, MAX_IMAGES, integer=True)
POSITIVE = Bound(1, None, integer=True)
NON_NEGATIVE = Bound(0, None, integer=True)
RESAMPLES = Bound(1, 1_000_000, integer=True)


# --- model sizes: checked from config.json before a model is built --------------------------

# key: (largest value, what it is). Pipeline-imported PixArt-alpha (28 layers, 16 x 72, T5-XXL
# 4096-d captions, 128-latent) is well inside; a config with 100,000 layers is not.
MODEL_SIZES = {
    "num_layers": (MAX_LAYERS, "layers"),
    "num_attention_heads": (MAX_HEADS, "attention heads"),
    "attention_head_dim": (MAX_HEAD_DIM, "head width"),
    "caption_channels": (MAX_WIDTH, "caption width"),
    "sample_size": (1024, "latent side"),
    "in_channels": (64, "input channels"),
    "patch_size": (64, "patch size"),
}


def check_model_config(cfg, where) -> dict:
    """A transformer config.json's content, refused (one line naming the file and the bound)
    when it is not a mapping or its sizes are not integers within MODEL_SIZES, or its width
    (heads x head width) is over MAX_WIDTH: checked before anything is allocated."""
    if not isinstance(cfg, dict):
        raise UserError(f"{where} is not a JSON object; the checkpoint is damaged")
    for key, (hi, what) in MODEL_SIZES.items():
        if key not in cfg and key not in ("num_layers", "num_attention_heads"):
            continue
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise UserError(
                f"{where}: {key} is {shown(v)}; {what} must be an integer from 1 to {hi:,} "
                "(the bound on models this tool loads)"
            )
    width = cfg["num_attention_heads"] * cfg.get("attention_head_dim", 1)
    if width > MAX_WIDTH:
        raise UserError(
            f"{where}: width {width:,} (heads x head width) is over the limit of {MAX_WIDTH:,}"
        )
    return cfg
