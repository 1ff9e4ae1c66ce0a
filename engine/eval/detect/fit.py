"""Shape templates and fits: whole objects classified from box statistics, exact centres from
template fits, and occlusion-aware fits of objects that may lie beneath the other colour."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from engine.data.render import CIRCLE_RADIUS, SQUARE_SIDE, TRIANGLE_HEIGHT
from engine.data.scenes import CANVAS, SHAPES
from engine.eval.detect.base import NOMINAL_AREA, background_mask

# Unoccluded shapes: fill ratio of the bounding box (square 1, circle pi/4, triangle 1/2) and
# the height of the pixel centroid within the box (1/2, except 2/3 for the apex-up triangle).
FILL_SQUARE_MIN = 0.895
FILL_SQUARE_ALT = 0.8
SPREAD_SQUARE = 0.145
FILL_TRIANGLE_MAX = 0.58
TRIANGLE_V_MIN = 0.575
# Images at most this big also check an unoccluded object's class against the templates.
SMALL_IMAGE = 48
NEAR_NOMINAL = (0.7, 1.4)
FIT_MARGIN = 2  # pixels a placement may stray beyond covering the pieces' box
TIE_TOLERANCE = 0.5  # placements within this many pixels of the best fit equally well

# Template fits: an error fraction below this is a good fit at the nominal size; otherwise
# scales are searched.
GOOD_FIT = 0.06
WHOLE_FIT = 0.02  # an object touching the other colour fitting this well is seen whole
BAD_FIT = 0.30
SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5)
# Sizes about half a pixel (at 128 px) off nominal: fatter or thinner edges of the same object.
NEAR_SCALES = (0.95, 1.05)


def _inside(shape: str, X: np.ndarray, Y: np.ndarray, scale: float) -> np.ndarray:
    """The renderer's inside test for offsets (X, Y) from the centre, in canvas units."""
    if shape == "circle":
        return X * X + Y * Y <= (CIRCLE_RADIUS * scale) ** 2
    if shape == "square":
        h = SQUARE_SIDE * scale / 2
        return (np.abs(X) < h) & (np.abs(Y) < h)
    h = TRIANGLE_HEIGHT * scale
    s3 = math.sqrt(3)
    return (Y <= h / 3) & (Y >= -2 * h / 3 - s3 * X) & (Y >= -2 * h / 3 + s3 * X)


@dataclass(frozen=True)
class _Template:
    mask: np.ndarray  # float32 0/1
    ox: float  # centre in continuous pixel coordinates of the template array
    oy: float
    area: float


@lru_cache(maxsize=4096)
def _template(shape: str, scale: float, fx: float, fy: float, phx: float, phy: float) -> _Template:
    """Shape at `scale`, pixel sizes (fx, fy) canvas units, centre at sub-pixel phase (phx, phy)."""
    ext = 19.0 * scale  # > every shape's reach from its centre (triangle apex 18.5)
    hx, hy = int(math.ceil(ext / fx)) + 2, int(math.ceil(ext / fy)) + 2
    ox, oy = hx + phx, hy + phy
    X = ((np.arange(2 * hx + 1) + 0.5) - ox) * fx
    Y = ((np.arange(2 * hy + 1) + 0.5) - oy) * fy
    m = _inside(shape, X[None, :], Y[:, None], scale)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:  # smaller than a pixel: keep the pixel under the centre
        m[int(oy), int(ox)] = True
        ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = np.ascontiguousarray(m[y0:y1, x0:x1], dtype=np.float32)
    return _Template(m, ox - x0, oy - y0, float(m.sum()))


@lru_cache(maxsize=64)
def _phases(f: float) -> tuple[float, ...]:
    """Sub-pixel centre offsets for template placements, f canvas units per pixel.

    Those of the integer canvas positions the dataset uses when there are at most four (so
    fits are exact at 32, 64, 96, 128, 256 px...), else about one canvas unit apart.
    """
    exact = sorted({round((c / f) % 1.0, 6) % 1.0 for c in range(CANVAS)})
    if len(exact) <= 4:
        return tuple(exact)
    n = max(1, min(4, math.ceil(f - 0.01)))
    return tuple(k / n for k in range(n))


def _lam(fx: float, fy: float) -> float:
    """Cost of covering an unknown pixel: small enough that shifting a template by one pixel
    never trades an object pixel for fewer unknown ones, so it only breaks ties."""
    return 0.5 / (2 * 19.0 / min(fx, fy) + 4)


@dataclass
class Fit:
    cost: float
    shape: str
    scale: float
    cx: float  # continuous pixel coordinates in the label array's frame
    cy: float
    error: float = 0.0  # (missed object pixels + covered background pixels) / template area
    hard: float = 0.0  # missed object pixels + covered background pixels
    n_c: float = 0.0  # object pixels fitted


@dataclass
class Region:
    """Score image around one object's pieces: object +1, background -1, unknown -lambda.

    Pixels outside the image are unknown, so an object cut by the image border still fits.
    """

    W: np.ndarray  # float32 scores
    C: np.ndarray  # bool, object pixels
    B: np.ndarray  # bool, background pixels
    ox: int  # position of W[0, 0] in the label array
    oy: int
    bbox: tuple[int, int, int, int]  # pieces' box (x0, y0, x1, y1) in the label array
    n_c: float  # object pixels


