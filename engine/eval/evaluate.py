"""Score images against the prompts they were generated from.

Each image is read by `engine.eval.detect` (red and blue objects, their shapes, and their centres in
128 px canvas units, whatever the image size; partly hidden objects are located by
occlusion-aware template fits) and its prompt by `engine.data.prompts.parse_prompt`: object 1
is (color1, shape1), object 2 (color2, shape2), and object 1 should be RELATION object 2.

Per-image metrics (booleans; aggregates are their means over all images):

* ``shape``: both prompted shapes are detected, in any colour (as a multiset: a prompt naming
  the same shape twice needs two).
* ``color``: both prompted colours are detected, on any shapes (multiset likewise).
* ``exist_binding``: there is an object with (color1, shape1) and a different object with
  (color2, shape2); other objects may be present.
* ``unique_binding``: the image holds exactly two objects and they are exactly those two.
* ``spatial``: unique_binding, and the relation of the two centres, dx = x1 - x2 and
  dy = y1 - y2 in canvas pixels (y down), is the prompted one under the dataset's rule:
  an axis with |d| <= 5 has no component (`engine.data.relations.relation_of`).
* ``overall``: the conjunction of the strict metrics above (shape, color, exist_binding,
  unique_binding, spatial).

Loose variants, for partial credit:

* ``shape_loose`` / ``color_loose``: at least one of the prompted shapes / colours is detected.
* ``spatial_loose``: exist_binding, and for some such pair every axis component the prompted
  relation has is present with the right sign (|d| > 5); extra components are allowed, so a
  lower-left pair satisfies "left of" and "below".

A diagnostic beyond the paper's metrics, for small models that place colours before they draw
shapes (every CPU-trained checkpoint here):

* ``color_relation``: both prompted colours are detected, and the area-weighted centre of all
  colour1 objects lies in the prompted relation to that of all colour2 objects, under the
  dataset's rule. Shapes are ignored, so it measures whether the model puts the colours where
  the relation words say even when it cannot yet draw a square.

An image that cannot be read scores False on every metric and keeps its error message.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from engine.core import limits
from engine.core.errors import UserError
from engine.data.prompts import Prompt, parse_prompt
from engine.data.relations import DEAD_ZONE, DIRECTIONS, relation_of
from engine.eval.detect import Detection, as_rgb_uint8, detect_batch

STRICT: tuple[str, ...] = ("shape", "color", "exist_binding", "unique_binding", "spatial")
LOOSE: tuple[str, ...] = ("shape_loose", "color_loose", "spatial_loose")
DIAGNOSTIC: tuple[str, ...] = ("color_relation",)
METRICS: tuple[str, ...] = (*STRICT, "overall", *LOOSE, *DIAGNOSTIC)

# Images decoded and detected per block when reading a folder (bounds memory on big folders).
BLOCK = limits.EVAL_CHUNK  # images decoded and held at once


def score(prompt: Prompt, detections: Sequence[Detection]) -> dict[str, bool]:
    """The per-image metrics (see the module docstring) of one image's detections."""
    shapes = Counter(d.shape for d in detections)
    colors = Counter(d.color for d in detections)
    want_shapes = Counter((prompt.shape1, prompt.shape2))
    want_colors = Counter((prompt.color1, prompt.color2))
    first = [d for d in detections if (d.color, d.shape) == (prompt.color1, prompt.shape1)]
    second = [d for d in detections if (d.color, d.shape) == (prompt.color2, prompt.shape2)]
    pairs = [(a, b) for a in first for b in second if a is not b]
    exist = bool(pairs)
    unique = exist and len(detections) == 2
    spatial = unique and relation_of(*_offset(*pairs[0])) == prompt.relation
    out = {
        "shape": all(shapes[s] >= n for s, n in want_shapes.items()),
        "color": all(colors[c] >= n for c, n in want_colors.items()),
        "exist_binding": exist,
        "unique_binding": unique,
        "spatial": spatial,
    }
    out["overall"] = all(out[m] for m in STRICT)
    out["shape_loose"] = any(shapes[s] for s in want_shapes)
    out["color_loose"] = any(colors[c] for c in want_colors)
    out["spatial_loose"] = any(_has_components(*_offset(a, b), prompt.relation) for a, b in pairs)
    out["color_relation"] = _color_relation(prompt, detections)
    return out


def color_centres(prompt: Prompt, detections: Sequence[Detection]) -> tuple[float, ...]:
    """(x1, y1, x2, y2): the area-weighted centres of all colour1 and all colour2 objects, in
    canvas pixels; NaN for a colour that is missing (or when both colours are the same)."""
    nan = (math.nan, math.nan)
    if prompt.color1 == prompt.color2:
        return nan + nan  # one colour gives no way to tell the objects apart
    out: tuple[float, ...] = ()
    for color in (prompt.color1, prompt.color2):
        dets = [d for d in detections if d.color == color]
        area = sum(d.area for d in dets)
        if not dets or area <= 0:
            out += nan
        else:
            out += (
                sum(d.cx * d.area for d in dets) / area,
                sum(d.cy * d.area for d in dets) / area,
            )
    return out


