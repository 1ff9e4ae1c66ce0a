"""Find the red and blue objects of an image: their colour, shape and centre.

Any image size: centres are in units of the 128 px canvas, so the 64 px and the 256 px image
of a scene give the same centres. Generated (imperfect) images too: colours are thresholded
with a tolerance (red: R above G and B by COLOR_MARGIN; background: any grey), specks far below
an object's size are ignored, and shapes are told apart by scale-free features.

Objects that do not touch the other colour are whole. OpenCV's contours (or connected
components) give each one's box and its pixel moments give area, centroid and spread; the
class comes from the box fill ratio (square 1, circle pi/4, triangle 1/2), the height of the
centroid in the box (apex-up triangle 2/3, others 1/2) and the second moments (see _classify).
The centre is the centroid, which is the renderer's centre for all three shapes; where a
rasterised shape's centroid sits off it (triangles, small images, sizes that are not a
multiple of 64) a template fit at the nominal size gives it exactly.

Objects that touch the other colour may be partly hidden: the dataset draws object 2 over
object 1, so about a quarter of the scenes have a red object cut by the blue one, sometimes in
two pieces, and a model may draw either on top. Same-colour pieces touching the same
other-colour object are merged, and both stacking orders are tried as hypotheses. The object on
top must be whole; the one beneath is fitted with occlusion-aware templates: OpenCV's
matchTemplate scores each placement of each shape as (object pixels covered) - (background
pixels covered) - a small penalty per covered pixel of the other colour, which counts as
unknown. The hidden part therefore costs (almost) nothing and the best placement gives the
hidden object's centre, not the biased centroid of its visible part. Placements step by one
canvas unit (sub-pixel template phases), so 64 px images are located as exactly as 128 px
ones; placements that fit equally well are averaged. Sizes near the nominal one are tried
first (edges half a pixel fatter or thinner: another renderer, a model), then 0.6x to 1.5x,
the object on top setting the size of the one beneath.

Batches (detect_batch) stack same-size images and threshold and trace them with single OpenCV
calls; only images where the colours touch take the per-image path.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache

import cv2
import numpy as np

from engine.data.render import CIRCLE_RADIUS, SQUARE_SIDE, TRIANGLE_HEIGHT, TRIANGLE_SIDE
from engine.data.scenes import CANVAS, SHAPES

# A pixel is "red" when R exceeds both G and B by this much (and "blue" likewise); background
# is any pixel with little saturation. Everything else (purple fringes, dark blobs) is unknown.
COLOR_MARGIN = 60
GRAY_SPREAD = 48

NOMINAL_AREA = {
    "circle": math.pi * CIRCLE_RADIUS**2,
    "square": SQUARE_SIDE**2,
    "triangle": TRIANGLE_SIDE * TRIANGLE_HEIGHT / 2,
}
# Components below these fractions of the smallest nominal object are specks and ignored; a
# piece touching the other colour may be the visible sliver of a hidden object and is kept down
# to a much smaller size.
MIN_AREA_FRAC = 0.10
MIN_TOUCH_AREA_FRAC = 0.01
MIN_TOUCH_PIXELS = 2

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
CHUNK_PIXELS = 8 * 128 * 128  # images per stack: this many pixels keeps a stack in cache
TIE_TOLERANCE = 0.5  # placements within this many pixels of the best fit equally well

# Template fits: an error fraction below this is a good fit at the nominal size; otherwise
# scales are searched.
GOOD_FIT = 0.06
WHOLE_FIT = 0.02  # an object touching the other colour fitting this well is seen whole
BAD_FIT = 0.30
SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5)
# Sizes about half a pixel (at 128 px) off nominal: fatter or thinner edges of the same object.
NEAR_SCALES = (0.95, 1.05)


@dataclass(frozen=True)
class Detection:
    """One object: its colour, shape, centre (128 px canvas units) and visible area."""

    color: str
    shape: str
    cx: float
    cy: float
    area: float  # visible pixels, in canvas units squared
    occluded: bool = False  # touches the other colour and was fitted as lying beneath it
    fit_error: float = 0.0  # objects touching the other colour: misfit pixels / template area

    def to_record(self) -> dict:
        rec = asdict(self)
        rec["cx"] = round(float(self.cx), 2)
        rec["cy"] = round(float(self.cy), 2)
        rec["area"] = round(float(self.area), 1)
        rec["occluded"] = bool(self.occluded)
        rec["fit_error"] = round(float(self.fit_error), 4)
        return rec


# ---------------------------------------------------------------------------------------------
# colour masks


def color_masks(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 0/255 masks (red, blue) of one contiguous RGB uint8 image [H, W, 3].

    Per image with OpenCV (which releases the GIL, so a thread pool scales); measured faster
    than numpy over a whole batch, whose int16 temporaries cost more than they save.
    """
    r, g, b = cv2.split(image)
    red = cv2.compare(cv2.subtract(r, cv2.max(g, b)), COLOR_MARGIN, cv2.CMP_GT)
    blue = cv2.compare(cv2.subtract(b, cv2.max(r, g)), COLOR_MARGIN, cv2.CMP_GT)
    return red, blue


