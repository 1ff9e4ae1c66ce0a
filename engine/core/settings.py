"""The workbench's settings from the environment and the working folder, read in one place.

Every command, the engine daemon and the app take their defaults from `settings()`, so the same
variable means the same thing everywhere:

- `DIT_WORKBENCH_CACHE`: the cache folder (default `./cache`);
- `DIT_WORKBENCH_ENGINE_IDLE_EXIT`: seconds an idle engine waits before it exits (0: never;
  default 600);
- `WORLD_SIZE`, `RANK`: set by torchrun/accelerate for distributed training (default 1 and 0);
- the checkpoint roots the engine may read: `./checkpoints` and `./runs`, those that exist.

A variable set to an empty (or blank) value counts as unset: `DIT_WORKBENCH_CACHE= cmd` uses the
default rather than the current folder. Values are read when asked for, not at import, so a test
or a shell that changes the environment is seen. Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import UserError

CACHE_ENV = "DIT_WORKBENCH_CACHE"
IDLE_EXIT_ENV = "DIT_WORKBENCH_ENGINE_IDLE_EXIT"
DEFAULT_CACHE = "cache"
IDLE_EXIT_S = 600.0
CHECKPOINT_ROOTS = ("checkpoints", "runs")


@dataclass(frozen=True)
class Settings:
    environ: Mapping[str, str] = field(repr=False)  # never printed: it may hold secrets

    def get(self, name: str) -> str | None:
        """The variable's value, None when it is unset or blank."""
        value = self.environ.get(name)
        return value if value is not None and value.strip() else None

    @property
    def cache_dir(self) -> Path:
        return Path(self.get(CACHE_ENV) or DEFAULT_CACHE)

    @property
    def idle_exit_s(self) -> float:
        raw = self.get(IDLE_EXIT_ENV)
        if raw is None:
            return IDLE_EXIT_S
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"{IDLE_EXIT_ENV}={raw!r} is not a number of seconds") from None
        if not value >= 0:
            raise UserError(f"{IDLE_EXIT_ENV} must be 0 (never) or a number of seconds")
        return value

    @property
    def world_size(self) -> int:
        return self._int("WORLD_SIZE", 1)

    @property
    def rank(self) -> int:
        return self._int("RANK", 0)

    @property
    def checkpoint_roots(self) -> list[Path]:
        """./checkpoints and ./runs, those that exist, resolved."""
        return [p.resolve() for p in map(Path, CHECKPOINT_ROOTS) if p.is_dir()]

    def _int(self, name: str, default: int) -> int:
        raw = self.get(name)
        try:
            return default if raw is None else int(raw)
        except ValueError:
            raise UserError(f"{name}={raw!r} is not an integer") from None


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of this process (`environ`: another environment, for a child or a test)."""
    return Settings(os.environ if environ is None else environ)
