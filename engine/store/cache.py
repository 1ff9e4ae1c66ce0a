"""The HDF5 cache: one file per checkpoint, a group per result kind, a subgroup per run.

Layout (documented for readers without this package in docs/cache-format.md):

    /                       attrs: format, checkpoint_hash, checkpoint_path, created
    /<kind>/<run>/          kind: synopsis | screening | ablation | evaluation | variance |
                            emergence (in a run's own file, engine.store.emergence)
        attrs               provenance: checkpoint_hash, code_version, created, command,
                            params (JSON), plus any scalar the writer adds
        <datasets...>       chunked, gzip-compressed arrays

Layers. A checkpoint may ship its own results: `<checkpoint>/cache.h5` (SHIPPED), committed with
it and never written (a checkout stays clean). It is read beneath the user's cache file: runs
are listed from both, a run of the same name in the user's file wins, and every write (and
every delete) goes to the user's file only.

Writes are copy-on-write, all through `Store._rewrite`: a run is written (or a run deleted) in a
copy of the file, which is flushed to disk and renamed over the original, the folder flushed
after (engine.core.fs.atomic_replace), so a reader (or a crash, even SIGKILL or a power cut)
only ever sees the old file or the new one, never half a run. An advisory lock serialises
writers. Caches are small (megabytes), so copying the file per run costs milliseconds. The
dataset-level reads and writes beneath these are in engine.store.h5.

This package is infrastructure: it imports only engine.core and knows nothing of models or
probes. Whatever computes results receives a `Store` and reads and writes through its methods
(runs, attrs, read, write_run, ...); only this package opens the HDF5 files. A checkpoint is
named by its folder and its weights' hash (`CheckpointRef`); finding those from a checkpoint's
metadata is the model layer's `store_for_path`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np

from engine import __version__
from engine.core.errors import UserError
from engine.core.fs import atomic_replace
from engine.core.settings import settings
from engine.store import h5

FORMAT = "dit-workbench-cache/1"
KINDS = ("synopsis", "screening", "ablation", "evaluation", "variance", "emergence")
_RUN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHIPPED = "cache.h5"  # a checkpoint's own read-only results, read beneath the user's cache


class CheckpointRef(Protocol):
    """What the store needs of a checkpoint: its folder and its weights' sha256 (a loaded
    model checkpoint is one)."""

    path: str | os.PathLike
    hash: str


def default_cache_dir() -> Path:
    """$DIT_WORKBENCH_CACHE, else ./cache (engine.core.settings)."""
    return settings().cache_dir


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder (default: default_cache_dir()); refused when a file is in its place."""
    folder = Path(cache_dir or default_cache_dir())
    if folder.exists() and not folder.is_dir():
        raise UserError(
            f"cache folder {str(folder)!r} is a file; give a folder with --cache (it is created)"
        )
    return folder


