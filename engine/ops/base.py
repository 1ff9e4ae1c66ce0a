"""One typed parameter object and one `run` per user-level operation.

An operation is a dataclass whose fields are its parameters, each declared once with `param()`
(default, bounds, choices, whether it is a path). The command line builds it from its options,
the engine's job kinds build it from a job's JSON params, and both call the same two methods:

    op = Ablate.from_params({"checkpoint": "runs/a", "sweep": "mask-head *.*"}, cwd)
    result = op.run(report)          # in the CLI's process, or in an engine worker

`from_params` coerces and checks every field (engine.ops.params.check_params), then calls the
operation's `check(cwd)` for what depends on several fields or on files. Both stay cheap and
torch-free: the engine runs them before queueing. `run` does the work, stores what it computed
and returns a JSON-able result; `summary(result)` is what a job record keeps of it.

Registering the class in engine.service.kinds makes it a job kind.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Self

from engine.ops.params import REQUIRED, Param, Reporter, check_params


def param(default: Any = REQUIRED, *, path: bool = False, choices: tuple = (), bound=None, help=""):
    """A dataclass field that is an operation parameter (its type comes from the annotation)."""
    meta = {"param": dict(path=path, choices=tuple(choices), bound=bound), "help": help}
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
    raise TypeError(
        f"operation parameters are str, int, float, bool or list[str]; got {annotation}"
    )


class Operation:
    """Base of every operation dataclass (subclasses are `@dataclass`es)."""

    kind: ClassVar[str]  # the job kind and the CLI command's name
    heavy: ClassVar[bool] = True  # needs the accelerator: the engine runs one at a time
    resumable: ClassVar[bool] = False  # resubmitting with resume=true continues the work
    help: ClassVar[str] = ""

    @classmethod
    def spec(cls) -> dict[str, Param]:
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
            out[f.name] = Param(_plain_type(hints[f.name]), default, **f.metadata["param"])
        return out

    @classmethod
    def from_params(cls, params: dict, cwd: str | None = None) -> Self:
        """The operation for a JSON-like dict (CLI strings are coerced), checked; or UserError."""
        op = cls(**check_params(cls.kind, cls.normalise(params, cwd), cls.spec(), cwd))
        op.check(cwd)
        return op

    @classmethod
    def normalise(cls, params: dict, cwd: str | None) -> dict:
        """Accept other clients' spellings of the params (override where there are some)."""
        return params

    def check(self, cwd: str | None) -> None:
        """Checks across fields or against files; may normalise fields in place. No torch."""

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def run(self, report: Reporter) -> dict:
        raise NotImplementedError

    def summary(self, result: dict) -> dict:
        """What a job record keeps of the result (default: all of it)."""
        return result


class NullReporter:
    """A Reporter that drops everything (library use, tests)."""

    def progress(self, fraction: float, phase: str | None = None, eta_s: float | None = None):
        pass

    def log(self, line: str) -> None:
        pass