def _color_relation(prompt: Prompt, detections: Sequence[Detection]) -> bool:
    x1, y1, x2, y2 = color_centres(prompt, detections)
    return not math.isnan(x1 + x2) and relation_of(x1 - x2, y1 - y2) == prompt.relation


def relation_signal(centres: np.ndarray, relations: Sequence[str]) -> dict[str, float]:
    """How much the colours' placement follows the prompted relations, against chance.

    centres: [N, 4] from `color_centres` per image; relations: the prompted relation per image.
    Returns n_placed (images with both colours), accuracy (the mean of ``color_relation``),
    chance (its expectation with the prompts shuffled among the images: the accuracy a model
    that ignored the relation words would get with this placement), and offset_px / offset_se:
    the mean displacement of colour1 from colour2 along the prompted direction, in canvas
    pixels, with its standard error (0 when placement ignores the relation).
    """
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 4)
    rel = np.asarray(relations)
    placed = ~np.isnan(c).any(axis=1)
    n = len(c)
    if n == 0:
        return {"n": 0, "n_placed": 0, "accuracy": math.nan, "chance": math.nan,
                "offset_px": math.nan, "offset_se": math.nan}  # fmt: skip
    dx, dy = c[placed, 0] - c[placed, 2], c[placed, 1] - c[placed, 3]
    drawn = np.array([relation_of(a, b) for a, b in zip(dx, dy, strict=True)], dtype=object)
    prompted = rel[placed]
    freq = Counter(rel.tolist())
    chance = sum(freq[r] for r in drawn if r is not None) / (n * n)
    unit = np.array([DIRECTIONS[r] for r in prompted], dtype=np.float64).reshape(-1, 2)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True).clip(min=1e-12)
    along = dx * unit[:, 0] + dy * unit[:, 1]
    k = len(along)
    return {
        "n": n,
        "n_placed": int(k),
        "accuracy": float(np.sum(drawn == prompted)) / n,
        "chance": float(chance),
        "offset_px": float(along.mean()) if k else math.nan,
        "offset_se": float(along.std(ddof=1) / math.sqrt(k)) if k > 1 else math.nan,
    }


def _offset(a: Detection, b: Detection) -> tuple[float, float]:
    return a.cx - b.cx, a.cy - b.cy


def _has_components(dx: float, dy: float, relation: str) -> bool:
    """Every axis component of `relation` is present in (dx, dy) with the right sign."""
    ux, uy = DIRECTIONS[relation]
    return all(
        u == 0 or (abs(d) > DEAD_ZONE and (d > 0) == (u > 0)) for u, d in ((ux, dx), (uy, dy))
    )


def failed() -> dict[str, bool]:
    """The metrics of an image that could not be scored."""
    return dict.fromkeys(METRICS, False)


@dataclass
class EvalResult:
    """Aggregate metrics (means over all n images, unreadable ones counting as failures) and
    one entry per image: file_name, text, the metrics, detections, error (None if read)."""

    n: int
    metrics: dict[str, float]
    per_image: list[dict] = field(default_factory=list)

    @property
    def n_errors(self) -> int:
        return sum(1 for r in self.per_image if r.get("error"))

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "n_errors": self.n_errors,
            "metrics": dict(self.metrics),
            "per_image": self.per_image,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def rows(self) -> list[dict]:
        """One flat row per image: file_name, text, each metric, error."""
        return [
            {
                "file_name": r["file_name"],
                "text": r["text"],
                **{m: r[m] for m in METRICS},
                "error": r.get("error") or "",
            }
            for r in self.per_image
        ]


def _aggregate(per_image: list[dict]) -> EvalResult:
    n = len(per_image)
    metrics = {m: (sum(bool(r[m]) for r in per_image) / n if n else 0.0) for m in METRICS}
    return EvalResult(n, metrics, per_image)


@lru_cache(maxsize=4096)
def _parse(text: str) -> Prompt:
    return parse_prompt(text)


def _entry(name: str, prompt: Prompt, dets: list[Detection] | None, error: str | None) -> dict:
    metrics = failed() if dets is None else score(prompt, dets)
    return {
        "file_name": name,
        "text": prompt.text,
        **metrics,
        "detections": [d.to_record() for d in dets or []],
        "error": error,
    }


