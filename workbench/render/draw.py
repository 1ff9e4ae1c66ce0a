"""Drawing in terminal cells: a perceptual colormap, heatmaps, half-block images, braille plots.

Colours are given as 24-bit RGB; Rich/Textual turn them into the nearest of 256 colours when the
terminal has no truecolor (``COLORTERM`` unset), so one code path serves both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from rich.color import Color
from rich.style import Style
from rich.text import Text

# viridis (perceptually uniform, readable with the common colour-vision deficiencies)
_VIRIDIS = [
    (68, 1, 84),
    (72, 40, 120),
    (62, 74, 137),
    (49, 104, 142),
    (38, 130, 142),
    (31, 158, 137),
    (53, 183, 121),
    (110, 206, 88),
    (181, 222, 43),
    (253, 231, 37),
]

# Okabe-Ito palette for categorical series (colour-blind safe)
SERIES_COLORS = [
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#F0E442",  # yellow
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#999999",  # grey
]

_CACHE: dict[int, tuple[int, int, int]] = {}


def cmap(v: float) -> tuple[int, int, int]:
    """Viridis colour for v in [0, 1] (clipped; NaN -> darkest)."""
    if v is None or not math.isfinite(v):
        v = 0.0
    v = min(1.0, max(0.0, v))
    key = int(v * 255)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    x = key / 255 * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    f = x - i
    lo, hi = _VIRIDIS[i], _VIRIDIS[i + 1]
    r, g, b = (int(round(lo[k] + (hi[k] - lo[k]) * f)) for k in range(3))
    _CACHE[key] = (r, g, b)
    return r, g, b


@lru_cache(maxsize=8192)
def _rgb(r: int, g: int, b: int) -> Color:
    return Color.from_rgb(r, g, b)


def rgb(c: Sequence[int]) -> Color:
    return _rgb(int(c[0]), int(c[1]), int(c[2]))


@lru_cache(maxsize=16384)
def cell_style(
    fg: tuple[int, int, int] | None, bg: tuple[int, int, int] | None, bold: bool = False
) -> Style:
    """One shared Style per colour pair (drawing thousands of cells reuses them)."""
    return Style(
        color=_rgb(*fg) if fg is not None else None,
        bgcolor=_rgb(*bg) if bg is not None else None,
        bold=bold or None,
    )


def contrast(c: Sequence[int]) -> Color:
    lum = (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) / 255
    return Color.from_rgb(0, 0, 0) if lum > 0.5 else Color.from_rgb(255, 255, 255)


def norm(v: float, lo: float, hi: float) -> float:
    if v is None or not isinstance(v, int | float) or not math.isfinite(v):
        return 0.0
    return 0.5 if hi <= lo else (v - lo) / (hi - lo)


def value_range(maps: Sequence[Sequence[Sequence[float]]]) -> tuple[float, float]:
    vals = [
        v for m in maps for row in m for v in row if isinstance(v, int | float) and math.isfinite(v)
    ]
    if not vals:
        return 0.0, 1.0
    return min(vals), max(vals)


_RAMP_GLYPHS = "▁▂▃▄▅▆▇█"


def legend_strip(width: int) -> Text:
    """Bars rising from low to high, coloured as the map cells (readable without colour)."""
    t = Text()
    n = max(width - 1, 1)
    for i in range(width):
        glyph = _RAMP_GLYPHS[round(i / n * (len(_RAMP_GLYPHS) - 1))]
        t.append(glyph, cell_style(cmap(i / n), None))
    return t


def legend(lo: float, hi: float, width: int = 16, label: str = "") -> Text:
    """A colour key that reads as one: `label lo ▁▂▃…█ hi`, the bars rising with the value (so it
    still reads in monochrome) and coloured as the cells they describe."""
    t = Text(f"{label} " if label else "", style="dim")
    t.append(f"{lo:.2f} ")
    t.append_text(legend_strip(width))
    t.append(f" {hi:.2f}")
    return t


def heat_block(
    m: Sequence[Sequence[float]], lo: float, hi: float, cell_w: int = 2, cell_h: int = 1
) -> list[Text]:
    """An 8x8 (or any) map as coloured cells, cell_w columns by cell_h rows each."""
    lines: list[Text] = []
    for row in m:
        t = Text()
        for v in row:
            t.append(" " * cell_w, cell_style(None, cmap(norm(v, lo, hi))))
        lines.extend(t.copy() for _ in range(cell_h))
    return lines


def resize_nearest(
    img: Sequence[Sequence[Sequence[int]]], h: int, w: int
) -> list[list[Sequence[int]]]:
    H, W = len(img), len(img[0]) if img else 0
    if not H or not W:
        return [[(0, 0, 0)] * w for _ in range(h)]
    return [
        [img[min(H - 1, (y * H) // h)][min(W - 1, (x * W) // w)] for x in range(w)]
        for y in range(h)
    ]


def downsample_mean(
    img: Sequence[Sequence[Sequence[int]]], h: int, w: int
) -> list[list[tuple[int, int, int]]]:
    """Block-average to h x w (falls back to nearest when enlarging or not divisible)."""
    H, W = len(img), len(img[0]) if img else 0
    if not H or not W or H % h or W % w or H < h:
        return [[(p[0], p[1], p[2]) for p in row] for row in resize_nearest(img, h, w)]
    fy, fx = H // h, W // w
    out = []
    for y in range(h):
        row = []
        for x in range(w):
            acc = [0, 0, 0]
            for yy in range(y * fy, (y + 1) * fy):
                for xx in range(x * fx, (x + 1) * fx):
                    p = img[yy][xx]
                    acc[0] += p[0]
                    acc[1] += p[1]
                    acc[2] += p[2]
            n = fy * fx
            row.append((acc[0] // n, acc[1] // n, acc[2] // n))
        out.append(row)
    return out


def halfblock_image(img: Sequence[Sequence[Sequence[int]]], width: int = 16) -> list[Text]:
    """An RGB image drawn with '▀' cells: each cell is one pixel wide and two pixels tall."""
    h = width if width % 2 == 0 else width + 1
    small = downsample_mean(img, h, width)
    lines = []
    for y in range(0, h, 2):
        t = Text()
        run, run_style = 0, None
        for x in range(width):
            style = cell_style(tuple(small[y][x]), tuple(small[y + 1][x]))
            if style is run_style:
                run += 1
                continue
            if run:
                t.append("▀" * run, run_style)
            run, run_style = 1, style
        if run:
            t.append("▀" * run, run_style)
        lines.append(t)
    return lines


def hstack(
    blocks: Sequence[Sequence[Text]], gap: int = 2, widths: Sequence[int] | None = None
) -> list[Text]:
    """Place blocks of lines side by side (each padded to its width)."""
    if not blocks:
        return []
    ws = list(widths) if widths else [max((b.cell_len for b in blk), default=0) for blk in blocks]
    height = max(len(b) for b in blocks)
    out = []
    for y in range(height):
        t = Text()
        for i, blk in enumerate(blocks):
            piece = blk[y] if y < len(blk) else Text("")
            t.append_text(piece)
            pad = ws[i] - piece.cell_len
            if i < len(blocks) - 1:
                t.append(" " * (max(pad, 0) + gap))
        out.append(t)
    return out


def join_lines(lines: Sequence[Text]) -> Text:
    return Text("\n").join(lines)


# --------------------------------------------------------------------- braille plots
_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


def braille_plot(
    series: Sequence[tuple[str, Sequence[tuple[float, float]], str]],
    width: int,
    height: int,
    *,
    ymin: float | None = None,
    ymax: float | None = None,
    x_label: str = "",
    xmin: float | None = None,
    xmax: float | None = None,
) -> list[Text]:
    """Line plot of several (name, points, colour) series in braille dots, with y/x axis labels.
    `xmin`/`xmax` widen the x range beyond the data (to share an axis with another drawing).

    Each terminal cell holds 2x4 dots; where series cross, the last drawn colours the cell.
    """
    ylab_w = 6
    pw, ph = max(width - ylab_w - 1, 4), max(height - 2, 2)
    pts = [p for _, ps, _ in series for p in ps if p[1] is not None and math.isfinite(p[1])]
    if not pts:
        return [Text("(no data)")]
    xs = [p[0] for p in pts]
    x0, x1 = min(xs), max(xs)
    x0, x1 = (x0 if xmin is None else min(x0, xmin)), (x1 if xmax is None else max(x1, xmax))
    y0 = min(p[1] for p in pts) if ymin is None else ymin
    y1 = max(p[1] for p in pts) if ymax is None else ymax
    if y1 <= y0:
        y1 = y0 + 1.0
    if x1 <= x0:
        x1 = x0 + 1.0
    W, H = pw * 2, ph * 4
    bits = [[0] * pw for _ in range(ph)]
    owner: list[list[str | None]] = [[None] * pw for _ in range(ph)]

    def dot(px: int, py: int, color: str) -> None:
        if 0 <= px < W and 0 <= py < H:
            cy, cx = py // 4, px // 2
            bits[cy][cx] |= _BRAILLE_BITS[py % 4][px % 2]
            owner[cy][cx] = color

    for _, ps, color in series:
        prev = None
        for x, y in ps:
            if y is None or not math.isfinite(y):
                prev = None
                continue
            px = int(round((x - x0) / (x1 - x0) * (W - 1)))
            py = int(round((1 - (y - y0) / (y1 - y0)) * (H - 1)))
            if prev is not None:
                n = max(abs(px - prev[0]), abs(py - prev[1]), 1)
                for k in range(n + 1):
                    dot(prev[0] + (px - prev[0]) * k // n, prev[1] + (py - prev[1]) * k // n, color)
            else:
                dot(px, py, color)
            prev = (px, py)

    lines = []
    axis = Style(color="grey50")
    for cy in range(ph):
        if cy == 0:
            lab = f"{y1:.2g}"
        elif cy == ph - 1:
            lab = f"{y0:.2g}"
        elif cy == ph // 2:
            lab = f"{(y0 + y1) / 2:.2g}"
        else:
            lab = ""
        t = Text(lab.rjust(ylab_w), axis)
        t.append("┤" if lab else "│", axis)
        for cx in range(pw):
            b = bits[cy][cx]
            if b:
                t.append(chr(0x2800 + b), Style(color=owner[cy][cx]))
            else:
                t.append(" ")
        lines.append(t)
    bottom = Text(" " * ylab_w + "└" + "─" * pw, axis)
    lines.append(bottom)
    left, right = _fmt_tick(x0), _fmt_tick(x1)
    mid = x_label
    gap = pw + 1 - len(left) - len(right)
    if gap > len(mid) + 2:
        lpad = (gap - len(mid)) // 2
        xl = left + " " * lpad + mid + " " * (gap - len(mid) - lpad) + right
    else:
        xl = left + " " * max(gap, 1) + right
    lines.append(Text(" " * ylab_w + xl, axis))
    return lines


def _fmt_tick(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v / 1000:.3g}k"
    return f"{v:.3g}"


def progress_bar(frac: float | None, width: int = 10) -> Text:
    """A text progress bar with eighth-blocks and a percentage."""
    if frac is None or not isinstance(frac, int | float) or not math.isfinite(frac):
        return Text("—".ljust(width + 5))
    frac = min(1.0, max(0.0, float(frac)))
    eighths = int(round(frac * width * 8))
    full, part = divmod(eighths, 8)
    bar = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
    t = Text(bar.ljust(width), Style(color="#56B4E9", bgcolor="grey23"))
    t.append(f" {frac * 100:3.0f}%")
    return t


def fmt_duration(s: float | None) -> str:
    if s is None or not isinstance(s, int | float) or not math.isfinite(s) or s < 0:
        return "—"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