def make_region(
    lab: np.ndarray,
    labels: list[int],
    bbox: tuple[int, int, int, int],
    bounds: tuple[int, int, int, int],
    image: np.ndarray | None,
    max_scale: float,
    fx: float,
    fy: float,
    other: np.ndarray | None = None,
) -> Region:
    """Region around component(s) `labels` of `lab`, big enough for templates up to max_scale.

    `bounds` (x0, y0, x1, y1) is the image inside `lab` (a batch stacks images in one array);
    Background pixels are those of `image` (same frame as `lab`) with little colour; without an
    image every pixel that is not the object is background. Pixels where `other` (an array in
    the same frame) is non-zero count as background too: the object is whole, on top.
    """
    x0, y0, x1, y1 = bbox
    lam = _lam(fx, fy)
    tw = 2 * int(math.ceil(19.0 * max_scale / fx)) + 3
    th = 2 * int(math.ceil(19.0 * max_scale / fy)) + 3
    rx = max(tw - (x1 - x0), 0) + FIT_MARGIN + 1
    ry = max(th - (y1 - y0), 0) + FIT_MARGIN + 1
    ox, oy = x0 - rx, y0 - ry
    shape = (y1 - y0 + 2 * ry, x1 - x0 + 2 * rx)
    W = np.full(shape, -lam, dtype=np.float32)
    C = np.zeros(shape, dtype=bool)
    B = np.zeros(shape, dtype=bool)
    ix0, iy0 = max(ox, bounds[0]), max(oy, bounds[1])
    ix1, iy1 = min(ox + shape[1], bounds[2]), min(oy + shape[0], bounds[3])
    sub = lab[iy0:iy1, ix0:ix1]
    c = (sub == labels[0]) if len(labels) == 1 else np.isin(sub, labels)
    if image is None:
        b = ~c
    else:
        b = background_mask(image[iy0:iy1, ix0:ix1])
        if other is not None:
            b |= other[iy0:iy1, ix0:ix1] > 0
        b &= ~c
    sl = (slice(iy0 - oy, iy1 - oy), slice(ix0 - ox, ix1 - ox))
    C[sl] = c
    B[sl] = b
    Wi = W[sl]
    Wi[c] = 1.0
    Wi[b] = -1.0
    n_c = float(np.count_nonzero(c))
    return Region(W, C, B, ox, oy, bbox, n_c)


def fit_templates(
    r: Region, shapes: tuple[str, ...], scales: tuple[float, ...], fx: float, fy: float
) -> Fit | None:
    """Best placement over shapes x scales x sub-pixel phases, limited to placements that
    cover the pieces' whole box (plus a small margin)."""
    best: Fit | None = None
    where = None
    x0, y0 = r.bbox[0] - r.ox, r.bbox[1] - r.oy
    x1, y1 = r.bbox[2] - r.ox, r.bbox[3] - r.oy
    H, Wd = r.W.shape
    m = FIT_MARGIN
    maps = []
    for shape in shapes:
        for scale in scales:
            for phy in _phases(fy):
                for phx in _phases(fx):
                    t = _template(shape, scale, fx, fy, phx, phy)
                    th, tw = t.mask.shape
                    lx = max(min(x1 - tw, x0) - m, 0)
                    hx = min(max(x1 - tw, x0) + m, Wd - tw)
                    ly = max(min(y1 - th, y0) - m, 0)
                    hy = min(max(y1 - th, y0) + m, H - th)
                    if hx < lx or hy < ly:
                        continue
                    win = r.W[ly : hy + th, lx : hx + tw]
                    res = cv2.matchTemplate(win, t.mask, cv2.TM_CCORR)
                    _, val, _, loc = cv2.minMaxLoc(res)
                    cost = r.n_c - val
                    maps.append((res, lx, ly, t, shape, scale))
                    if best is None or cost < best.cost - 1e-3:
                        px, py = lx + loc[0], ly + loc[1]
                        best = Fit(cost, shape, scale, r.ox + px + t.ox, r.oy + py + t.oy)
                        where = (px, py, t)
    if best is None:
        return None
    px, py, t = where
    th, tw = t.mask.shape
    tm = t.mask > 0
    covered_c = np.count_nonzero(r.C[py : py + th, px : px + tw] & tm)
    covered_b = np.count_nonzero(r.B[py : py + th, px : px + tw] & tm)
    best.hard = float((r.n_c - covered_c) + covered_b)
    best.error = best.hard / max(t.area, 1.0)
    # Placements that fit as well (a small image, or a sliver of a hidden object, does not
    # pin the centre to one canvas unit): report their mean centre.
    thr = r.n_c - best.cost - TIE_TOLERANCE
    ties = [m for m in maps if m[4] == best.shape and m[5] == best.scale]
    if sum(np.count_nonzero(m[0] >= thr) for m in ties) > 1:
        sx = sy = 0.0
        n = 0
        for res, lx, ly, t, _, _ in ties:
            ys, xs = np.nonzero(res >= thr)
            n += len(xs)
            sx += float(xs.sum()) + len(xs) * (r.ox + lx + t.ox)
            sy += float(ys.sum()) + len(ys) * (r.oy + ly + t.oy)
        best.cx, best.cy = sx / n, sy / n
    return best


