"""The folders the engine may read on a request's behalf: the cache dir and checkpoint roots.

Table and checkpoint requests name runs and checkpoints; `resolve` turns such a name into a
path inside one of these folders and refuses anything else (`..`, absolute paths elsewhere,
symlinks leading out), so a request cannot make the engine read arbitrary files.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.core.errors import UserError
from engine.core.settings import settings

_cache: Path | None = None  # None until configured: the settings' cache folder
_roots: list[Path] = []


def configure(cache: str | os.PathLike, roots: list[str | os.PathLike] | None = None) -> None:
    """The folders of this engine; `roots` None: the default ones (engine.core.settings)."""
    global _cache, _roots
    _cache = Path(cache).resolve()
    _roots = (
        [Path(r).resolve() for r in roots] if roots is not None else settings().checkpoint_roots
    )


def cache_dir() -> Path:
    return _cache if _cache is not None else settings().cache_dir.resolve()


def checkpoint_roots() -> list[Path]:
    return list(_roots)


def allowed() -> list[Path]:
    return [cache_dir(), *_roots]


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


class NotFound(UserError):
    """No allowed folder holds the path (as opposed to one that escapes them)."""


def resolve(value: str, what: str = "path") -> Path:
    """An existing path named by a request: relative names are looked up under each allowed
    folder in turn (cache first); absolute ones must lie inside one. Raises UserError."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{what} is empty")
    if "\x00" in value or ".." in Path(value).parts:
        raise UserError(f"{what} {value!r} may not contain '..'")
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [root / p for root in allowed()]
    escaped = False
    for c in candidates:
        real = c.resolve()
        if not any(_inside(real, r) for r in allowed()):
            escaped = escaped or c.exists()
            continue
        if real.exists():
            return real
    if escaped:
        raise UserError(f"{what} {value!r} leads outside the engine's folders (a symlink?)")
    if p.is_absolute() and not any(_inside(p.resolve(), r) for r in allowed()):
        raise NotFound(
            f"{what} {value!r} is outside the engine's folders "
            f"({', '.join(map(str, allowed()))}); start the engine with --checkpoints DIR"
        )
    raise NotFound(f"{what} {value!r} not found under {', '.join(map(str, allowed()))}")
