"""Typer commands generated from declared parameters (engine.core.spec).

An operation's fields (engine.ops) are its command's arguments and options: name, type,
default, help, and the command line's spelling (`--intervention`/`-i` for `interventions`,
`CKPT` for `checkpoint`) come from the one `param()` each field is declared with. The command
is a hand-written function that shows the result; its own parameters are the options that only
shape the output (`--format`, `--out`, ...):

    @op_command(Variance)
    def variance(params: dict, format: Format = FORMAT, out: str | None = OUT):
        \"\"\"Share of the text embedding's variance ...\"\"\"
        result = run_op(Variance, params)
        ...

`op_command` gives the function a signature holding a `typer.Option`/`typer.Argument` per
declared field (built here, from the spec) followed by the function's own options; when the
command runs, the fields' values become the `params` dict, checked by `run_op` as the engine
checks a job.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape

from engine.core.spec import REQUIRED, Param


def cli_name(p: Param) -> str:
    """The Python name of a parameter in the command's signature (an argument's is its
    metavar in lower case: CKPT -> ckpt, which typer shows as CKPT)."""
    return p.argument.lower() if p.argument else p.name


def _annotation(p: Param):
    item = Path if p.path else str
    if p.type is list:
        return list[item]
    base = item if p.type is str else p.type
    return base | None if p.default is None else base


def typer_info(p: Param):
    """The typer.Option or typer.Argument that `p` declares."""
    default = ... if p.default is REQUIRED else p.default
    if isinstance(default, list):
        default = default or None  # typer's list options take None for "none given"
    kw = {"help": escape(p.help), "metavar": p.metavar}
    if p.argument:
        return typer.Argument(default, show_default=p.default is not REQUIRED, **kw)
    return typer.Option(default, *(p.flags or [p.option]), **kw)


def _plain(value):
    """A typer value as a job param: paths as strings, an empty repeatable option as None."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [str(v) for v in value] or None
    return value


def spec_command(spec: dict[str, Param], handler: Callable) -> Callable:
    """A typer command: the declared parameters (those the command line offers), then the
    handler's own keyword parameters; calls handler(params, **own)."""
    shown = {name: p for name, p in spec.items() if p.cli}
    own = list(inspect.signature(handler).parameters.values())[1:]
    hints = typing.get_type_hints(handler)
    taken = {cli_name(p) for p in shown.values()}
    clash = taken & {q.name for q in own}
    if clash:
        raise TypeError(f"{handler.__name__}: {clash} is both a parameter and an output option")
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(cli_name(p), kw, default=typer_info(p), annotation=_annotation(p))
        for p in shown.values()
    ]
    params += [q.replace(kind=kw, annotation=hints.get(q.name, q.annotation)) for q in own]

    @functools.wraps(handler)
    def command(**values):
        job = {name: _plain(values.pop(cli_name(p))) for name, p in shown.items()}
        return handler(job, **values)

    del command.__wrapped__  # typer reads the signature below, not the handler's
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {q.name: q.annotation for q in params}
    return command


def op_command(op_cls) -> Callable[[Callable], Callable]:
    """Decorator: the command of operation `op_cls` (see the module docstring)."""

    def wrap(handler: Callable) -> Callable:
        command = spec_command(op_cls.spec(), handler)
        command.operation = op_cls  # what tests/test_ops.py checks the options against
        return command

    return wrap
