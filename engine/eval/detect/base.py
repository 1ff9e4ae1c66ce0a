"""What a detection is, and the pixels it is found in: colour masks and connected components."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from engine.data.render import CIRCLE_RADIUS, SQUARE_SIDE, TRIANGLE_HEIGHT, TRIANGLE_SIDE

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


def components(mask: np.ndarray):
    """(n, labels, stats, centroids) of a 0/255 mask, 8-connected."""
    return cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_BBDT)


def touch_reach(fx: float, fy: float) -> int:
    """Pixels between red and blue that still count as touching (a fringe of mixed colour)."""
    return max(1, round(2.0 / min(fx, fy)))


def min_areas(fx: float, fy: float) -> tuple[float, float]:
    """Pixel areas below which a component is a speck: alone, and touching the other colour."""
    px_area = fx * fy
    smallest = min(NOMINAL_AREA.values())
    return (
        MIN_AREA_FRAC * smallest / px_area,
        max(MIN_TOUCH_PIXELS, MIN_TOUCH_AREA_FRAC * smallest / px_area),
    )


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
