"""The bad-input contract's checks: a refusal is one `error: ...` line, and the files it was
given stay byte-identical (`tree_digest` before and after)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_digest(*paths: Path) -> dict[str, str]:
    """sha256 of every file (and the target of every link) under `paths`, by path: equal
    digests mean byte-identical trees with no file added or removed."""
    out: dict[str, str] = {}
    for root in map(Path, paths):
        if not root.exists():
            out[str(root)] = "absent"
            continue
        if root.is_file():
            out[str(root)] = _sha(root)
            continue
        for d, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files + [x for x in dirs if os.path.islink(os.path.join(d, x))]):
                p = Path(d, name)
                if p.is_symlink():
                    out[str(p)] = f"-> {os.readlink(p)}"
                else:  # a socket or fifo has no bytes to compare
                    out[str(p)] = _sha(p) if p.is_file() else "special"
    return out


def _sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def one_line_error(text: str) -> str:
    """The single non-empty line of `text`, checked to be an `error: ...` without a traceback."""
    assert "Traceback" not in text, text
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
