"""Files read or written on a user's behalf, checked before they are touched.

- `check_tree`: a folder about to be copied (an export) holds only regular files, folders and
  relative symlinks that stay inside it; a link out of it, a loop, a dangling link or a special
  file (FIFO, socket, device) is refused with a message naming it, before anything is copied.
- `regular_file`: a file about to be read whole (prompts, metadata) is a regular file no
  bigger than a bound: a FIFO would block forever and /dev/zero never ends.
- `atomic_replace` / `write_atomic`: the one way a file is replaced whole (the cache's
  copy-on-write, the engine's address file, configs, exported tables): written beside the
  target, flushed to disk, renamed over it and the folder flushed, so a reader, a crash or a
  power cut sees the old file or the new one, never a mix. `staged_folder` is the same for a
  folder (datasets, sample sets, exported and imported checkpoints).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from engine.core.errors import UserError


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def check_tree(root: str | os.PathLike, what: str, skip: tuple[str, ...] = ()) -> None:
    """Refuse (UserError) a tree that a copy would have to follow out of `root`.

    Nothing is followed: the walk lists links without entering them. `skip`: top-level names
    the copy leaves out (their content is not checked)."""
    root = Path(root)
    real_root = root.resolve()
    for d, dirs, files in os.walk(root, followlinks=False):
        here = Path(d)
        if here == root:
            dirs[:] = [x for x in dirs if x not in skip]
            files = [x for x in files if x not in skip]
        for name in [*dirs, *files]:
            p = here / name
            rel = p.relative_to(root)
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                if os.path.isabs(target):
                    raise UserError(
                        f"{what}: {rel} is a symlink to an absolute path ({target}); refusing to "
                        "follow links out of the checkpoint: replace it with the file itself"
                    )
                try:
                    real = p.resolve(strict=True)
                except (OSError, RuntimeError):  # dangling, or a loop
                    raise UserError(
                        f"{what}: {rel} is a broken or looping symlink; remove or fix it"
                    ) from None
                if not _inside(real, real_root):
                    raise UserError(
                        f"{what}: {rel} is a symlink leading outside the checkpoint ({real}); "
                        "refusing to follow it: replace it with the file itself"
                    )
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise UserError(
                    f"{what}: {rel} is not a regular file (a FIFO, socket or device); remove it"
                )


def regular_file(path: str | os.PathLike, what: str, limit: int) -> Path:
    """`path` if it is a regular file of at most `limit` bytes; a one-line UserError saying
    what it is otherwise (missing, a folder, a FIFO or device, too big)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UserError(f"{what} {str(p)!r} does not exist") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {str(p)!r} ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {str(p)!r} is a folder; give a file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise UserError(f"{what} {str(p)!r} is {kind}, not a regular file; give a text file")
    if st.st_size > limit:
        raise UserError(
            f"{what} {str(p)!r} is {st.st_size:,} bytes, over the limit of {limit:,}; "
            "split it or give a smaller file"
        )
    return p


def read_json(path: str | os.PathLike, what: str, limit: int = 16 * 2**20):
    """The JSON value in a small file, or a one-line UserError naming the file (missing, not a
    regular file, too big, not UTF-8, not JSON, nested too deep)."""
    import json

    p = regular_file(path, what, limit)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{p} is not UTF-8 text; the file is damaged") from None
    except (ValueError, RecursionError) as e:
        msg = getattr(e, "msg", None) or "too deeply nested"
        raise UserError(f"{p} is not valid JSON ({msg}); the file is damaged") from None
    except OSError as e:
        raise UserError(f"cannot read {p} ({e.strerror or e}); check its permissions") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's: its entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_replace(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside `path` (nothing there yet) to write the new file
    in. When the block ends normally the file is fsynced, renamed over `path` and the folder
    fsynced: the rename is durable and whoever opens `path` gets the old file or the complete
    new one. When it raises (or is interrupted) the temporary file is removed and `path` is
    untouched. Concurrent writers of one path need a lock of their own: the last rename wins."""
    path = Path(path)
    # unique per call, so two writers never share a temporary; hidden and not *.h5 or *.json,
    # so listings of the folder skip one that a killed writer left behind
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: str | bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` (text is written as UTF-8) through `atomic_replace`; `mode`:
    the file's permission bits (default: what a new file gets). Raises OSError."""
    with atomic_replace(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        if mode is not None:
            os.chmod(tmp, mode)


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike, create: bool = True) -> Iterator[Path]:
    """Yield a hidden sibling `.<name>.partial` of `out` to fill (made empty first when
    `create`; else absent, for a copy to create); when the block ends normally it replaces
    `out` (a folder there is removed first) and the parent folder is fsynced. On any error
    (or ctrl+c, SIGTERM) it is removed: `out` is the old folder (or none) or the complete new
    one, never a half-written one."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    if create:
        tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        fsync_path(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
