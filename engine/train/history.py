"""A training run's kept history: the EMA weights of every checkpoint, small and forever.

`dit-workbench train --keep-history` copies each checkpoint, as it is written, to
`RUN/history/step-NNNNNNN/`: the EMA transformer in float16, the text encoder and
`workbench.json` (with its own hash), without `train_state/` (what `export --fp16` writes).
`--keep` never prunes it, so a run can be analysed after the fact (`dit-workbench emergence`)
at about a quarter of a full checkpoint's size (a `mini` model: ~30 MB per step).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from engine.core.errors import UserError
from engine.core.fs import staged_folder

HISTORY = "history"
_STEP = re.compile(r"^step-(\d+)$")


def history_dir(run: str | os.PathLike) -> Path:
    return Path(run) / HISTORY


def save_history(ckdir: str | os.PathLike, run: str | os.PathLike) -> Path:
    """Copy checkpoint `ckdir` of `run` into the run's history as float16 (atomic: written to a
    hidden folder and renamed); a history entry of the same step is replaced."""
    from engine.model.checkpoint import export_checkpoint

    ckdir = Path(ckdir)
    root = history_dir(run)
    root.mkdir(parents=True, exist_ok=True)
    final = root / ckdir.name
    with staged_folder(final, create=False) as tmp:
        export_checkpoint(ckdir, tmp, fp16=True, curves=False)
        meta_path = tmp / "workbench.json"
        meta = json.loads(meta_path.read_text())
        meta["history"] = True  # what kind of copy it is; exported_from names the full checkpoint
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return final


def history_steps(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every kept history checkpoint of a run, by step (none: [])."""
    root = history_dir(run)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _STEP.match(d.name)
        if m and d.is_dir() and (d / "workbench.json").is_file():
            out.append((int(m.group(1)), d))
    return sorted(out)


def history_checkpoint(run: str | os.PathLike, step: int) -> Path:
    """The checkpoint of `run` at `step`: its history copy, else a full checkpoint still kept."""
    for d in (history_dir(run) / f"step-{step:07d}", Path(run) / f"step-{step:07d}"):
        if (d / "workbench.json").is_file():
            return d
    kept = [s for s, _ in history_steps(run)]
    have = (
        f"kept history steps: {_span(kept)}"
        if kept
        else "the run kept no history (train with --keep-history)"
    )
    raise UserError(f"run {str(run)!r} has no checkpoint at step {step}; {have}")


def _span(steps: list[int]) -> str:
    if len(steps) <= 6:
        return ", ".join(map(str, steps))
    return f"{', '.join(map(str, steps[:3]))}, ..., {steps[-1]} ({len(steps)} in all)"
