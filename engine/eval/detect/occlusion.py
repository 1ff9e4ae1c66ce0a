"""One image: whole objects from their components, touching ones resolved as hypotheses of
which colour lies on top (the module docstring of engine.eval.detect tells the method)."""

from __future__ import annotations

import cv2
import numpy as np

from engine.data.scenes import CANVAS, SHAPES
from engine.eval.detect.base import (
    MIN_TOUCH_PIXELS,
    Detection,
    as_rgb_uint8,
    color_masks,
    components,
    min_areas,
    touch_reach,
)
from engine.eval.detect.fit import (
    BAD_FIT,
    GOOD_FIT,
    NEAR_SCALES,
    SCALES,
    WHOLE_FIT,
    Fit,
    Region,
    classify,
    fit_templates,
    make_region,
    moments,
    needs_refine,
    refine,
)


class _Image:
    """One image: masks, component labels, canvas scale, the occlusion-aware fits."""

    def __init__(self, image: np.ndarray, masks: tuple[np.ndarray, np.ndarray] | None = None):
        self.image = image
        self.h, self.w = image.shape[:2]
        self.fx, self.fy = CANVAS / self.w, CANVAS / self.h
        self.bounds = (0, 0, self.w, self.h)
        self.px_area = self.fx * self.fy
        self.min_area, self.min_touch = min_areas(self.fx, self.fy)
        red, blue = color_masks(image) if masks is None else masks
        self.comps = {"red": components(red), "blue": components(blue)}

    def box(self, color: str, labels: list[int]) -> tuple[int, int, int, int]:
        sel = self.comps[color][2][labels]
        return (
            int(sel[:, 0].min()),
            int(sel[:, 1].min()),
            int((sel[:, 0] + sel[:, 2]).max()),
            int((sel[:, 1] + sel[:, 3]).max()),
        )

    def cheap(self, color: str, k: int) -> Detection:
        """A whole (unoccluded) component, classified from its statistics (see classify)."""
        _, lab, stats, _ = self.comps[color]
        x, y, w, h, area = (int(v) for v in stats[k])
        _, mx, my, spread = moments((lab[y : y + h, x : x + w] == k).view(np.uint8))
        shape = SHAPES[int(classify(area, w, h, my, spread))]
        cx, cy = x + mx, y + my
        if needs_refine(shape, self.w, self.h):
            box = (x, y, x + w, y + h)
            got = refine(lab, k, box, self.bounds, shape, area, self.fx, self.fy)
            if got is not None:
                shape, cx, cy = got[:3]
        return Detection(color, shape, cx * self.fx, cy * self.fy, area * self.px_area)

    def region(
        self, color: str, labels: list[int], max_scale: float, whole: bool = False
    ) -> Region:
        """Region around pieces `labels` of `color`. The other colour's pixels are unknown
        (they may hide part of the object), or with whole=True background (nothing hides it)."""
        lab = self.comps[color][1]
        other = self.comps["blue" if color == "red" else "red"][1] if whole else None
        box = self.box(color, labels)
        return make_region(
            lab, labels, box, self.bounds, self.image, max_scale, self.fx, self.fy, other
        )

    def fit_object(
        self, color: str, labels: list[int], whole: bool = False, scale_hint: float = 1.0
    ) -> Fit | None:
        """Fit one object of `color` made of the pieces `labels`.

        The nominal size first (or the sizes near `scale_hint`, the other object's); all sizes
        when that fits badly. A whole object tries its class from box statistics first.
        """
        nominal = abs(scale_hint - 1.0) < 0.08
        hint = tuple(x for x in SCALES if scale_hint / 1.16 <= x <= scale_hint * 1.16)
        scales = (1.0,) if nominal else hint or (scale_hint,)
        if whole and len(labels) == 1 and nominal:
            # Cheap first: the class from box statistics, a fit in which every other pixel
            # (the other colour included) is background.
            k = labels[0]
            _, lab, stats, _ = self.comps[color]
            x, y, w, h, area = (int(v) for v in stats[k])
            _, _, my, spread = moments((lab[y : y + h, x : x + w] == k).view(np.uint8))
            guess = SHAPES[int(classify(area, w, h, my, spread))]
            got = refine(
                lab, k, (x, y, x + w, y + h), self.bounds, guess, area, self.fx, self.fy, WHOLE_FIT
            )
            if got is not None:
                shape, cx, cy, err, t_area = got
                return Fit(0.0, shape, 1.0, cx, cy, err, err * t_area, float(area))
        region = self.region(color, labels, max(scales), whole)
        fit = fit_templates(region, SHAPES, scales, self.fx, self.fy)
        if nominal and (fit is None or fit.error > WHOLE_FIT):
            # Another renderer's (or a model's) edges: half a pixel fatter or thinner.
            near = self.region(color, labels, max(NEAR_SCALES), whole)
            other = fit_templates(near, SHAPES, (1.0, *NEAR_SCALES), self.fx, self.fy)
            if other is not None and (fit is None or other.hard < fit.hard):
                fit, region = other, near
        if fit is None or fit.error > GOOD_FIT:
            wide = self.region(color, labels, max(SCALES), whole)
            other = fit_templates(wide, SHAPES, SCALES, self.fx, self.fy)
            if other is not None and (fit is None or other.hard < fit.hard):
                fit, region = other, wide
        if fit is not None:
            fit.n_c = region.n_c
        return fit

    def to_detection(self, color: str, fit: Fit, occluded: bool = True) -> Detection:
        return Detection(
            color,
            fit.shape,
            float(fit.cx) * self.fx,
            float(fit.cy) * self.fy,
            fit.n_c * self.px_area,
            occluded=occluded,
            fit_error=round(fit.error, 4),
        )


