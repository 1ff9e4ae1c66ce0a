"""Batches: same-size images stacked and thresholded and traced with single OpenCV calls; only
images where the colours touch take the per-image path (engine.eval.detect.occlusion)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from engine.data.scenes import CANVAS, SHAPES
from engine.eval.detect.base import Detection, as_rgb_uint8, color_masks, min_areas, touch_reach
from engine.eval.detect.fit import classify, moments, needs_refine, refine
from engine.eval.detect.occlusion import detect_one

CHUNK_PIXELS = 8 * 128 * 128  # images per stack: this many pixels keeps a stack in cache


def _detect_chunk(images: np.ndarray) -> list[list[Detection]]:
    """Detections for a stack [N, H, W, 3] of same-size images.

    The colour masks of the whole stack come from single OpenCV calls, the images stacked
    vertically a few empty rows apart. Images where the two colours touch go through the
    per-image, occlusion-aware path. In the rest every object is whole: OpenCV's contours of
    the stack give each object's box, pixel moments of the box give its area and centroid
    (measured several times cheaper than labelling the stack), and only triangles (or all
    objects of small images) get a template fit for an exact centre.
    """
    N, H, Wd = images.shape[:3]
    fx, fy = CANVAS / Wd, CANVAS / H
    reach = touch_reach(fx, fy)
    Hp = H + reach + 1
    red, blue = color_masks(images.reshape(N * H, Wd, 3))
    tall = {}
    for name, m in (("red", red), ("blue", blue)):
        t = np.zeros((N, Hp, Wd), dtype=np.uint8)
        t[:, :H] = m.reshape(N, H, Wd)
        tall[name] = t.reshape(N * Hp, Wd)
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1))
    touching = (cv2.dilate(tall["blue"], k) & tall["red"]).reshape(N, -1).any(axis=1)
    out: list[list[Detection]] = [[] for _ in range(N)]
    min_area, _ = min_areas(fx, fy)
    px_area = fx * fy
    for color in ("red", "blue"):
        m = tall[color]
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            continue
        boxes = [cv2.boundingRect(c) for c in contours]
        per_image: dict[int, list[int]] = {}
        for j, (_, y, _, _) in enumerate(boxes):
            i = y // Hp
            if not touching[i]:
                per_image.setdefault(i, []).append(j)
        found = []  # image, box, area, centroid (pixels, stack frame), centroid y in box, spread
        for i, js in per_image.items():
            for j in js:
                x, y, w, h = boxes[j]
                crop = m[y : y + h, x : x + w]
                if len(js) > 1 and any(_overlap(boxes[j], boxes[o]) for o in js if o != j):
                    # another object's pixels fall in this box: keep only this contour's
                    fill = np.zeros((h, w), dtype=np.uint8)
                    cv2.drawContours(fill, contours, j, 255, cv2.FILLED, offset=(-x, -y))
                    crop = crop & fill
                area, mx, my, spread = moments(crop)
                if area >= min_area:
                    found.append((i, (x, y, w, h), area, x + mx, y + my, my, spread))
        if not found:
            continue
        arr = np.array([(f[2], f[1][2], f[1][3], f[5], f[6]) for f in found])
        codes = classify(*arr.T).tolist()
        for (i, (x, y, w, h), area, cx, cy, _, _), code in zip(found, codes, strict=True):
            shape = SHAPES[code]
            if needs_refine(shape, Wd, H):
                bounds = (0, i * Hp, Wd, i * Hp + H)
                got = refine(m, None, (x, y, x + w, y + h), bounds, shape, area, fx, fy)
                if got is not None:
                    shape, cx, cy = got[:3]
            out[i].append(Detection(color, shape, cx * fx, (cy - i * Hp) * fy, area * px_area))
    for i in np.nonzero(touching)[0]:
        out[i] = detect_one(images[i], (red[i * H : (i + 1) * H], blue[i * H : (i + 1) * H]))
    return out


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def detect_batch(images, workers: int | None = None) -> list[list[Detection]]:
    """detect() for a batch: an array [N, H, W, 3] or a list of images of any sizes.

    Same-size images are processed in stacks (see _detect_chunk) spread over a thread pool.
    OpenCV is held to one internal thread meanwhile (a process-wide setting, restored after),
    since its own parallel labelling is slower than the serial one on images this small.
    """
    n = len(images)
    if n == 0:
        return []
    whole = (
        isinstance(images, np.ndarray)
        and images.ndim == 4
        and images.dtype == np.uint8
        and images.shape[-1] == 3
    )
    by_size: dict[tuple[int, int], list[int]] = {}
    if whole:
        images = np.ascontiguousarray(images)
        by_size[images.shape[1:3]] = list(range(n))
    else:
        images = [as_rgb_uint8(im) for im in images]
        for i, a in enumerate(images):
            by_size.setdefault(a.shape[:2], []).append(i)
    jobs = []
    for (h, w), idxs in by_size.items():
        step = max(1, min(256, CHUNK_PIXELS // (h * w)))
        jobs.extend(idxs[s : s + step] for s in range(0, len(idxs), step))

    def run(idxs: list[int]) -> list[list[Detection]]:
        if whole:  # consecutive indices: a view, no copy
            return _detect_chunk(images[idxs[0] : idxs[-1] + 1])
        return _detect_chunk(np.stack([images[i] for i in idxs]))

    workers = min(workers or os.cpu_count() or 1, len(jobs), 32)
    out: list[list[Detection]] = [[] for _ in range(n)]
    prev = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if workers <= 1:
            results = list(map(run, jobs))
        else:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(run, jobs))
    finally:
        cv2.setNumThreads(prev)
    for idxs, dets in zip(jobs, results, strict=True):
        for i, d in zip(idxs, dets, strict=True):
            out[i] = d
    return out
