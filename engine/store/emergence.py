"""Where a training run's emergence is stored: the run's own cache file (not a checkpoint's,
since it spans all of the run's checkpoints), and reading the newest one back.

What is stored and how it is computed: engine.probe.emergence.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from engine.core.errors import UserError
from engine.probe.emergence import HeadEmergence, load_emergence, run_folder
from engine.store.cache import Store, default_cache_dir


def run_store(run: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Store:
    """The run's own cache file: <cache>/<run name>-history-<sha256(path)[:12]>.h5."""
    path = Path(run).resolve()
    ident = hashlib.sha256(str(path).encode()).hexdigest()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)[:48] or "run"
    folder = Path(cache_dir or default_cache_dir())
    if folder.exists() and not folder.is_dir():
        raise UserError(
            f"cache folder {str(folder)!r} is a file; give a folder with --cache (it is created)"
        )
    store = Store(folder / f"{name}-history-{ident[:12]}.h5")
    store.checkpoint_path = str(path)
    return store


def stored_emergence(run: str | os.PathLike, cache_dir=None) -> HeadEmergence:
    """The newest stored emergence of a run, or a UserError saying how to make it."""
    store = run_store(run_folder(run), cache_dir)
    e = load_emergence(store) if store.path.exists() else None
    if e is None:
        raise UserError(
            f"no emergence stored for {str(run)!r}; run `dit-workbench emergence {run}`"
        )
    return e
