"""Low-level HDF5 of the cache: opening read-only, dataset writes, appends and reads with
one-line errors for damaged bytes, and attribute values."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from engine.core.errors import UserError

COMPRESS_MIN = 1024  # arrays smaller than this (bytes) are stored contiguous, uncompressed


def attr_value(v):
    if isinstance(v, (str, int, float, bool, np.integer, np.floating, np.bool_)):
        return v
    return json.dumps(v, default=str)


@contextlib.contextmanager
def open_readonly(path: Path) -> Iterator[h5py.File]:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"cannot read cache {path}: {e}; move it away to rebuild") from e
    with f:
        yield f


def file_attrs(path: Path) -> dict:
    with open_readonly(path) as f:
        return {k: decode(v) for k, v in f.attrs.items()}


def write_error(path: Path, e: OSError) -> UserError:
    reason = (e.strerror or str(e) or type(e).__name__).splitlines()[0]
    return UserError(
        f"cannot write cache {path}: {reason}; nothing was changed, free space or give a "
        "writable --cache folder"
    )


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def decode(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    return v


def write_dataset(g: h5py.Group, name: str, arr) -> None:
    if isinstance(arr, (list, tuple)) and (not arr or isinstance(arr[0], str)):
        g.create_dataset(name, data=list(arr), dtype=h5py.string_dtype())
        return
    arr = np.asarray(arr)
    if arr.nbytes >= COMPRESS_MIN and arr.ndim > 0:
        g.create_dataset(
            name, data=arr, chunks=True, compression="gzip", compression_opts=4, shuffle=True
        )
    else:
        g.create_dataset(name, data=arr)


def append_dataset(g: h5py.Group, name: str, arr: np.ndarray) -> None:
    """Rows appended to a dataset resizable along axis 0 (created, chunked and compressed,
    on first use; chunks of whole rows so an append touches only its own chunks)."""
    if name not in g:
        row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
        chunk_rows = max(1, min(1024, (256 << 10) // row))
        g.create_dataset(
            name,
            data=arr,
            maxshape=(None, *arr.shape[1:]),
            chunks=(chunk_rows, *arr.shape[1:]),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )
        return
    ds = g[name]
    n = ds.shape[0]
    ds.resize(n + len(arr), axis=0)
    ds[n:] = arr


def read_dataset(ds: h5py.Dataset, index=None):
    """A dataset's values (`index`: only that part); damaged bytes (a chunk that does not
    inflate, text that is not UTF-8) give one line naming the file and the dataset."""
    try:
        values = ds[() if index is None else index]
        if h5py.check_string_dtype(ds.dtype) is not None:
            return [s.decode() if isinstance(s, bytes) else s for s in np.atleast_1d(values)]
        return values
    except (OSError, ValueError, UnicodeDecodeError) as e:
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise UserError(
            f"cannot read {ds.name} in cache {ds.file.filename} ({reason}); the file is "
            "damaged: move it away to rebuild it"
        ) from None


def read_group(g: h5py.Group) -> dict:
    """All datasets under a group, as {relative path: values}."""
    out: dict = {}
    g.visititems(
        lambda n, obj: (
            out.__setitem__(n, read_dataset(obj)) if isinstance(obj, h5py.Dataset) else None
        )
    )
    return out
