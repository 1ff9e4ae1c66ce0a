"""Run an engine operation in the CLI's own process, with a progress bar on a terminal.

Every model-running command builds its operation (engine.ops) from its options and hands it to
`run_op`; `dit-workbench jobs submit KIND -p name=value` sends the same parameters to the
engine daemon, which checks them with the same `from_params` and runs the same `run`.
"""

from __future__ import annotations

import os
import re
import sys

from rich.console import Console

from engine.core.errors import UserError


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


_PARAM = re.compile(r"\bparam '([A-Za-z_][A-Za-z0-9_]*)'")


def build_op(op_cls, params: dict, options: dict[str, str] | None = None):
    """`op_cls.from_params(params)` against this directory, as the engine checks a job.

    The checks and messages are the engine's, with one difference: where the engine names a
    parameter `param 'batch_size'`, a command line user typed `--batch-size` (or
    `options[name]` where the option is spelled otherwise), so that is what the error says."""
    try:
        return op_cls.from_params(params, os.getcwd())
    except UserError as e:
        spec = op_cls.spec()

        def spelled(m: re.Match) -> str:
            if m[1] not in spec:
                return m[0]
            return (options or {}).get(m[1]) or "--" + m[1].replace("_", "-")

        raise UserError(_PARAM.sub(spelled, str(e))) from None


def run_op(
    op_cls,
    params: dict,
    label: str | None = None,
    verbose: bool = False,
    options: dict[str, str] | None = None,
) -> dict:
    """Check `params` as the engine would (UserError on bad input), run, return the result."""
    op = build_op(op_cls, params, options)
    with TerminalReporter(label or op_cls.kind, verbose) as report:
        return op.run(report)
