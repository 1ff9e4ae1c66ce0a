"""Typed job parameters: how an operation's parameters are declared, coerced and checked.

`check_params(kind, params, {"name": Param(int, default), ...}, cwd)` fills defaults, coerces
the strings a command line sends, bounds numbers (engine.core.limits) and makes paths absolute
against the submitting client's directory. Everything here is cheap and torch-free: the engine
runs it before a job is queued.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.core.errors import UserError
from engine.core.limits import Bound, shown
from engine.text.categories import MAX_LENGTH, split_words


class Reporter(Protocol):
    """What a running job may tell the engine. Cancellation is process termination (the job
    sees SIGTERM as a BaseException, so `finally` blocks and staged folders clean up)."""

    def progress(self, fraction: float, phase: str | None = None, eta_s: float | None = None): ...

    def log(self, line: str) -> None: ...


# --- parameter checking shared by the kinds -------------------------------------------------

REQUIRED: Any = object()


@dataclass(frozen=True)
class Param:
    """One parameter: its type (int, float, str, bool, list), default (REQUIRED if none) and
    whether it is a path (made absolute against the submitting client's directory)."""

    type: type
    default: Any = REQUIRED
    path: bool = False
    choices: tuple = field(default=())
    # Numbers: always finite and (ints) within int64; `bound` narrows that (engine.core.limits).
    bound: Bound | None = None


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _coerce(name: str, value, p: Param):
    t = p.type
    if value is None:
        if p.default is None:
            return None
        raise UserError(f"param {name!r} may not be null")
    try:
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if t is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if t is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)  # finiteness and range: check_params, by engine.core.limits
        if t is list:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError
            return list(value)
        if t is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"unsupported param type {t}")
    what = {int: "an integer", float: "a number", bool: "true or false", list: "a list of strings"}
    raise UserError(f"param {name!r} must be {what.get(t, 'a string')} (got {shown(value)})")


_ANY = Bound()


def absolute(path: str, cwd: str | None) -> str:
    """A path as the client meant it: `~` expanded, relative to the client's directory."""
    p = os.path.expanduser(path)
    if not os.path.isabs(p):
        p = os.path.join(cwd or os.getcwd(), p)
    return os.path.normpath(p)


def check_params(kind: str, params: dict, spec: dict[str, Param], cwd: str | None) -> dict:
    """Params with defaults filled in and types coerced (CLI `--param k=v` sends strings);
    unknown or missing names raise UserError naming the allowed ones."""
    if not isinstance(params, dict):
        raise UserError(f"params for {kind!r} must be a JSON object")
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise UserError(
            f"unknown param {shown(unknown[0])} for job kind {kind!r}; allowed: {', '.join(spec)}"
        )
    out = {}
    for name, p in spec.items():
        if name not in params:
            if p.default is REQUIRED:
                raise UserError(f"job kind {kind!r} needs param {name!r}")
            out[name] = p.default
            continue
        v = _coerce(name, params[name], p)
        if p.type in (int, float) and v is not None:
            v = (p.bound or _ANY).check(f"param {name!r}", v)
        if p.choices and v not in p.choices:
            raise UserError(
                f"param {name!r} is {shown(v)}; choose one of {', '.join(map(str, p.choices))}"
            )
        if p.path and v is not None:
            if not v.strip():
                raise UserError(f"param {name!r} is an empty path")
            v = absolute(v, cwd)
        out[name] = v
    return out


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


def check_cache_dir(path: str | None) -> None:
    """A job's `cache` must be a folder (or not exist yet): a file there fails only later."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"param 'cache' {path!r} is a file; give a cache folder")


def model_size(checkpoint_dir: str | os.PathLike) -> tuple[int, int]:
    """(layers, heads) from transformer/config.json, without loading the model."""
    from engine.core.fs import read_json
    from engine.core.limits import check_model_config

    path = os.path.join(checkpoint_dir, "transformer", "config.json")
    cfg = check_model_config(read_json(path, "transformer config"), path)
    return cfg["num_layers"], cfg["num_attention_heads"]