def evaluate_arrays(
    images,
    prompts: Sequence[Prompt | str],
    file_names: Sequence[str] | None = None,
    workers: int | None = None,
) -> EvalResult:
    """Score in-memory images (an array [N, H, W, 3] or a list of [H, W, 3], any size) against
    their prompts (Prompt objects or caption strings)."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    parsed = [p if isinstance(p, Prompt) else _parse(p) for p in prompts]
    names = list(file_names) if file_names is not None else [str(i) for i in range(len(parsed))]
    dets = detect_batch(images, workers=workers)
    return _aggregate([_entry(n, p, d, None) for n, p, d in zip(names, parsed, dets, strict=True)])


def _read_image(path: Path) -> tuple[np.ndarray | None, str | None]:
    """RGB uint8 image, or None and why not. Its size is read from the file's header and held
    to limits.MAX_EVAL_PIXELS before anything is decoded (or the file read whole)."""
    if not path.is_file():
        return None, f"{path.name}: file not found"
    why = _too_big(path)
    if why:
        return None, f"{path.name}: {why}"
    try:
        data = np.fromfile(path, dtype=np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error) as e:
        return None, f"{path.name}: cannot read ({e})"
    if img is None:
        return None, f"{path.name}: not a readable image"
    return as_rgb_uint8(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)), None


def _too_big(path: Path) -> str | None:
    """Why an image file is not decoded (over the bounds), from its size and header alone."""
    from PIL import Image, UnidentifiedImageError

    size = path.stat().st_size
    if size > limits.MAX_EVAL_FILE_BYTES:
        return f"file of {size:,} bytes, over the limit of {limits.MAX_EVAL_FILE_BYTES:,}; not read"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
    except Image.DecompressionBombError:
        return f"over the limit of {limits.MAX_EVAL_PIXELS:,} pixels; not decoded"
    except (UnidentifiedImageError, OSError, ValueError):
        return None  # not an image PIL knows: OpenCV decides below
    if w * h > limits.MAX_EVAL_PIXELS:
        return (
            f"{w}x{h} pixels, over the limit of {limits.MAX_EVAL_PIXELS:,} "
            f"({int(limits.MAX_EVAL_PIXELS**0.5)}x{int(limits.MAX_EVAL_PIXELS**0.5)}); not decoded"
        )
    return None


def _detect_block(images: list, workers: int) -> list:
    """Detections per image; an image the detector fails on (a degenerate one) gets the error
    instead of aborting the whole run."""
    try:
        return detect_batch(images, workers=workers)
    except Exception:
        out = []
        for img in images:
            try:
                out.append(detect_batch([img], workers=1)[0])
            except Exception as e:
                out.append(
                    f"detection failed ({type(e).__name__}: {' '.join(str(e).split())[:80]})"
                )
        return out


@contextmanager
def _quiet_opencv():
    """Keep OpenCV's decoder warnings (a truncated PNG...) off stderr; errors are reported."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    prev = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(prev)


def read_records(folder: str | os.PathLike) -> list[tuple[str, Prompt]]:
    """(file_name, prompt) for each line of FOLDER/metadata.jsonl.

    Raises UserError naming the file (and line) for a missing folder or metadata file, a line
    that is not JSON or lacks file_name/text, a prompt the parser cannot read, or no images.
    """
    from engine.data.files import read_metadata

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{str(folder)!r} is a file, not a folder; give an image folder")
    meta = folder / "metadata.jsonl"
    out = []
    for rec in read_metadata(folder):
        line = rec.get("_line", "?")
        name, text = rec["file_name"], rec["text"]
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{meta}:{line}: 'file_name' must be a non-empty string")
        if not isinstance(text, str):
            raise UserError(f"{meta}:{line}: 'text' must be a string (the prompt)")
        try:
            prompt = _parse(text)
        except UserError as e:
            raise UserError(f"{meta}:{line}: {e}") from None
        out.append((name, prompt))
    return out


def evaluate_folder(folder: str | os.PathLike, workers: int | None = None) -> EvalResult:
    """Score an imagefolder: image files plus metadata.jsonl (file_name, text per line).

    Bad metadata raises UserError (see read_records); an image that is missing or cannot be
    decoded is reported in its per_image entry and fails every metric.
    """
    folder = Path(folder)
    records = read_records(folder)
    workers = workers or min(os.cpu_count() or 1, 8)
    per_image: list[dict] = []
    with _quiet_opencv(), ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(records), BLOCK):
            block = records[start : start + BLOCK]
            loaded = list(pool.map(lambda r: _read_image(folder / r[0]), block))
            ok = [k for k, (img, _) in enumerate(loaded) if img is not None]
            dets = _detect_block([loaded[k][0] for k in ok], workers)
            found: dict[int, list[Detection]] = dict(zip(ok, dets, strict=True))
            for k, ((name, prompt), (_, error)) in enumerate(zip(block, loaded, strict=True)):
                d = found.get(k)
                if isinstance(d, str):
                    d, error = None, f"{name}: {d}"
                per_image.append(_entry(name, prompt, d, error))
            del loaded, dets, found  # at most one block of decoded images in memory
    return _aggregate(per_image)