def background_mask(image: np.ndarray) -> np.ndarray:
    """bool mask of background: pixels with little colour (any grey level)."""
    r, g, b = cv2.split(image)
    spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    return cv2.compare(spread, GRAY_SPREAD, cv2.CMP_LT) > 0


# ---------------------------------------------------------------------------------------------
# templates


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


# ---------------------------------------------------------------------------------------------
# fitting


def _lam(fx: float, fy: float) -> float:
    """Cost of covering an unknown pixel: small enough that shifting a template by one pixel
    never trades an object pixel for fewer unknown ones, so it only breaks ties."""
    return 0.5 / (2 * 19.0 / min(fx, fy) + 4)


@dataclass
class _Fit:
    cost: float
    shape: str
    scale: float
    cx: float  # continuous pixel coordinates in the label array's frame
    cy: float
    error: float = 0.0  # (missed object pixels + covered background pixels) / template area
    hard: float = 0.0  # missed object pixels + covered background pixels
    n_c: float = 0.0  # object pixels fitted


@dataclass
class _Region:
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


def _region(
    lab: np.ndarray,
    labels: list[int],
    bbox: tuple[int, int, int, int],
    bounds: tuple[int, int, int, int],
    image: np.ndarray | None,
    max_scale: float,
    fx: float,
    fy: float,
    other: np.ndarray | None = None,
) -> _Region:
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
    return _Region(W, C, B, ox, oy, bbox, n_c)


def _fit(
    r: _Region, shapes: tuple[str, ...], scales: tuple[float, ...], fx: float, fy: float
) -> _Fit | None:
    """Best placement over shapes x scales x sub-pixel phases, limited to placements that
    cover the pieces' whole box (plus a small margin)."""
    best: _Fit | None = None
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
                        best = _Fit(cost, shape, scale, r.ox + px + t.ox, r.oy + py + t.oy)
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


def _classify(area, w, h, cy_in_box, spread) -> np.ndarray:
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


