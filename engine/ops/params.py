"""What operations share: the Reporter they report through, and cheap checks (checkpoint
names, caption lengths, cache folders, model sizes). Parameters are declared and checked by
engine.core.spec (re-exported here). Everything here is cheap and torch-free: the engine runs
it before a job is queued.
"""

from __future__ import annotations

import os
from typing import Protocol

from engine.core.errors import UserError
from engine.core.limits import shown
from engine.core.spec import (  # noqa: F401  (re-exported: what operations import)
    REQUIRED,
    Param,
    absolute,
    check_params,
    job_spelling,
)
from engine.text.categories import MAX_LENGTH, split_words


class Reporter(Protocol):
    """What a running job may tell the engine. Cancellation is process termination (the job
    sees SIGTERM as a BaseException, so `finally` blocks and staged folders clean up)."""

    def progress(self, fraction: float, phase: str | None = None, eta_s: float | None = None): ...

    def log(self, line: str) -> None: ...


def named_checkpoint(params: dict, cwd: str | None) -> dict:
    """A job's `checkpoint` may be a path (relative to the client's directory) or, as the
    workbench sends it, a name from GET /checkpoints: turn a name into its path."""
    if not isinstance(params, dict) or not isinstance(params.get("checkpoint"), str):
        return params
    value = params["checkpoint"]
    if os.path.exists(os.path.join(cwd or os.getcwd(), os.path.expanduser(value))):
        return params
    from engine.core import roots

    try:
        return {**params, "checkpoint": str(roots.resolve(value, "checkpoint"))}
    except roots.NotFound:
        where = ", ".join(map(str, roots.allowed()))
        raise UserError(
            f"checkpoint {value!r} not found: no such folder, nor a checkpoint of that name "
            f"under {where}; give a checkpoint or training run folder"
        ) from None


# --- cheap checks the probe and intervention kinds share ------------------------------------

# Every encoder needs at least one token per word, so a caption with more words than the
# encoders' MAX_LENGTH can never be encoded.
MAX_CAPTION_TOKENS = MAX_LENGTH


def check_caption_lengths(captions) -> None:
    """A UserError for the first caption with more words than the text encoders take."""
    for text in captions:
        n = len(split_words(text))
        if n > MAX_CAPTION_TOKENS:
            raise UserError(
                f"caption {shown(text)} has {n} words, more than the {MAX_CAPTION_TOKENS} tokens the "
                "text encoder takes; shorten it"
            )


def check_cache_dir(path: str | None, spelled=job_spelling) -> None:
    """A job's `cache` must be a folder (or not exist yet): a file there fails only later."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{spelled('cache')} {path!r} is a file; give a cache folder")


def model_size(checkpoint_dir: str | os.PathLike) -> tuple[int, int]:
    """(layers, heads) from transformer/config.json, without loading the model."""
    from engine.core.fs import read_json
    from engine.core.limits import check_model_config

    path = os.path.join(checkpoint_dir, "transformer", "config.json")
    cfg = check_model_config(read_json(path, "transformer config"), path)
    return cfg["num_layers"], cfg["num_attention_heads"]