def cache_path(ckpt: CheckpointRef, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache file of a checkpoint: <cache>/<run name>-<hash12>.h5."""
    path = Path(ckpt.path).resolve()
    run = path.parent.parent if path.parent.name == "history" else path.parent  # --keep-history
    name = run.name if path.name.startswith("step-") else path.name
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:48] or "checkpoint"
    step = f"-{path.name}" if path.name.startswith("step-") else ""
    return cache_folder(cache_dir) / f"{name}{step}-{ckpt.hash[:12]}.h5"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UserError(f"unknown result kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def check_run_name(run: str) -> str:
    """Run names become HDF5 paths and may come from requests: keep them to one plain name."""
    if not isinstance(run, str) or not _RUN.match(run):
        raise UserError(
            f"bad run name {run!r}: use letters, digits, '_', '-' or '.', at most 64 characters"
        )
    return run


class Store:
    """One checkpoint's cache file. Reading never needs a lock; writing takes one."""

    def __init__(
        self,
        path: str | os.PathLike,
        checkpoint_hash: str | None = None,
        base: str | os.PathLike | None = None,
    ):
        self.path = Path(path)
        self.checkpoint_hash = checkpoint_hash
        self.base = Path(base) if base is not None and Path(base).is_file() else None
        self.checkpoint_path: str | None = None  # recorded in the file's attributes
        for layer in self._layers():
            found = h5.file_attrs(layer).get("checkpoint_hash") if checkpoint_hash else None
            if found and found != checkpoint_hash:
                what = "shipped cache" if layer == self.base else "cache"
                raise UserError(
                    f"{layer} is the {what} of another checkpoint (hash {found[:12]}, "
                    f"this one {checkpoint_hash[:12]}); use another --cache folder or delete it"
                )

    @classmethod
    def for_checkpoint(
        cls, ckpt: CheckpointRef, cache_dir: str | os.PathLike | None = None
    ) -> Store:
        store = cls(cache_path(ckpt, cache_dir), ckpt.hash, base=Path(ckpt.path) / SHIPPED)
        store.checkpoint_path = str(Path(ckpt.path).resolve())
        return store

    # reading

    def _layers(self) -> list[Path]:
        """The files that exist, the read-only shipped one first (later layers win)."""
        return [p for p in (self.base, self.path) if p is not None and p.exists()]

    @contextlib.contextmanager
    def _open_run(self, kind: str, run: str) -> Iterator[h5py.Group]:
        """One run's group, from whichever layer holds it (the user's file first)."""
        check_kind(kind)
        check_run_name(run)
        for layer in reversed(self._layers()):
            with h5.open_readonly(layer) as f:
                if kind in f and run in f[kind]:
                    yield f[kind][run]
                    return
        have = ", ".join(self.runs(kind)) or "none"
        raise UserError(f"no {kind} run {run!r} in {self.path} (runs: {have})")

    def file_attrs(self) -> dict:
        out: dict = {}
        for layer in self._layers():
            out.update(h5.file_attrs(layer))
        return out

    def runs(self, kind: str) -> list[str]:
        check_kind(kind)
        names: set[str] = set()
        for layer in self._layers():
            with h5.open_readonly(layer) as f:
                names.update(f[kind].keys() if kind in f else ())
        return sorted(names)

    def shipped_runs(self, kind: str) -> list[str]:
        """Runs that come from the checkpoint's read-only shipped cache (and are not shadowed)."""
        if self.base is None:
            return []
        with h5.open_readonly(self.base) as f:
            base = set(f[kind].keys()) if kind in f else set()
        if self.path.exists():
            with h5.open_readonly(self.path) as f:
                base -= set(f[kind].keys()) if kind in f else set()
        return sorted(base)

    def has_run(self, kind: str, run: str) -> bool:
        return run in self.runs(kind)

    def latest_run(self, kind: str, **match) -> str | None:
        """The newest run of `kind` whose attributes equal `match` (None if there is none)."""
        best, best_time = None, ""
        for layer in self._layers():
            with h5.open_readonly(layer) as f:
                for run, g in f[kind].items() if kind in f else []:
                    attrs = {k: h5.decode(v) for k, v in g.attrs.items()}
                    if all(attrs.get(k) == v for k, v in match.items()):
                        if attrs.get("created", "") >= best_time:
                            best, best_time = run, attrs.get("created", "")
        return best

    def attrs(self, kind: str, run: str) -> dict:
        with self._open_run(kind, run) as g:
            return {k: h5.decode(v) for k, v in g.attrs.items()}

    def read(self, kind: str, run: str, name: str | None = None, index=None):
        """One dataset of a run (`index`: only that part of it, e.g. a tuple of slices), or
        (name None) all of its datasets as {relative path: array}. Text is a list of str."""
        with self._open_run(kind, run) as g:
            if name is None:
                return h5.read_group(g)
            ds = g.get(name)
            if not isinstance(ds, h5py.Dataset):
                raise UserError(f"{kind} run {run!r} has no {name!r}")
            return h5.read_dataset(ds, index)

    def read_some(self, kind: str, run: str, names) -> dict:
        """The named datasets of a run only (not, say, its images), in one opening."""
        with self._open_run(kind, run) as g:
            missing = [n for n in names if not isinstance(g.get(n), h5py.Dataset)]
            if missing:
                raise UserError(f"{kind} run {run!r} has no {missing[0]!r}")
            return {n: h5.read_dataset(g[n]) for n in names}

    def datasets(self, kind: str, run: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """{relative path: (shape, dtype)} of a run's datasets, without reading them."""
        out: dict = {}
        with self._open_run(kind, run) as g:
            g.visititems(
                lambda n, obj: (
                    out.__setitem__(n, (obj.shape, obj.dtype))
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            )
        return out

    def source(self, kind: str, run: str) -> Path:
        """The file that holds the run (the user's cache, or the checkpoint's shipped one)."""
        check_kind(kind)
        check_run_name(run)
        for layer in reversed(self._layers()):
            with h5.open_readonly(layer) as f:
                if kind in f and run in f[kind]:
                    return layer
        raise UserError(f"no {kind} run {run!r} in {self.path}")

    # writing

    def new_run_name(self, kind: str, prefix: str | None = None) -> str:
        existing = set(self.runs(kind))
        stem = prefix or "run"
        i = len(existing) + 1
        while f"{stem}-{i:04d}" in existing:
            i += 1
        return f"{stem}-{i:04d}"

    def write_run(
        self,
        kind: str,
        arrays: Mapping[str, np.ndarray],
        attrs: Mapping | None = None,
        run: str | None = None,
        overwrite: bool = False,
    ) -> str:
        """Write one run atomically and return its name.

        `arrays` maps dataset paths inside the run ("scores", "eval/spatial") to arrays; lists of
        strings are stored as UTF-8 string datasets. `attrs` add to the provenance attributes.
        """
        check_kind(kind)
        with self._lock():
            run = check_run_name(run) if run is not None else self.new_run_name(kind)
            if self.has_run(kind, run) and not overwrite:
                raise UserError(f"{kind} run {run!r} already exists in {self.path}")

            def add(f: h5py.File) -> None:
                g = _without_run(f, kind, run).create_group(run)
                for key, value in self._provenance(attrs).items():
                    g.attrs[key] = h5.attr_value(value)
                for name, arr in arrays.items():
                    h5.write_dataset(g, name, arr)

            self._rewrite(add)
        return run

    # A run written batch by batch (the synopsis): rows are appended to resizable datasets in
    # the run's own staging file beside the cache (readers never see it); commit_run copies the
    # run into the cache file once, copy-on-write as write_run. Appending costs the same per
    # batch however long the run, where rewriting the run each batch grew with it.

    def staging_path(self, kind: str, run: str) -> Path:
        # no .h5 suffix: whoever lists <cache>/*.h5 sees cache files only
        return self.path.with_name(
            f".{self.path.name}.{check_kind(kind)}.{check_run_name(run)}.staging"
        )

    def append_run(
        self,
        kind: str,
        run: str,
        rows: Mapping[str, np.ndarray],
        attrs: Mapping | None = None,
        fixed: Mapping | None = None,
    ) -> None:
        """Append `rows` (along axis 0) to the staged run's datasets (created on first use);
        `fixed` arrays replace whole ones; `attrs` update its attributes, last of all."""
        path = self.staging_path(kind, run)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # latest format: chunks indexed by an extensible array, O(1) to append to
            with h5py.File(path, "a", libver="latest") as f:
                g = f.require_group("run")
                for name, arr in rows.items():
                    h5.append_dataset(g, name, np.asarray(arr))
                for name, arr in (fixed or {}).items():
                    if name in g:
                        del g[name]
                    h5.write_dataset(g, name, arr)
                for key, value in self._provenance(attrs).items():
                    g.attrs[key] = h5.attr_value(value)
        except OSError as e:
            raise h5.write_error(self.path, e) from None

    def read_staged(self, kind: str, run: str) -> tuple[dict, dict] | None:
        """(arrays, attrs) of a staged run; None if there is none. A staging file its writer
        left damaged (killed mid-write) is removed and None returned: the run starts over
        from what the cache file holds."""
        path = self.staging_path(kind, run)
        if not path.exists():
            return None
        try:
            with h5py.File(path, "r") as f:
                g = f["run"]
                attrs = {k: h5.decode(v) for k, v in g.attrs.items()}
                out = h5.read_group(g)
        except (OSError, KeyError, ValueError, RuntimeError):
            path.unlink(missing_ok=True)
            return None
        return out, attrs

    def discard_staged(self, kind: str, run: str) -> None:
        self.staging_path(kind, run).unlink(missing_ok=True)

    def commit_run(self, kind: str, run: str, attrs: Mapping | None = None) -> None:
        """Copy the staged run into the cache file (copy-on-write: readers and a crash see
        the old file or the new one), with `attrs` added; then remove the staging file."""
        staging = self.staging_path(kind, run)

        def add(f: h5py.File) -> None:
            parent = _without_run(f, kind, run)
            with h5py.File(staging, "r") as src:
                src.copy(src["run"], parent, run)  # chunks copied as they are
            for key, value in (attrs or {}).items():
                parent[run].attrs[key] = h5.attr_value(value)

        with self._lock():
            self._rewrite(add)
        staging.unlink(missing_ok=True)

    def delete_run(self, kind: str, run: str) -> None:
        with self._lock():
            if run in self.shipped_runs(kind):
                raise UserError(
                    f"{kind} run {run!r} was shipped with the checkpoint ({self.base}) and is "
                    "read-only; nothing was deleted"
                )
            if not self.has_run(kind, run):
                raise UserError(f"no {kind} run {run!r} in {self.path}")
            self._rewrite(lambda f: None, drop=(kind, run))

    def _rewrite(self, edit: Callable[[h5py.File], None], drop: tuple[str, str] | None = None):
        """The one copy-on-write path of every change to the cache file (the caller holds the
        lock): a copy of the file (without run `drop` = (kind, run): copying the rest, not
        deleting in place, also gives its space back) is changed by `edit`, then replaces the
        file through engine.core.fs.atomic_replace (fsynced, renamed, folder fsynced). Any
        OSError (a full disk, mostly) leaves the old file as the cache."""
        try:
            with atomic_replace(self.path) as tmp:
                if drop is not None:
                    _copy_without(self.path, tmp, *drop)
                elif self.path.exists():
                    shutil.copyfile(self.path, tmp)
                with h5py.File(tmp, "a") as f:
                    self._init_file(f)
                    edit(f)
        except OSError as e:
            raise h5.write_error(self.path, e) from None

    def _init_file(self, f: h5py.File) -> None:
        if "format" not in f.attrs:
            f.attrs["format"] = FORMAT
            f.attrs["created"] = h5.now()
        if self.checkpoint_hash:
            f.attrs["checkpoint_hash"] = self.checkpoint_hash
        if self.checkpoint_path:
            f.attrs["checkpoint_path"] = self.checkpoint_path

    def _provenance(self, attrs: Mapping | None) -> dict:
        import sys

        base = {
            "checkpoint_hash": self.checkpoint_hash or "",
            "code_version": __version__,
            "created": h5.now(),
            "command": " ".join(
                os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)
            ),
        }
        base.update(attrs or {})
        return base

    @contextlib.contextmanager
    def _lock(self):
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock_path, "a")  # closed by the `with` below
        except OSError as e:  # a read-only or full cache folder, or a file in its place
            raise h5.write_error(self.path, e) from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _without_run(f: h5py.File, kind: str, run: str) -> h5py.Group:
    """The kind's group, with the run about to be replaced removed."""
    parent = f.require_group(kind)
    if run in parent:
        del parent[run]
    return parent


def _copy_without(src_path: Path, dst_path: Path, kind: str, run: str) -> None:
    """A new file holding everything of `src_path` except run `kind`/`run`."""
    with h5py.File(src_path, "r") as src, h5py.File(dst_path, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src:
            if name != kind:
                src.copy(src[name], dst, name)
                continue
            dst.create_group(kind)
            for r in src[kind]:
                if r != run:
                    src.copy(src[kind][r], dst[kind], r)
