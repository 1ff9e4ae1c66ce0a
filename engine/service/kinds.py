"""Job kinds: what the engine can run, how their parameters are checked, how they report.

A kind runs in a worker process of its own (`engine.service.worker`), so cancelling a job is
terminating that process and frees its GPU memory. Most kinds are operations
(engine.ops.base.Operation): the engine checks a job's params with `Op.from_params` before
queueing (cheap, no torch) and the worker runs `Op(**params).run(report)`, the same object and
the same function the command line runs in-process. Adding one is one line in JOB_KINDS:

    "ablate": JobKind.of("engine.ops.ablate:Ablate"),

GET /kinds lists each kind with its parameters' declarations (`JobKind.describe`).
A kind may also be a bare function `(params, report) -> result dict` with a `validate(params,
cwd) -> params`. Targets may be callables or "module:attribute" strings; strings are imported
on first use so the engine does not load a kind's module just to list it.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.core.errors import UserError
from engine.core.limits import shown
from engine.core.spec import Param
from engine.ops.params import Reporter


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
    # The declared parameters (engine.core.spec), for GET /kinds; an operation's come with it.
    spec: Callable[[], dict[str, Param]] | None = None

    @classmethod
    def of(cls, op: str, help: str | None = None) -> JobKind:
        """The kind that runs operation class `op` ("module:Class"); flags come from the class."""
        op_cls = _resolve(op)

        def run(params: dict, report: Reporter) -> dict:
            o = op_cls(**params)
            return o.summary(o.run(report))

        def validate(params: dict, cwd: str | None) -> dict:
            return op_cls.from_params(params, cwd).params()

        return cls(run, validate, op_cls.heavy, op_cls.resumable, help or op_cls.help, op_cls.spec)

    def describe(self, name: str) -> dict:
        """What GET /kinds says of the kind: its flags and every parameter's declaration."""
        params = [p.describe() for p in self.spec().values()] if self.spec else []
        return {"name": name, "heavy": self.heavy, "resumable": self.resumable,
                "help": self.help, "params": params}  # fmt: skip

    def __call__(self, params: dict, report: Reporter) -> dict:
        return _resolve(self.run)(params, report)

    def check(self, params: dict, cwd: str | None = None) -> dict:
        if not isinstance(params, dict):  # before any kind's validation looks inside
            raise UserError(f"params must be a JSON object (got {shown(params)})")
        fn = _resolve(self.validate)
        return dict(params) if fn is None else fn(params, cwd)


JOB_KINDS: dict[str, JobKind] = {
    "selftest": JobKind.of("engine.service.selftest:Selftest"),
    "train": JobKind.of("engine.ops.train:Train"),
    "sample": JobKind.of("engine.ops.sample:Sample"),
    "evaluate": JobKind.of("engine.ops.evaluate:Evaluate"),
    "ablate": JobKind.of("engine.ops.ablate:Ablate"),
    "synopsis": JobKind.of("engine.ops.synopsis:Synopsis"),
    "screen": JobKind.of("engine.ops.screen:Screen"),
    "emergence": JobKind.of("engine.ops.emergence:Emergence"),
    "variance": JobKind.of("engine.ops.variance:Variance"),
    "render": JobKind.of("engine.ops.render:Render"),
}


def get_kind(name: str) -> JobKind:
    if not isinstance(name, str) or name not in JOB_KINDS:
        raise UserError(f"unknown job kind {name!r}; choose one of {', '.join(sorted(JOB_KINDS))}")
    return JOB_KINDS[name]


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