def classify(area, w, h, cy_in_box, spread) -> np.ndarray:
    """Indices into SHAPES of whole components, vectorised over components.

    Features: fill ratio of the box (square 1, circle pi/4, triangle 1/2), height of the
    centroid in the box (1/2, apex-up triangle 2/3) and second moments over the squared box
    sides (square 1/6, circle 1/8, triangle 7/72), which keeps squares whose corners JPEG-like
    noise has eaten apart from circles. cy_in_box is the centroid's distance below the box top,
    spread = mu20 / (area w^2) + mu02 / (area h^2).
    """
    area, w, h = (np.asarray(a, dtype=np.float64) for a in (area, w, h))
    fill = area / (w * h)
    v = np.asarray(cy_in_box, dtype=np.float64) / h
    spread = np.asarray(spread, dtype=np.float64)
    tri = (v >= TRIANGLE_V_MIN) | (fill < FILL_TRIANGLE_MAX)
    square = ~tri & (
        (fill >= FILL_SQUARE_MIN) | ((fill >= FILL_SQUARE_ALT) & (spread >= SPREAD_SQUARE))
    )
    return np.where(tri, 2, np.where(square, 1, 0))


def moments(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(area, centroid x, centroid y, spread) of a 0/non-0 crop, centroid in pixel units."""
    mo = cv2.moments(mask, True)
    a = mo["m00"]
    h, w = mask.shape
    return a, mo["m10"] / a + 0.5, mo["m01"] / a + 0.5, (mo["mu20"] / w**2 + mo["mu02"] / h**2) / a


def refine(
    lab: np.ndarray,
    k: int | None,
    box: tuple[int, int, int, int],
    bounds: tuple[int, int, int, int],
    shape: str,
    area_px: float,
    fx: float,
    fy: float,
    max_error: float = GOOD_FIT,
) -> tuple[str, float, float, float, float] | None:
    """Exact centre (and, in small images, class) of a whole object near the nominal size.

    A rasterised triangle's pixel centroid sits a fraction of a pixel off its true centroid
    (the base row is cut short), and in small images every shape's does; a template fit is
    exact. The object is whole, so every other pixel counts as background and the cost of a
    placement is exactly (missed + spilled) pixels. Returns (shape, cx, cy, error, template
    area), the centre in continuous pixel coordinates of `lab`, or None when the error is
    max_error or more. The object is `lab == k`, or `lab > 0` for k None.
    """
    ratio = area_px * fx * fy / NOMINAL_AREA[shape]
    if not NEAR_NOMINAL[0] < ratio < NEAR_NOMINAL[1]:
        return None
    small = (bounds[2] - bounds[0]) <= SMALL_IMAGE or (bounds[3] - bounds[1]) <= SMALL_IMAGE
    m = FIT_MARGIN + 2
    x0, y0, x1, y1 = box[0] - m, box[1] - m, box[2] + m, box[3] + m
    W = np.full((y1 - y0, x1 - x0), -_lam(fx, fy), dtype=np.float32)
    ix0, iy0 = max(x0, bounds[0]), max(y0, bounds[1])
    ix1, iy1 = min(x1, bounds[2]), min(y1, bounds[3])
    sub = lab[iy0:iy1, ix0:ix1]
    W[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = (
        (sub > 0) if k is None else (sub == k)
    ) * 2.0 - 1.0
    best = None
    for scales in ((1.0,), NEAR_SCALES):
        if best is not None and best[0] < WHOLE_FIT:
            break
        for s in SHAPES if small else (shape,):
            for scale in scales:
                for phy in _phases(fy):
                    for phx in _phases(fx):
                        t = _template(s, scale, fx, fy, phx, phy)
                        if t.mask.shape[0] > W.shape[0] or t.mask.shape[1] > W.shape[1]:
                            continue
                        res = cv2.matchTemplate(W, t.mask, cv2.TM_CCORR)
                        _, val, _, loc = cv2.minMaxLoc(res)
                        err = (area_px - val) / t.area
                        if best is None or err < best[0] - 1e-6:
                            best = (err, s, x0 + loc[0] + t.ox, y0 + loc[1] + t.oy, t.area)
    if best is None or best[0] >= max_error:
        return None
    err, s, cx, cy, t_area = best
    return s, cx, cy, max(err, 0.0), t_area


def needs_refine(shape: str, w: int, h: int) -> bool:
    """Whether a whole object's pixel centroid may sit off its centre: always for triangles;
    for every shape in small images, or where canvas positions do not fall on pixel edges or
    centres (sizes that are not a multiple of 64)."""
    return shape == "triangle" or min(w, h) <= SMALL_IMAGE or w % 64 != 0 or h % 64 != 0
