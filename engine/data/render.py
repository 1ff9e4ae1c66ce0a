"""Rasterise scenes without antialiasing: every pixel is background, pure red or pure blue.

A pixel belongs to a shape when its centre lies inside it, measured in canvas coordinates, so
any output size is the 128 px scene scaled. Object 2 is drawn over object 1.
Circle radius 16; square side 32, axis-aligned; equilateral triangle side 32, apex up, centred
on its centroid.
"""

from __future__ import annotations

import math

import numpy as np

from engine.data.scenes import BACKGROUND, CANVAS, COLORS, Scene

CIRCLE_RADIUS = 16.0
SQUARE_SIDE = 32.0
TRIANGLE_SIDE = 32.0
TRIANGLE_HEIGHT = TRIANGLE_SIDE * math.sqrt(3) / 2


def _pixel_centres(size: int) -> np.ndarray:
    return (np.arange(size, dtype=np.float64) + 0.5) * (CANVAS / size)


def shape_mask(shape: str, cx: float, cy: float, size: int = CANVAS) -> np.ndarray:
    """Boolean [size, size] mask of one shape centred at (cx, cy) in canvas pixels."""
    c = _pixel_centres(size)
    X = c[None, :] - cx
    Y = c[:, None] - cy
    if shape == "circle":
        return X * X + Y * Y <= CIRCLE_RADIUS**2
    if shape == "square":
        h = SQUARE_SIDE / 2
        return (np.abs(X) < h) & (np.abs(Y) < h)
    if shape == "triangle":
        # Apex at -2h/3, base at +h/3 (y down); the slanted sides have slope +-sqrt(3).
        h = TRIANGLE_HEIGHT
        base = Y <= h / 3
        s3 = math.sqrt(3)
        left = Y >= -2 * h / 3 - s3 * X  # right-hand side edge seen from inside
        right = Y >= -2 * h / 3 + s3 * X
        return base & left & right
    raise ValueError(f"unknown shape {shape!r}; expected circle, square or triangle")


def render(scene: Scene, size: int = CANVAS) -> np.ndarray:
    """uint8 [size, size, 3] RGB image of the scene."""
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    img[shape_mask(scene.shape1, scene.x1, scene.y1, size)] = COLORS[scene.color1]
    img[shape_mask(scene.shape2, scene.x2, scene.y2, size)] = COLORS[scene.color2]
    return img


def render_batch(scenes: list[Scene], size: int = CANVAS) -> np.ndarray:
    """uint8 [n, size, size, 3]."""
    out = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for k, s in enumerate(scenes):
        out[k] = render(s, size)
    return out
