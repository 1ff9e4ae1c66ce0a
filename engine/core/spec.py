"""Declared parameters: one `param()` per parameter, read by every client.

A spec is a dataclass whose fields are declared with `param(default, bound=..., help=...)`:
the operations (engine.ops), the training settings (engine.train.config) and a few command
line settings. From one declaration come the engine's checks (`check_params`: coercion of a
command line's strings, bounds, choices, paths made absolute), the command line's options
(workbench.opcli), `GET /kinds` and the parameter tables of docs/engine-api.md.

Errors name a parameter as its client spells it: `spelled(name)` is `param 'batch_size'` for
an engine job (`job_spelling`) and `--batch-size` on the command line (`Param.option`).
Everything here is cheap and torch-free: the engine runs it before a job is queued.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.core.errors import UserError
from engine.core.limits import Bound, shown

REQUIRED: Any = object()

Spelling = Callable[[str], str]


def job_spelling(name: str) -> str:
    """How an engine job's error names a parameter."""
    return f"param {name!r}"


@dataclass(frozen=True)
class Param:
    """One parameter: its type (int, float, str, bool, list), default (REQUIRED if none),
    checks, help, and how a command line spells it."""

    type: type
    default: Any = REQUIRED
    path: bool = False  # made absolute against the submitting client's directory
    choices: tuple = field(default=())
    # Numbers: always finite and (ints) within int64; `bound` narrows that (engine.core.limits).
    bound: Bound | None = None
    help: str = ""
    name: str = ""
    # The command line: an option named `flags` (default --batch-size for batch_size), or with
    # `argument` a positional argument of that name (CKPT); `cli=False`: jobs only.
    flags: tuple[str, ...] = ()
    argument: str = ""
    cli: bool = True
    metavar: str | None = None
    # Other names a job's params may use for it (`ckpt` for `checkpoint`).
    aliases: tuple[str, ...] = ()

    @property
    def option(self) -> str:
        """The command line's name for it: `--batch-size`, `--intervention`, `CKPT`."""
        if self.argument:
            return self.argument
        return self.flags[0] if self.flags else "--" + self.name.replace("_", "-")

    def describe(self) -> dict:
        """The declaration as JSON (GET /kinds)."""
        b = self.bound
        return {
            "name": self.name,
            "type": self.type.__name__,
            "required": self.default is REQUIRED,
            "default": None if self.default is REQUIRED else self.default,
            "bound": None if b is None else {"min": b.lo, "max": b.hi, "integer": b.integer},
            "choices": list(self.choices),
            "help": self.help,
            "path": self.path,
            "cli": self.option if self.cli else None,
            "argument": bool(self.argument),
            "aliases": list(self.aliases),
        }


def param(default: Any = REQUIRED, *, help: str = "", **declared):
    """A dataclass field that is a parameter (its type comes from the annotation); `declared`
    are Param's other fields (path, choices, bound, flags, argument, cli, metavar, aliases)."""
    meta = {"param": {"help": help, **declared}}
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_PLAIN = {str: str, int: int, float: float, bool: bool, list: list}


def _plain_type(annotation) -> type:
    """`int`, `str | None`, `list[str] | None` -> int, str, list (what check_params coerces to)."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _plain_type(args[0])
    if origin is list or annotation is list:
        return list
    if annotation in _PLAIN:
        return annotation
    raise TypeError(f"parameters are str, int, float, bool or list[str]; got {annotation}")


def spec_of(cls) -> dict[str, Param]:
    """A dataclass's declared parameters, in field order."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if "param" not in f.metadata:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        declared = f.metadata["param"]
        out[f.name] = Param(_plain_type(hints[f.name]), default, name=f.name, **declared)
    return out


def option_spelling(spec: dict[str, Param]) -> Spelling:
    """How a command line's error names a parameter: the option the user typed."""

    def spelled(name: str) -> str:
        p = spec.get(name)
        return p.option if p is not None and p.cli else job_spelling(name)

    return spelled


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _coerce(label: str, value, p: Param):
    t = p.type
    if value is None:
        if p.default is None:
            return None
        raise UserError(f"{label} may not be null")
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
            return float(value)  # finiteness and range: check_value, by engine.core.limits
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
    raise UserError(f"{label} must be {what.get(t, 'a string')} (got {shown(value)})")


_ANY = Bound()


def absolute(path: str, cwd: str | None) -> str:
    """A path as the client meant it: `~` expanded, relative to the client's directory."""
    p = os.path.expanduser(path)
    if not os.path.isabs(p):
        p = os.path.join(cwd or os.getcwd(), p)
    return os.path.normpath(p)


def check_value(label: str, v, p: Param):
    """A value of the declared type against its bound and choices; UserError naming `label`."""
    if p.type in (int, float) and v is not None:
        v = (p.bound or _ANY).check(label, v)
    if p.choices and v not in p.choices:
        raise UserError(f"{label} is {shown(v)}; choose one of {', '.join(map(str, p.choices))}")
    return v


def unalias(params, spec: dict[str, Param]):
    """A job's params with declared aliases under their parameter's name (`ckpt` ->
    `checkpoint`); an alias beside its parameter is left, and refused as unknown."""
    if not isinstance(params, dict):
        return params
    params = dict(params)
    for name, p in spec.items():
        for alias in p.aliases:
            if alias in params and name not in params:
                params[name] = params.pop(alias)
    return params


def check_params(
    kind: str,
    params: dict,
    spec: dict[str, Param],
    cwd: str | None,
    spelled: Spelling = job_spelling,
) -> dict:
    """Params with defaults filled in and types coerced (CLI `--param k=v` sends strings);
    unknown or missing names raise UserError naming the allowed ones."""
    if not isinstance(params, dict):
        raise UserError(f"params for {kind!r} must be a JSON object")
    params = unalias(params, spec)
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise UserError(
            f"unknown param {shown(unknown[0])} for job kind {kind!r}; allowed: {', '.join(spec)}"
        )
    out = {}
    for name, p in spec.items():
        if name not in params:
            if p.default is REQUIRED:
                raise UserError(f"job kind {kind!r} needs {spelled(name)}")
            out[name] = p.default
            continue
        v = check_value(spelled(name), _coerce(spelled(name), params[name], p), p)
        if p.path and v is not None:
            if not v.strip():
                raise UserError(f"{spelled(name)} is an empty path")
            v = absolute(v, cwd)
        out[name] = v
    return out
