"""One typed parameter object and one `run` per user-level operation.

An operation is a dataclass whose fields are its parameters, each declared once with `param()`
(default, bounds, choices, whether it is a path, help, how the command line spells it;
engine.core.spec). The command line's command is generated from it (workbench.opcli), the
engine's job kinds build it from a job's JSON params, and both call the same two methods:

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
from typing import ClassVar, Self

from engine.core.spec import (  # noqa: F401  (param: what every operation module imports)
    Param,
    Spelling,
    check_params,
    job_spelling,
    param,
    spec_of,
    unalias,
)
from engine.ops.params import Reporter


class Operation:
    """Base of every operation dataclass (subclasses are `@dataclass`es)."""

    kind: ClassVar[str]  # the job kind and the CLI command's name
    heavy: ClassVar[bool] = True  # needs the accelerator: the engine runs one at a time
    resumable: ClassVar[bool] = False  # resubmitting with resume=true continues the work
    help: ClassVar[str] = ""

    # How errors name a parameter: `param 'x'` for a job; from_params sets the client's.
    spelled: ClassVar[Spelling] = staticmethod(job_spelling)

    @classmethod
    def spec(cls) -> dict[str, Param]:
        return spec_of(cls)

    @classmethod
    def from_params(
        cls, params: dict, cwd: str | None = None, spelled: Spelling = job_spelling
    ) -> Self:
        """The operation for a JSON-like dict (CLI strings are coerced), checked; or UserError.
        `spelled(name)` is how the client names a parameter (the command line: `--batch-size`)."""
        spec = cls.spec()
        params = cls.normalise(unalias(params, spec), cwd)
        checked = check_params(cls.kind, params, spec, cwd, spelled)
        op = cls(**checked)
        op.spelled = spelled
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
