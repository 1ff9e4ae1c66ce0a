"""Run an engine operation in the CLI's own process, with a progress bar on a terminal.

Every model-running command is generated from its operation (workbench.opcli) and hands the
params to `run_op`; `dit-workbench jobs submit KIND -p name=value` sends the same parameters to the
engine daemon, which checks them with the same `from_params` and runs the same `run`.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

from engine.core.spec import option_spelling


class TerminalReporter:
    """A Reporter drawing one rich bar on stderr (silent when stderr is not a terminal);
    `log` lines go to stderr only with `verbose`."""

    def __init__(self, label: str, verbose: bool = False):
        self._label, self._verbose = label, verbose
        self._bar = self._task = None
        self._phase = None

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._bar.add_task(self._label, total=1.0)
            self._bar.start()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()

    def progress(self, fraction: float, phase: str | None = None, eta_s: float | None = None):
        if self._bar is not None:
            phase = phase or self._phase
            self._phase = phase
            desc = f"{self._label}: {phase}" if phase else self._label
            self._bar.update(self._task, completed=fraction, description=desc)

    def log(self, line: str) -> None:
        if self._verbose:
            Console(stderr=True).print(line, markup=False, highlight=False)


def build_op(op_cls, params: dict):
    """`op_cls.from_params(params)` against this directory, as the engine checks a job, with
    errors naming each parameter as the command line spells it (`--batch-size`, `CKPT`).

    Where the engine's default is its own (its cache folder), the command line's is the
    user's: a `cache` left out is $DIT_WORKBENCH_CACHE or ./cache."""
    spec = op_cls.spec()
    if "cache" in spec and params.get("cache") is None:
        from engine.store.cache import default_cache_dir

        params = {**params, "cache": str(default_cache_dir())}
    return op_cls.from_params(params, os.getcwd(), option_spelling(spec))


def run_op(op_cls, params: dict, label: str | None = None, verbose: bool = False) -> dict:
    """Check `params` as the engine would (UserError on bad input), run, return the result."""
    op = build_op(op_cls, params)
    with TerminalReporter(label or op_cls.kind, verbose) as report:
        return op.run(report)