def _touch_groups(img: _Image) -> tuple[list[tuple[list[int], list[int]]], set, set]:
    """Groups of (red labels, blue labels) that touch each other, and the touching labels."""
    nr, lab_r, st_r, _ = img.comps["red"]
    nb, lab_b, st_b, _ = img.comps["blue"]
    reach = touch_reach(img.fx, img.fy)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1))
    reds = [i for i in range(1, nr) if st_r[i, 4] >= MIN_TOUCH_PIXELS]
    blues = [j for j in range(1, nb) if st_b[j, 4] >= MIN_TOUCH_PIXELS]
    parent: dict = {}  # union-find over red ("r", i) and blue ("b", j) components

    def find(a):
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i in reds:
        xi, yi, wi, hi = (int(v) for v in st_r[i, :4])
        for j in blues:
            xj, yj, wj, hj = (int(v) for v in st_b[j, :4])
            # the red box against the blue box grown by `reach`
            x0, y0 = max(xi, xj - reach), max(yi, yj - reach)
            x1, y1 = min(xi + wi, xj + wj + reach), min(yi + hi, yj + hj + reach)
            if x0 >= x1 or y0 >= y1:
                continue
            bx0, by0 = max(x0 - reach, 0), max(y0 - reach, 0)
            bx1, by1 = min(x1 + reach, img.w), min(y1 + reach, img.h)
            near_b = cv2.dilate((lab_b[by0:by1, bx0:bx1] == j).view(np.uint8), kernel)
            near_b = near_b[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
            if np.any(near_b & (lab_r[y0:y1, x0:x1] == i)):
                parent[find(("r", i))] = find(("b", j))
    groups: dict = {}
    for node in list(parent):
        groups.setdefault(find(node), []).append(node)
    out = []
    for nodes in groups.values():
        rs = sorted(i for c, i in nodes if c == "r")
        bs = sorted(i for c, i in nodes if c == "b")
        out.append((rs, bs))
    touch_r = {i for rs, _ in out for i in rs}
    touch_b = {i for _, bs in out for i in bs}
    return out, touch_r, touch_b


def _resolve_group(img: _Image, rs: list[int], bs: list[int]) -> list[Detection]:
    """A red and a blue object from touching pieces.

    Both stacking orders are hypotheses: the object on top is whole (the other colour counts
    as background around it), the one below may be hidden where the top one is. Blue on top,
    the dataset's order, is tried first and kept when it explains the pixels cleanly; else the
    order with fewer misfit pixels wins. A colour whose pieces do not make one object is fitted
    piece by piece.
    """
    present = {}
    for color, labels in (("red", rs), ("blue", bs)):
        if img.comps[color][2][labels, 4].sum() >= img.min_touch:
            present[color] = labels
    fits: dict[str, Fit | None] = {}
    on_top = None
    if len(present) == 2:
        best = None
        for top, bottom in (("blue", "red"), ("red", "blue")):
            if len(present[top]) > 1:
                continue  # in pieces, so something covers it
            ft = img.fit_object(top, present[top], whole=True)
            if ft is None:
                continue
            fb = img.fit_object(bottom, present[bottom], scale_hint=ft.scale)
            if fb is None:
                continue
            total = ft.hard + fb.hard
            if best is None or total < best[0]:
                best = (total, {top: ft, bottom: fb}, top)
            if ft.error < WHOLE_FIT and fb.error < WHOLE_FIT:
                break
        if best is not None:
            _, fits, on_top = best
    for color, labels in present.items():
        if color not in fits:
            fits[color] = img.fit_object(color, labels)
    out = []
    for color, fit in fits.items():
        labels = present[color]
        if fit is not None and (fit.error <= BAD_FIT or len(labels) == 1):
            out.append(img.to_detection(color, fit, occluded=color != on_top))
            continue
        # The pieces do not make one object: fit each big-enough piece on its own.
        stats = img.comps[color][2]
        for k in labels:
            if stats[k, 4] >= img.min_area:
                f1 = img.fit_object(color, [k])
                if f1 is not None:
                    out.append(img.to_detection(color, f1))
    return out


def detect_one(image: np.ndarray, masks=None) -> list[Detection]:
    img = _Image(image, masks)
    groups, touch_r, touch_b = _touch_groups(img)
    dets: list[Detection] = []
    for color, touching in (("red", touch_r), ("blue", touch_b)):
        n, _, stats, _ = img.comps[color]
        for k in range(1, n):
            if k not in touching and stats[k, 4] >= img.min_area:
                dets.append(img.cheap(color, k))
    for rs, bs in groups:
        dets.extend(_resolve_group(img, rs, bs))
    return dets


def detect(image: np.ndarray) -> list[Detection]:
    """Red and blue objects of one RGB image [H, W, 3] (any size; uint8, or floats in [0, 1])."""
    return detect_one(as_rgb_uint8(image))
