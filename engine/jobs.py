"""Job kinds: what the engine can run, how their parameters are checked, how they report.

A kind is a function `(params, report) -> result dict` run in a worker process of its own
(`engine.worker`), so cancelling a job is terminating that process and frees its GPU memory.
Its `validate` runs in the engine before the job is queued and must stay cheap: no torch, no
model loading. Heavy modules are imported inside the run function.

Adding a kind is one line in JOB_KINDS, e.g.

    "synopsis": JobKind(
        "engine.probe.jobs:run_synopsis_job",
        "engine.probe.jobs:validate_synopsis",
        resumable=True,
        help="sample with attention capture, evaluate, store the synopsis (dit-workbench synopsis)",
    ),
    "screen": JobKind("engine.probe.jobs:run_screen", "engine.probe.jobs:validate_screen"),

Targets may be callables or "module:attribute" strings; strings are imported on first use so
the engine process does not load a kind's dependencies just to list it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import UserError
from engine.limits import Bound, shown


class Reporter(Protocol):
    """What a running job may tell the engine. Cancellation is process termination (the job
    sees SIGTERM as a BaseException, so `finally` blocks and staged folders clean up)."""

    def progress(self, fraction: float, phase: str | None = None, eta_s: float | None = None): ...

    def log(self, line: str) -> None: ...


def _resolve(target):
    if callable(target) or target is None:
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class JobKind:
    run: Callable[[dict, Reporter], dict] | str
    # (params, cwd) -> normalised params; raises UserError with a one-line message.
    validate: Callable[[dict, str | None], dict] | str | None = None
    heavy: bool = True  # needs the accelerator: runs one at a time (by default)
    resumable: bool = False  # re-submitting with params["resume"] = True continues the work
    help: str = ""

    def __call__(self, params: dict, report: Reporter) -> dict:
        return _resolve(self.run)(params, report)

    def check(self, params: dict, cwd: str | None = None) -> dict:
        if not isinstance(params, dict):  # before any kind's validation looks inside
            raise UserError(f"params must be a JSON object (got {shown(params)})")
        fn = _resolve(self.validate)
        return dict(params) if fn is None else fn(params, cwd)


JOB_KINDS: dict[str, JobKind] = {
    "selftest": JobKind(
        "engine.job_kinds:run_selftest",
        "engine.job_kinds:validate_selftest",
        heavy=True,
        resumable=True,
        help="sleep in steps reporting progress: checks the engine without a GPU",
    ),
    "train": JobKind(
        "engine.job_kinds:run_train",
        "engine.job_kinds:validate_train",
        heavy=True,
        resumable=True,
        help="train a DiT (parameters: dit-workbench train's options)",
    ),
    "sample": JobKind(
        "engine.job_kinds:run_sample",
        "engine.job_kinds:validate_sample",
        heavy=True,
        help="sample a checkpoint into an image folder",
    ),
    "evaluate": JobKind(
        "engine.job_kinds:run_evaluate",
        "engine.job_kinds:validate_evaluate",
        heavy=False,
        help="score an image folder against its prompts (CPU)",
    ),
    "ablate": JobKind(
        "engine.intervene.jobs:run_ablate",
        "engine.intervene.jobs:validate_ablate",
        help="interventions or a head sweep against the cached baseline (dit-workbench ablate)",
    ),
    "synopsis": JobKind(
        "engine.probe.jobs:run_synopsis_job",
        "engine.probe.jobs:validate_synopsis",
        resumable=True,
        help="sample with attention capture, evaluate, store the synopsis (dit-workbench synopsis)",
    ),
    "screen": JobKind(
        "engine.probe.screening:run_screen",
        "engine.probe.screening:validate_screen",
        heavy=False,
        help="weight-space screening of every head x relation (dit-workbench screen)",
    ),
    "emergence": JobKind(
        "engine.emergence:run_emergence",
        "engine.emergence:validate_emergence",
        heavy=False,
        help="screen every kept checkpoint of a training run (dit-workbench emergence)",
    ),
    "variance": JobKind(
        "engine.intervene.jobs:run_variance_job",
        "engine.intervene.jobs:validate_variance",
        heavy=False,
        help="text-encoder variance decomposition (dit-workbench variance)",
    ),
}


def get_kind(name: str) -> JobKind:
    if not isinstance(name, str) or name not in JOB_KINDS:
        raise UserError(f"unknown job kind {name!r}; choose one of {', '.join(sorted(JOB_KINDS))}")
    return JOB_KINDS[name]


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
    # Numbers: always finite and (ints) within int64; `bound` narrows that (engine.limits).
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
            return float(value)  # finiteness and range: check_params, by engine.limits
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


# --- the worker side of reporting -----------------------------------------------------------


class LineReporter:
    """Reporter that writes JSON lines to the engine (progress) and text lines to the job log.

    Progress is throttled (at most every `every` s, but phase changes and completion always go
    through) so a chatty job does not flood the engine. With no `eta_s`, the ETA is
    extrapolated from the rate since the first report."""

    def __init__(self, send: Callable[[dict], None], log_file, every: float = 0.25):
        self._send, self._log, self._every = send, log_file, every
        self._last_t, self._phase, self._anchor = 0.0, None, None

    def progress(self, fraction: float, phase: str | None = None, eta_s: float | None = None):
        now = time.monotonic()
        fraction = min(max(float(fraction), 0.0), 1.0)
        phase = phase if phase is not None else self._phase
        if self._anchor is None:
            self._anchor = (now, fraction)
        if eta_s is None:
            t0, f0 = self._anchor
            if fraction - f0 > 0.005 and now > t0:
                eta_s = (1.0 - fraction) * (now - t0) / (fraction - f0)
        if phase != self._phase:
            self.log(f"phase: {phase}")
        elif now - self._last_t < self._every and fraction < 1.0:
            return
        self._phase, self._last_t = phase, now
        self._send({"type": "progress", "fraction": fraction, "phase": phase, "eta_s": eta_s})

    def log(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        for part in str(line).splitlines() or [""]:
            self._log.write(f"{stamp} {part}\n")
        self._log.flush()


def encode_message(obj: dict) -> str:
    return json.dumps(obj, default=str) + "\n"


def named_checkpoint(params: dict, cwd: str | None) -> dict:
    """A job's `checkpoint` may be a path (relative to the client's directory) or, as the
    workbench sends it, a name from GET /checkpoints: turn a name into its path."""
    if not isinstance(params, dict) or not isinstance(params.get("checkpoint"), str):
        return params
    value = params["checkpoint"]
    if os.path.exists(os.path.join(cwd or os.getcwd(), os.path.expanduser(value))):
        return params
    from engine import roots

    return {**params, "checkpoint": str(roots.resolve(value, "checkpoint"))}


# --- cheap checks the probe and intervention kinds share ------------------------------------

# engine.text.MAX_LENGTH and the word split of engine.text.categories, spelled out here because
# importing engine.text loads torch, which validation must not. Every encoder needs at least
# one token per word, so a caption with more words than this can never be encoded.
MAX_CAPTION_TOKENS = 20
_WORD = re.compile(r"[a-z0-9]+", flags=re.IGNORECASE | re.ASCII)


def check_caption_lengths(captions) -> None:
    """A UserError for the first caption with more words than the text encoders take."""
    for text in captions:
        n = len(_WORD.findall(text))
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
    from engine.fs import read_json
    from engine.limits import check_model_config

    path = os.path.join(checkpoint_dir, "transformer", "config.json")
    cfg = check_model_config(read_json(path, "transformer config"), path)
    return cfg["num_layers"], cfg["num_attention_heads"]