def _moments(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(area, centroid x, centroid y, spread) of a 0/non-0 crop, centroid in pixel units."""
    mo = cv2.moments(mask, True)
    a = mo["m00"]
    h, w = mask.shape
    return a, mo["m10"] / a + 0.5, mo["m01"] / a + 0.5, (mo["mu20"] / w**2 + mo["mu02"] / h**2) / a


def _refine(
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


def _needs_refine(shape: str, w: int, h: int) -> bool:
    """Whether a whole object's pixel centroid may sit off its centre: always for triangles;
    for every shape in small images, or where canvas positions do not fall on pixel edges or
    centres (sizes that are not a multiple of 64)."""
    return shape == "triangle" or min(w, h) <= SMALL_IMAGE or w % 64 != 0 or h % 64 != 0


def _components(mask: np.ndarray):
    """(n, labels, stats, centroids) of a 0/255 mask, 8-connected."""
    return cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_BBDT)


def _touch_reach(fx: float, fy: float) -> int:
    """Pixels between red and blue that still count as touching (a fringe of mixed colour)."""
    return max(1, round(2.0 / min(fx, fy)))


class _Image:
    """One image: masks, component labels, canvas scale, the occlusion-aware fits."""

    def __init__(self, image: np.ndarray, masks: tuple[np.ndarray, np.ndarray] | None = None):
        self.image = image
        self.h, self.w = image.shape[:2]
        self.fx, self.fy = CANVAS / self.w, CANVAS / self.h
        self.bounds = (0, 0, self.w, self.h)
        self.px_area = self.fx * self.fy
        self.min_area, self.min_touch = _min_areas(self.fx, self.fy)
        red, blue = color_masks(image) if masks is None else masks
        self.comps = {"red": _components(red), "blue": _components(blue)}

    def box(self, color: str, labels: list[int]) -> tuple[int, int, int, int]:
        sel = self.comps[color][2][labels]
        return (
            int(sel[:, 0].min()),
            int(sel[:, 1].min()),
            int((sel[:, 0] + sel[:, 2]).max()),
            int((sel[:, 1] + sel[:, 3]).max()),
        )

    def cheap(self, color: str, k: int) -> Detection:
        """A whole (unoccluded) component, classified from its statistics (see _classify)."""
        _, lab, stats, _ = self.comps[color]
        x, y, w, h, area = (int(v) for v in stats[k])
        _, mx, my, spread = _moments((lab[y : y + h, x : x + w] == k).view(np.uint8))
        shape = SHAPES[int(_classify(area, w, h, my, spread))]
        cx, cy = x + mx, y + my
        if _needs_refine(shape, self.w, self.h):
            box = (x, y, x + w, y + h)
            got = _refine(lab, k, box, self.bounds, shape, area, self.fx, self.fy)
            if got is not None:
                shape, cx, cy = got[:3]
        return Detection(color, shape, cx * self.fx, cy * self.fy, area * self.px_area)

    def region(
        self, color: str, labels: list[int], max_scale: float, whole: bool = False
    ) -> _Region:
        """Region around pieces `labels` of `color`. The other colour's pixels are unknown
        (they may hide part of the object), or with whole=True background (nothing hides it)."""
        lab = self.comps[color][1]
        other = self.comps["blue" if color == "red" else "red"][1] if whole else None
        box = self.box(color, labels)
        return _region(
            lab, labels, box, self.bounds, self.image, max_scale, self.fx, self.fy, other
        )

    def fit_object(
        self, color: str, labels: list[int], whole: bool = False, scale_hint: float = 1.0
    ) -> _Fit | None:
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
            _, _, my, spread = _moments((lab[y : y + h, x : x + w] == k).view(np.uint8))
            guess = SHAPES[int(_classify(area, w, h, my, spread))]
            got = _refine(
                lab, k, (x, y, x + w, y + h), self.bounds, guess, area, self.fx, self.fy, WHOLE_FIT
            )
            if got is not None:
                shape, cx, cy, err, t_area = got
                return _Fit(0.0, shape, 1.0, cx, cy, err, err * t_area, float(area))
        region = self.region(color, labels, max(scales), whole)
        fit = _fit(region, SHAPES, scales, self.fx, self.fy)
        if nominal and (fit is None or fit.error > WHOLE_FIT):
            # Another renderer's (or a model's) edges: half a pixel fatter or thinner.
            near = self.region(color, labels, max(NEAR_SCALES), whole)
            other = _fit(near, SHAPES, (1.0, *NEAR_SCALES), self.fx, self.fy)
            if other is not None and (fit is None or other.hard < fit.hard):
                fit, region = other, near
        if fit is None or fit.error > GOOD_FIT:
            wide = self.region(color, labels, max(SCALES), whole)
            other = _fit(wide, SHAPES, SCALES, self.fx, self.fy)
            if other is not None and (fit is None or other.hard < fit.hard):
                fit, region = other, wide
        if fit is not None:
            fit.n_c = region.n_c
        return fit

    def to_detection(self, color: str, fit: _Fit, occluded: bool = True) -> Detection:
        return Detection(
            color,
            fit.shape,
            float(fit.cx) * self.fx,
            float(fit.cy) * self.fy,
            fit.n_c * self.px_area,
            occluded=occluded,
            fit_error=round(fit.error, 4),
        )


def _min_areas(fx: float, fy: float) -> tuple[float, float]:
    """Pixel areas below which a component is a speck: alone, and touching the other colour."""
    px_area = fx * fy
    smallest = min(NOMINAL_AREA.values())
    return (
        MIN_AREA_FRAC * smallest / px_area,
        max(MIN_TOUCH_PIXELS, MIN_TOUCH_AREA_FRAC * smallest / px_area),
    )


def _touch_groups(img: _Image) -> tuple[list[tuple[list[int], list[int]]], set, set]:
    """Groups of (red labels, blue labels) that touch each other, and the touching labels."""
    nr, lab_r, st_r, _ = img.comps["red"]
    nb, lab_b, st_b, _ = img.comps["blue"]
    reach = _touch_reach(img.fx, img.fy)
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
    fits: dict[str, _Fit | None] = {}
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


def _detect_one(image: np.ndarray, masks=None) -> list[Detection]:
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
    return _detect_one(as_rgb_uint8(image))


# ---------------------------------------------------------------------------------------------
# batches


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
    reach = _touch_reach(fx, fy)
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
    min_area, _ = _min_areas(fx, fy)
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
                area, mx, my, spread = _moments(crop)
                if area >= min_area:
                    found.append((i, (x, y, w, h), area, x + mx, y + my, my, spread))
        if not found:
            continue
        arr = np.array([(f[2], f[1][2], f[1][3], f[5], f[6]) for f in found])
        codes = _classify(*arr.T).tolist()
        for (i, (x, y, w, h), area, cx, cy, _, _), code in zip(found, codes, strict=True):
            shape = SHAPES[code]
            if _needs_refine(shape, Wd, H):
                bounds = (0, i * Hp, Wd, i * Hp + H)
                got = _refine(m, None, (x, y, x + w, y + h), bounds, shape, area, fx, fy)
                if got is not None:
                    shape, cx, cy = got[:3]
            out[i].append(Detection(color, shape, cx * fx, (cy - i * Hp) * fy, area * px_area))
    for i in np.nonzero(touching)[0]:
        out[i] = _detect_one(images[i], (red[i * H : (i + 1) * H], blue[i * H : (i + 1) * H]))
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


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """A contiguous uint8 RGB [H, W, 3] view or copy of an image: grey is repeated, alpha
    dropped, floats in [0, 1] scaled to 0..255."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)
