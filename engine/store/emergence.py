"""Where a training run's emergence is stored: the run's own cache file (not a checkpoint's,
since it spans all of the run's checkpoints).

What is stored, how it is computed and read back: the probe layer's emergence module.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from engine.store.cache import Store, cache_folder


def run_store(run: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Store:
    """The run's own cache file: <cache>/<run name>-history-<sha256(path)[:12]>.h5."""
    path = Path(run).resolve()
    ident = hashlib.sha256(str(path).encode()).hexdigest()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)[:48] or "run"
    store = Store(cache_folder(cache_dir) / f"{name}-history-{ident[:12]}.h5")
    store.checkpoint_path = str(path)
    return store
