"""Dataset files: a Hugging Face imagefolder (PNGs + metadata.jsonl) and one HDF5 file.

Both are written so that an interrupted render leaves no half-written output behind:
images go to a temporary folder that is renamed into place at the end, the HDF5 file is
written beside its final name and renamed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from engine.core import limits
from engine.core.errors import UserError
from engine.core.fs import staged_folder
from engine.data.render import render_batch
from engine.data.scenes import Scene, sample_scenes

CHUNK = 256


def check_render_args(out: str | os.PathLike, n: int, size: int, overwrite: bool) -> None:
    """Raise UserError for arguments that cannot produce a dataset, before any work starts."""
    if n <= 0:
        raise UserError(f"--n must be positive (got {n})")
    if size < 8:
        raise UserError(f"--size must be at least 8 pixels (got {size})")
    limits.check_number("--size", size, 8, limits.MAX_RENDER_SIZE, integer=True)
    limits.check_number("--n", n, 1, limits.MAX_RENDER_SCENES, integer=True)
    check_output_folder(out, overwrite)


def check_output_folder(out: str | os.PathLike, overwrite: bool) -> None:
    """A new folder can be written at `out` (an existing non-empty one only with overwrite)."""
    out = Path(out)
    if out.is_symlink():  # --overwrite would replace the link, or write where it leads
        raise UserError(f"{str(out)!r} is a symlink; refusing to write through it: choose a new "
                        "output folder")  # fmt: skip
    if out.exists() and not out.is_dir():
        raise UserError(f"{str(out)!r} exists and is not a folder; choose a new output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"output folder {str(out)!r} is not empty; choose a new folder or pass --overwrite"
        )
    if out.is_dir() and any(out.iterdir()) and not (out / "metadata.jsonl").is_file():
        # --overwrite replaces the whole folder: never a checkpoint, run or unrelated directory.
        raise UserError(
            f"refusing to replace {str(out)!r}: it is not an image folder written by dit-workbench "
            "(no metadata.jsonl); choose a new output folder"
        )
    if not out.parent.exists():
        raise UserError(f"parent folder {str(out.parent)!r} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"cannot write in {str(out.parent)!r}; choose a writable location")


def _chunks(n: int, seed: int) -> Iterator[tuple[int, list[Scene]]]:
    for start in range(0, n, CHUNK):
        yield start, sample_scenes(min(CHUNK, n - start), seed, start)


def write_dataset(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    size: int = 128,
    hdf5: bool = False,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Render scenes 0..n-1 of dataset `seed` into `out` (an imagefolder).

    With hdf5=True also write `out/dataset.h5`: images uint8 [n, size, size, 3], `records`
    (one JSON string per scene) and `text` (captions). Returns the output folder.
    """
    check_render_args(out, n, size, overwrite)
    out = Path(out)
    width = max(5, len(str(n - 1)))
    with staged_folder(out) as tmp:
        h5 = None
        if hdf5:
            h5 = h5py.File(tmp / "dataset.h5", "w")
            images = h5.create_dataset(
                "images",
                shape=(n, size, size, 3),
                dtype=np.uint8,
                chunks=(min(64, n), size, size, 3),
                compression="gzip",
                compression_opts=1,
            )
            str_t = h5py.string_dtype("utf-8")
            records_ds = h5.create_dataset("records", shape=(n,), dtype=str_t)
            text_ds = h5.create_dataset("text", shape=(n,), dtype=str_t)
            h5.attrs.update(
                {"seed": seed, "size": size, "n": n, "generator": "dit-workbench engine.data"}
            )
        with open(tmp / "metadata.jsonl", "w", encoding="utf-8") as meta:
            for start, scenes in _chunks(n, seed):
                imgs = render_batch(scenes, size)
                recs = []
                for k, (scene, img) in enumerate(zip(scenes, imgs, strict=True)):
                    name = f"{start + k:0{width}d}.png"
                    Image.fromarray(img).save(tmp / name, compress_level=1)
                    rec = {"file_name": name, "text": scene.caption, **scene.to_record()}
                    recs.append(rec)
                    meta.write(json.dumps(rec) + "\n")
                if h5 is not None:
                    images[start : start + len(scenes)] = imgs
                    records_ds[start : start + len(scenes)] = [json.dumps(r) for r in recs]
                    text_ds[start : start + len(scenes)] = [r["text"] for r in recs]
                if progress:
                    progress(len(scenes))
        if h5 is not None:
            h5.close()
    return out


def read_metadata(folder: str | os.PathLike) -> list[dict]:
    """The records of an imagefolder's metadata.jsonl; bad lines raise UserError with file:line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"folder {str(folder)!r} does not exist; give an image folder")
    meta = folder / "metadata.jsonl"
    if not meta.exists():
        raise UserError(
            f"{str(folder)!r} has no metadata.jsonl; an image folder needs one JSON line per image "
            "with file_name and text"
        )
    from engine.core.fs import regular_file

    regular_file(meta, "metadata file", limits.MAX_METADATA_BYTES)
    rows = []
    try:
        text = meta.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{meta} is not UTF-8 text (byte {e.start}); write it as UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read {meta} ({e.strerror or e}); check its permissions") from None
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{meta}:{lineno}: not valid JSON ({e.msg}); fix or remove the line"
            ) from None
        if not isinstance(rec, dict) or "file_name" not in rec or "text" not in rec:
            raise UserError(f"{meta}:{lineno}: needs 'file_name' and 'text' fields")
        rec["_line"] = lineno
        rows.append(rec)
    if not rows:
        raise UserError(f"{meta} lists no images; render or sample into the folder first")
    return rows


class HDF5Dataset:
    """Read side of dataset.h5: images as uint8 arrays, captions, scene records."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.is_dir():
            path = path / "dataset.h5"
        if not path.is_file():
            raise UserError(
                f"no dataset file at {str(path)!r}; render one with `dit-workbench dataset render OUT --hdf5`"
            )
        self.path = path
        with h5py.File(path, "r") as f:
            if "images" not in f or "text" not in f:
                raise UserError(f"{str(path)!r} is not a dit-workbench dataset (no images/text)")
            self.images = f["images"][:]
            self.text = [t.decode() if isinstance(t, bytes) else t for t in f["text"][:]]
            self.attrs = dict(f.attrs)

    def __len__(self) -> int:
        return len(self.text)
