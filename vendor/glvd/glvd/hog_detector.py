"""dlib's HOG frontal face detector, in numpy (no dlib): enough of it to score the few
rectangles near a face and return the one dlib's ``get_frontal_face_detector()`` would.

Why: dlib's 5-point predictor (:mod:`glvd.shape_predictor`) is chaotic in its rectangle
(a rectangle one pyramid step or one cell off moves its points by pixels), so the
``"dlib5"`` alignment needs the very rectangle dlib's detector returns, which MediaPipe's
mesh only narrows down to a few candidates.

What dlib does, as ``detector(image, 1)`` (face_recognition's default) runs it
(tools/python/src/simple_object_detector_py.h, image_processing/object_detector.h,
scan_fhog_pyramid.h, image_transforms/fhog.h, image_pyramid.h, interpolation.h):

- the image is upsampled by ``pyramid_up`` (bilinear ``resize_image`` to
  ``(2H + 1, 2W + 2)``), then each pyramid level is ``pyramid_down<6>`` of the one
  before: ``resize_image`` to ``5/6`` of the size (integer division), bilinear, the
  sampling positions accumulated in float32 SIMD lanes (double in the last few columns),
  the pixel truncated to uint8. Every level is computed from the previous one, so a pixel
  at level ``l`` is reproduced only by running all ``l`` steps (here: only over the region
  that the face's windows need, :func:`level_regions`);
- each level's fHOG (Felzenszwalb's 31 features on 8 px cells: 18 signed and 9 unsigned
  orientation bins normalised by the 4 neighbouring 2x2 blocks, clipped at 0.2, and 4
  texture features), with dlib's choice of the strongest RGB channel's gradient, its
  bilinear voting into cells and its float32 arithmetic;
- 5 linear 10x10x31 filters (the detector's 5 views of a face, each with its own
  threshold) slide over the features padded by zeros; a window's score is the filter's
  response minus its threshold, its rectangle the 80 px window mapped back through the
  levels (``p * 6/5 + 0.3`` each) and the upsampling (``p / 2 - (1.25, 0.75)``), rounded;
- non-maximum suppression keeps the best-scoring window of each face: dlib returns the
  top-scoring window among those overlapping the face.

:class:`HogFaceDetector` ``.best_rectangle(image, rough)`` scores every window of every
filter at the pyramid levels near the size of ``rough`` (a dlib-like rectangle, e.g. from
MediaPipe's mesh) whose rectangle overlaps it, and returns the best: dlib's rectangle for
that face. ``exact=True`` computes the pyramid as dlib does, every level from the one below
(the scores are then dlib's to float rounding, ~1e-6: dlib sums its separable filters in
float32 SIMD order, here float64), which for a big face means resampling most of the
upsampled image many times over (seconds); by default the lowest level searched is made
straight from the image (block means, then bilinear: :func:`approximate_level`) and only the
2 levels above it by dlib's steps: the scores then move by ~0.08 (median; max 0.2), but the
best window stays dlib's on all 27 real photos of the tests (its lead there: >= 0.087), in
~20 ms. The filters (``weights/dlib_hog_face_detector.npz``, 24 KB) are converted from
dlib-bin at development time by ``tools/convert_dlib_hog_detector.py``.

Rectangles are dlib's (``left, top, right, bottom`` inclusive, integer pixel centres).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

WEIGHTS_NAME = "dlib_hog_face_detector.npz"
CELL = 8
#: pyramid_down<6>: each level 5/6 of the one before
PYRAMID_N = 6
NUM_FEATURES = 31
#: the search around a rough rectangle (:meth:`HogFaceDetector.candidates`): the pyramid levels
#: within LEVELS_AROUND of its size, the windows overlapping it by IoU >= MIN_IOU. On the 27
#: real photos dlib's window is always the level nearest the mesh's estimate or one off, at
#: most one cell (a tenth of the window) from it; a cell off is IoU 0.82, a level off 0.83
LEVELS_AROUND = 1
MIN_IOU = 0.5
#: the side (image px) of the detector's windows at level 0, as its rectangles are: 73 / 2
WINDOW_SIDE_0 = 36.5

_F32 = np.float32
#: the unit vectors of fhog.h's 9 orientations, as float32
_DIRECTIONS = np.array(
    [[1.0, 0.0], [0.9397, 0.3420], [0.7660, 0.6428], [0.500, 0.8660], [0.1736, 0.9848],
     [-0.1736, 0.9848], [-0.5000, 0.8660], [-0.7660, 0.6428], [-0.9397, 0.3420]], np.float32
)


class HogDetectorError(RuntimeError):
    """The detector's weights are missing or malformed."""


def default_weights_path() -> Path:
    return Path(__file__).resolve().parent / "weights" / WEIGHTS_NAME


# ------------------------------------------------------------------------------------- pyramid


def upsampled_size(h: int, w: int) -> tuple[int, int]:
    """``pyramid_up``'s output size: ``rect_up`` of the image rectangle through pyramid_down<2>."""
    return int(_lround((h - 1 + 0.75) * 2)) + 1, int(_lround((w - 1 + 1.25) * 2)) + 1


@lru_cache(maxsize=64)
def level_sizes(h0: int, w0: int, min_size: int = 64, max_levels: int = 1000) -> list[tuple[int, int]]:
    """The (rows, cols) of every level scan_fhog_pyramid builds from a ``(h0, w0)`` image."""
    rect = (0.0, 0.0, w0 - 1.0, h0 - 1.0)
    levels = 0
    while True:  # create_fhog_pyramid: rect_down until smaller than the minimum layer
        rect = tuple(float(_lround((v - 0.3) * ((PYRAMID_N - 1.0) / PYRAMID_N))) for v in rect)
        levels += 1
        width, height = rect[2] - rect[0] + 1, rect[3] - rect[1] + 1
        if not (width >= min_size and height >= min_size and levels < max_levels):
            break
    sizes = [(h0, w0)]
    for _ in range(levels - 1):
        h, w = sizes[-1]
        sizes.append((((PYRAMID_N - 1) * h) // PYRAMID_N, ((PYRAMID_N - 1) * w) // PYRAMID_N))
    return sizes


def _lround(x):
    """``std::lround``: halves away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


@lru_cache(maxsize=64)
def _row_positions(in_n: int, out_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """resize_image's rows: ``top``, ``bottom`` and ``tb_frac`` (double) of each output row, and
    ``(1 - tb_frac, tb_frac)`` as float32 (the SIMD part's weights)."""
    scale = (in_n - 1) / float(max(out_n - 1, 1))
    steps = np.full(out_n + 1, scale)
    steps[0] = -scale
    y = np.cumsum(steps)[1:]  # y += y_scale, row after row (sequential doubles)
    top = np.floor(y).astype(np.int64)
    bottom = np.minimum(top + 1, in_n - 1)
    frac = y - top
    return top, bottom, frac, np.stack([(1 - frac).astype(_F32), frac.astype(_F32)])


@lru_cache(maxsize=64)
def _col_positions(in_n: int, out_n: int):
    """resize_image's columns: ``left``, ``right``, the fraction and whether the column is in the
    SIMD part (float32 positions, 4 lanes stepped by ``4 * x_scale``) or the double tail."""
    scale = (in_n - 1) / float(max(out_n - 1, 1))
    groups = out_n // 4 + 2
    init = np.array([-4 * scale + k * scale for k in range(4)]).astype(_F32)  # simd4f(x, x+s, ...)
    steps = np.full((groups + 1, 4), _F32(4 * scale), _F32)
    steps[0] = init
    lanes = np.cumsum(steps, axis=0, dtype=_F32)[1:]  # _x += _x_scale (float32, lane by lane)
    left = lanes.astype(np.int64)  # simd4i(simd4f): truncation
    stop = int(np.argmax(left[:, 3] + 1 >= in_n))  # the first group whose right edge leaves the image
    n_simd = min(4 * stop, out_n)
    left_s = left.reshape(-1)[:n_simd]
    frac_s = lanes.reshape(-1)[:n_simd] - left_s.astype(_F32)
    c0 = n_simd
    tail = np.full(out_n - c0 + 1, scale)
    tail[0] = -scale + c0 * scale
    x = np.cumsum(tail)[1:]  # x = -x_scale + c*x_scale; x += x_scale (doubles)
    left_t = np.floor(x).astype(np.int64)
    right_t = np.minimum(left_t + 1, in_n - 1)
    return (np.concatenate([left_s, left_t]), np.concatenate([left_s + 1, right_t]),
            frac_s.astype(_F32), x - left_t, n_simd)


def resize_region(src: np.ndarray, src_origin: tuple[int, int], in_size: tuple[int, int],
                  out_size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Rows ``[r0, r1)`` and columns ``[c0, c1)`` of dlib's ``resize_image`` (bilinear, RGB uint8)
    of an ``in_size`` image to ``out_size``, from ``src``: the part of the input that starts at
    ``src_origin`` (row, col) and holds every pixel those outputs read."""
    top, bottom, tb, tb32 = _row_positions(in_size[0], out_size[0])
    left, right, lr32, lr64, n_simd = _col_positions(in_size[1], out_size[1])
    r = slice(*rows)
    sy, sx = src_origin
    t, b = top[r] - sy, bottom[r] - sy
    out = np.empty((rows[1] - rows[0], cols[1] - cols[0], 3), np.uint8)
    s0, s1 = cols[0], min(cols[1], n_simd)
    if s1 > s0:  # the SIMD part, float32: ((tl*TL + tr*TR) + bl*BL) + br*BR, truncated
        lo, hi = left[s0:s1] - sx, right[s0:s1] - sx
        f = lr32[s0:s1][None, :, None]
        g = (_F32(1) - lr32[s0:s1])[None, :, None]
        inv_tb, tb_ = tb32[0][r][:, None, None], tb32[1][r][:, None, None]
        span = slice(int(lo.min()), int(hi.max()) + 1)
        rows_t, rows_b = src[t, span].astype(_F32), src[b, span].astype(_F32)
        lo, hi = lo - span.start, hi - span.start
        acc = (inv_tb * g) * rows_t[:, lo] + (inv_tb * f) * rows_t[:, hi]
        acc = acc + (tb_ * g) * rows_b[:, lo]
        acc = acc + (tb_ * f) * rows_b[:, hi]
        out[:, s0 - cols[0]:s1 - cols[0]] = acc.astype(np.int32).astype(np.uint8)
    d0 = max(cols[0], n_simd)
    if cols[1] > d0:  # the tail, double: (1-tb)((1-lr)TL + lr TR) + tb((1-lr)BL + lr BR)
        k = slice(d0 - n_simd, cols[1] - n_simd)
        lo, hi = left[d0:cols[1]] - sx, right[d0:cols[1]] - sx
        f = lr64[k][None, :, None]
        tbf = tb[r][:, None, None]
        span = slice(int(lo.min()), int(hi.max()) + 1)
        top_, bot_ = src[t, span].astype(np.float64), src[b, span].astype(np.float64)
        lo, hi = lo - span.start, hi - span.start
        val = (1 - tbf) * ((1 - f) * top_[:, lo] + f * top_[:, hi]) + tbf * ((1 - f) * bot_[:, lo] + f * bot_[:, hi])
        out[:, d0 - cols[0]:] = val.astype(np.int32).astype(np.uint8)
    return out


def _needed(in_n: int, out_n: int, lo: int, hi: int, axis: int) -> tuple[int, int]:
    """The input range ``[a, b)`` that output range ``[lo, hi)`` of a resize reads."""
    if axis == 0:
        top, bottom = _row_positions(in_n, out_n)[:2]
        return int(top[lo]), int(bottom[hi - 1]) + 1
    left, right = _col_positions(in_n, out_n)[:2]
    return int(left[lo:hi].min()), int(right[lo:hi].max()) + 1


def level_regions(image_size: tuple[int, int], wanted: dict[int, tuple[int, int, int, int]]):
    """The region ``(r0, r1, c0, c1)`` of the original image and of every level up to the
    highest in ``wanted`` (level -> region its features need) that must be computed."""
    sizes = level_sizes(*upsampled_size(*image_size))
    top = max(wanted)
    regions: dict[int, tuple[int, int, int, int]] = {}
    need = None
    for level in range(top, -1, -1):
        own = wanted.get(level)
        if need is None:
            need = own
        elif own is not None:
            need = (min(need[0], own[0]), max(need[1], own[1]), min(need[2], own[2]), max(need[3], own[3]))
        regions[level] = need
        in_size = sizes[level - 1] if level > 0 else image_size
        need = (*_needed(in_size[0], sizes[level][0], need[0], need[1], 0),
                *_needed(in_size[1], sizes[level][1], need[2], need[3], 1))
    regions[-1] = need  # the original image
    return sizes, regions


def level_scale(image_size: tuple[int, int], sizes: list[tuple[int, int]], level: int) -> tuple[float, float]:
    """Image pixels per pixel of ``level`` (rows, cols): resize_image maps the first and last
    pixels onto each other, so pixel ``p`` of the level samples the image at ``p * scale``."""
    ay = ax = 1.0
    prev = image_size
    for h, w in sizes[:level + 1]:
        ay *= (prev[0] - 1) / max(h - 1, 1)
        ax *= (prev[1] - 1) / max(w - 1, 1)
        prev = (h, w)
    return ay, ax


def approximate_level(image: np.ndarray, scale: tuple[float, float], region: tuple[int, int, int, int]) -> np.ndarray:
    """A region of a pyramid level straight from the image, instead of through every level
    below: the image averaged over blocks of ``int(scale)`` pixels, sampled bilinearly at the
    level's pixels (the chain of 5/6 bilinear steps blurs about as much). Not dlib's pixels
    (its scores move by ~0.05), but reads each image pixel once."""
    img = np.asarray(image)
    H, W = img.shape[:2]
    r0, r1, c0, c1 = region
    ay, ax = scale
    f = max(1, int(min(ay, ax)))
    ys, xs = ay * np.arange(r0, r1), ax * np.arange(c0, c1)
    oy, ox = int(np.floor(ys[0])) - f, int(np.floor(xs[0])) - f
    ny, nx = int(np.ceil((ys[-1] - oy) / f)) + 2, int(np.ceil((xs[-1] - ox) / f)) + 2
    ya, yb, xa, xb = max(oy, 0), min(oy + ny * f, H), max(ox, 0), min(ox + nx * f, W)
    part = img[ya:yb, xa:xb]
    if (ya, yb, xa, xb) != (oy, oy + ny * f, ox, ox + nx * f):  # off the image: its edge repeated
        part = np.pad(part, ((ya - oy, oy + ny * f - yb), (xa - ox, ox + nx * f - xb), (0, 0)), mode="edge")
    if f > 1:  # block sums, a row (then a column) of each block at a time: one pass, in uint32
        rows = part[0::f].astype(np.uint32)
        for i in range(1, f):
            rows += part[i::f]
        sums = rows[:, 0::f].copy()
        for i in range(1, f):
            sums += rows[:, i::f]
        blocks = sums.astype(_F32) / _F32(f * f)
    else:
        blocks = part.astype(_F32)
    by, bx = (ys - oy - (f - 1) / 2) / f, (xs - ox - (f - 1) / 2) / f
    ty, tx = np.clip(np.floor(by).astype(np.int64), 0, ny - 2), np.clip(np.floor(bx).astype(np.int64), 0, nx - 2)
    fy = (by - ty).astype(_F32)[:, None, None]
    fx = (bx - tx).astype(_F32)[None, :, None]
    upper, lower = blocks[ty], blocks[ty + 1]
    val = ((upper[:, tx] * (1 - fx) + upper[:, tx + 1] * fx) * (1 - fy)
           + (lower[:, tx] * (1 - fx) + lower[:, tx + 1] * fx) * fy)
    return np.clip(val + _F32(0.5), 0, 255).astype(np.uint8)


def pyramid_levels(image: np.ndarray, wanted: dict[int, tuple[int, int, int, int]], exact: bool = True):
    """``{level: (region, pixels)}``: the regions (row/col ranges) of the pyramid levels dlib's
    detector scans (level 0: the image upsampled by 2) that ``wanted`` asks for, computed as
    dlib computes them, from only the part of each level they depend on. ``exact=False``: the
    lowest wanted level by :func:`approximate_level`, dlib's steps from there on (starting the
    approximation 2-3 levels lower halves the scores' error, 0.08 -> 0.04 at the median on the
    27 real photos, but no more rectangles come out dlib's: 26-27 of 27 either way)."""
    img = np.asarray(image)
    sizes, regions = level_regions(img.shape[:2], wanted)
    start = 0 if exact else min(wanted)
    out = {}
    if start == 0:
        r0, r1, c0, c1 = regions[-1]
        prev, prev_origin, prev_size = img[r0:r1, c0:c1], (r0, c0), img.shape[:2]
    else:
        reg = regions[start]
        prev = approximate_level(img, level_scale(img.shape[:2], sizes, start), reg)
        prev_origin, prev_size = (reg[0], reg[2]), sizes[start]
        out[start] = (reg, prev)
        start += 1
    for level in range(start, max(wanted) + 1):
        reg = regions[level]
        pix = resize_region(prev, prev_origin, prev_size, sizes[level], reg[:2], reg[2:])
        if level in wanted:
            out[level] = (reg, pix)
        prev, prev_origin, prev_size = pix, (reg[0], reg[2]), sizes[level]
    return sizes, out


# ---------------------------------------------------------------------------------------- fhog


def fhog(image: np.ndarray) -> np.ndarray:
    """dlib's ``extract_fhog_features`` (cell size 8) of an RGB uint8 image: ``(31, R, C)``
    float32, without the zero padding the scanner adds (``R = round(rows / 8) - 2``)."""
    img = np.asarray(image).astype(np.int32)
    nr, nc = img.shape[:2]
    cells_nr, cells_nc = int(nr / CELL + 0.5), int(nc / CELL + 0.5)
    hog_nr, hog_nc = max(cells_nr - 2, 0), max(cells_nc - 2, 0)
    if hog_nr == 0 or hog_nc == 0:
        return np.zeros((NUM_FEATURES, hog_nr, hog_nc), _F32)
    vis_nr = min(cells_nr * CELL, nr) - 1
    vis_nc = min(cells_nc * CELL, nc) - 1
    ys, xs = np.arange(1, vis_nr), np.arange(1, vis_nc)
    dx = img[1:vis_nr, 2:vis_nc + 1] - img[1:vis_nr, 0:vis_nc - 1]  # (rows, cols, rgb)
    dy = img[2:vis_nr + 1, 1:vis_nc] - img[0:vis_nr - 1, 1:vis_nc]
    ln = dx * dx + dy * dy
    # dlib keeps the strongest channel's gradient. The SIMD columns (x from 1 in blocks of 8
    # while x < vis_nc - 7) take the later channel on a tie (select(r > g, r, g)), the scalar
    # tail the earlier one (if g > r)
    tail_from = 1 + CELL * ((max(vis_nc - 7 - 1, 0) + CELL - 1) // CELL)
    simd = xs < tail_from
    g_wins = np.where(simd, ln[..., 1] >= ln[..., 0], ln[..., 1] > ln[..., 0])
    gx = np.where(g_wins, dx[..., 1], dx[..., 0])
    gy = np.where(g_wins, dy[..., 1], dy[..., 0])
    best = np.where(g_wins, ln[..., 1], ln[..., 0])
    b_wins = np.where(simd, ln[..., 2] >= best, ln[..., 2] > best)
    gx = np.where(b_wins, dx[..., 2], gx).astype(_F32)
    gy = np.where(b_wins, dy[..., 2], gy).astype(_F32)
    v = np.sqrt(np.where(b_wins, ln[..., 2], best).astype(_F32))
    # snap to 18 orientations: dlib takes the first o = 0..8 whose dot (then -dot) strictly beats
    # the best so far (from 0): the first largest |dot|, o + 9 where the dot is negative
    dots = gx[..., None] * _DIRECTIONS[:, 0] + gy[..., None] * _DIRECTIONS[:, 1]  # (rows, cols, 9)
    i = np.argmax(np.abs(dots), -1)
    d = np.take_along_axis(dots, i[..., None], -1)[..., 0]
    orient = np.where(d != 0, i + 9 * (d < 0), 0)
    # bilinear votes into the cells (hist is padded by one cell all round)
    yp = ((ys + 0.5) / CELL - 0.5).astype(_F32)
    iyp = np.floor(yp).astype(np.int64)
    vy0 = yp - iyp.astype(_F32)
    vy1 = _F32(1) - vy0
    xp = (xs.astype(_F32) + _F32(0.5)) / _F32(CELL) + _F32(0.5)  # the SIMD form (+0.5: one cell on)
    ixp = xp.astype(np.int64)
    vx0 = xp - ixp.astype(_F32)
    vx1 = _F32(1) - vx0
    w11 = vy1[:, None] * (vx1[None] * v)  # SIMD order: vx *= v first
    w01 = vy0[:, None] * (vx1[None] * v)
    w10 = vy1[:, None] * (vx0[None] * v)
    w00 = vy0[:, None] * (vx0[None] * v)
    tail = ~simd
    if tail.any():  # the scalar tail: vy * vx * v, left to right
        w11[:, tail] = (vy1[:, None] * vx1[None, tail]) * v[:, tail]
        w01[:, tail] = (vy0[:, None] * vx1[None, tail]) * v[:, tail]
        w10[:, tail] = (vy1[:, None] * vx0[None, tail]) * v[:, tail]
        w00[:, tail] = (vy0[:, None] * vx0[None, tail]) * v[:, tail]
    hist = np.zeros((cells_nr + 2, cells_nc + 2, 18), _F32)
    row = np.broadcast_to((iyp + 1)[:, None], gx.shape)
    col = np.broadcast_to(ixp[None], gx.shape)
    flat = np.stack([((row * (cells_nc + 2) + col) * 18 + orient),
                     (((row + 1) * (cells_nc + 2) + col) * 18 + orient),
                     ((row * (cells_nc + 2) + col + 1) * 18 + orient),
                     (((row + 1) * (cells_nc + 2) + col + 1) * 18 + orient)], -1)
    # pixel after pixel, each its 4 votes: float32 sums in dlib's order
    np.add.at(hist.reshape(-1), flat.reshape(-1), np.stack([w11, w01, w10, w00], -1).reshape(-1))
    h = hist[1:-1, 1:-1]  # (cells_nr, cells_nc, 18)
    norm = np.zeros((cells_nr, cells_nc), _F32)
    for o in range(9):
        s = h[..., o] + h[..., o + 9]
        norm = norm + s * s
    n = norm
    Y, X = hog_nr, hog_nc

    def blk(a, b):
        return n[a:a + Y, b:b + X]

    # the 4 blocks around cell (y+1, x+1), in the lanes' order and summation order
    z = [((blk(1, 1) + blk(1, 2)) + blk(2, 1)) + blk(2, 2),
         ((blk(0, 1) + blk(0, 2)) + blk(1, 1)) + blk(1, 2),
         ((blk(1, 0) + blk(1, 1)) + blk(2, 0)) + blk(2, 1),
         ((blk(0, 0) + blk(0, 1)) + blk(1, 0)) + blk(1, 1)]
    nn = _F32(0.2) * np.sqrt(np.stack(z) + _F32(0.0001))  # (4, Y, X)
    inv = _F32(0.1) / nn
    cell = h[1:1 + Y, 1:1 + X]  # hist[y+2][x+2]
    out = np.empty((NUM_FEATURES, Y, X), _F32)
    t = np.zeros((4, Y, X), _F32)

    def lanesum(a):
        return (a[0] + a[1]) + (a[2] + a[3])

    for o in range(0, 18, 3):
        hs = [np.minimum(cell[..., o + k][None], nn) * inv for k in range(3)]
        for k in range(3):
            out[o + k] = lanesum(hs[k])
        t = t + ((hs[0] + hs[1]) + hs[2])
    t = t * _F32(2 * 0.2357)
    for o in range(9):
        hs = np.minimum((cell[..., o] + cell[..., o + 9])[None], nn) * inv
        out[18 + o] = lanesum(hs)
    out[27:31] = t
    return out


# ------------------------------------------------------------------------------------ detector


class HogFaceDetector:
    """dlib's frontal face detector's filters: ``best_rectangle(image, rough)``."""

    def __init__(self, path: str | Path | None = None, arrays: dict[str, np.ndarray] | None = None):
        if arrays is None:
            path = Path(path) if path is not None else default_weights_path()
            if not path.is_file():
                raise HogDetectorError(
                    f"HOG detector weights not found: {path} (make them with tools/convert_dlib_hog_detector.py)")
            try:
                with np.load(path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            except (ValueError, OSError) as exc:
                raise HogDetectorError(f"cannot read HOG detector weights {path}: {exc}") from exc
        try:
            w = arrays
            fh, fw = (int(v) for v in w["filter_size"])
            self.thresholds = w["thresholds"].astype(np.float64)  # (D,)
            self.window = tuple(int(v) for v in w["window"])  # (80, 80) px
            col, row = w["col"].astype(np.float64), w["row"].astype(np.float64)  # (K, fh), (K, fw)
            det, plane = w["detector"].astype(np.int64), w["plane"].astype(np.int64)
            if col.shape[1] != fh or row.shape[1] != fw or not (len(col) == len(row) == len(det) == len(plane)):
                raise ValueError("the separable pairs do not fit the filter size")
            # dlib sums the separable pairs' responses: the same as their sum's
            self.filters = np.zeros((len(self.thresholds), NUM_FEATURES, fh, fw))
            np.add.at(self.filters, (det, plane), col[:, :, None] * row[:, None, :])
        except (KeyError, ValueError, IndexError) as exc:
            raise HogDetectorError(f"malformed HOG detector weights {path or '(arrays)'}: {exc}") from exc
        self.fh, self.fw = fh, fw
        # the filters as one matrix over a window's features (31 * h * w)
        self._matrix = self.filters.reshape(len(self.filters), -1).T

    # ---- geometry: a window (feature row/col of its top-left, unpadded) <-> its dlib rectangle

    def window_edges(self, level: int, first: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """The (low, high) edges in the original image of the windows whose first feature
        row (``axis`` 1) / column (0) is ``first`` at ``level``: fhog_to_image of the window's
        cells, up the pyramid_down<6> levels, down the upsampling (pyramid_down<2>)."""
        pad = ((self.fh if axis else self.fw) - 1) // 2
        ratio = PYRAMID_N / (PYRAMID_N - 1.0)

        def to_image(p):
            p = (p + 1 - pad) * CELL + 1
            q = (p + np.where(p >= 0, CELL // 2, -(CELL // 2))).astype(np.float64)
            for _ in range(int(level)):  # rect_up one level at a time: the same doubles as dlib's
                q = q * ratio + 0.3
            return _lround(_lround(q) / 2.0 - (1.25, 0.75)[axis])

        size = self.fh if axis else self.fw
        first = np.asarray(first) + pad  # padded feature index of the window's first cell
        return to_image(first), to_image(first + size - 1)

    def candidates(self, rough, image_size, levels_around: int = LEVELS_AROUND, min_iou: float = MIN_IOU):
        """``{level: (rows, cols)}``: the first-feature indices (unpadded; a window may hang
        off the features into the zero padding) of the windows whose rectangle overlaps
        ``rough`` by IoU >= ``min_iou``, at the pyramid levels within ``levels_around`` of the
        one whose windows are ``rough``'s size."""
        left, top, right, bottom = (float(v) for v in rough)
        side = right - left + 1
        h0, w0 = upsampled_size(*image_size)
        sizes = level_sizes(h0, w0)
        # the 80 px window at level l is ~36.5 * 1.2**l px wide in the image (fhog_to_image's
        # 73 px at level 0, halved by the upsampling)
        near = int(np.rint(np.log(max(side, 1.0) / WINDOW_SIDE_0) / np.log(PYRAMID_N / (PYRAMID_N - 1.0))))
        out = {}
        area = (right - left + 1) * (bottom - top + 1)
        for level in range(max(near - levels_around, 0), min(near + levels_around + 1, len(sizes))):
            h, w = sizes[level]
            hog_nr, hog_nc = max(int(h / CELL + 0.5) - 2, 0), max(int(w / CELL + 0.5) - 2, 0)
            pad_r, pad_c = (self.fh - 1) // 2, (self.fw - 1) // 2
            # windows may hang off the features by the zero padding
            rows = np.arange(-pad_r, hog_nr + self.fh - 1 - pad_r - self.fh + 1)
            cols = np.arange(-pad_c, hog_nc + self.fw - 1 - pad_c - self.fw + 1)
            if len(rows) == 0 or len(cols) == 0:
                continue
            ye, xe = self.window_edges(level, rows, 1), self.window_edges(level, cols, 0)
            oy = np.clip(np.minimum(ye[1], bottom) - np.maximum(ye[0], top) + 1, 0, None)
            ox = np.clip(np.minimum(xe[1], right) - np.maximum(xe[0], left) + 1, 0, None)
            inter = oy[:, None] * ox[None, :]
            own = (ye[1] - ye[0] + 1)[:, None] * (xe[1] - xe[0] + 1)[None, :]
            iou = inter / (own + area - inter)
            ok_r, ok_c = np.nonzero((iou >= min_iou).any(1))[0], np.nonzero((iou >= min_iou).any(0))[0]
            if len(ok_r) and len(ok_c):
                out[level] = (rows[ok_r[0]:ok_r[-1] + 1], cols[ok_c[0]:ok_c[-1] + 1])
        return out

    def score_windows(self, image: np.ndarray, windows: dict[int, tuple[np.ndarray, np.ndarray]],
                      exact: bool = False):
        """``{level: (D, rows, cols)}`` scores (filter response minus threshold) of the windows
        whose first feature rows/cols are given, per level; ``exact``: on dlib's own pyramid
        (every level below computed; slow for big faces), else on :func:`pyramid_levels`'
        approximation."""
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        h0, w0 = upsampled_size(*img.shape[:2])
        sizes = level_sizes(h0, w0)
        wanted, spans = {}, {}
        for level, (rows, cols) in windows.items():
            h, w = sizes[level]
            cells_nr, cells_nc = int(h / CELL + 0.5), int(w / CELL + 0.5)
            # the features these windows read, clipped to those that exist (the rest is padding)
            fa_r, fb_r = max(int(rows[0]), 0), min(int(rows[-1]) + self.fh - 1, cells_nr - 3)
            fa_c, fb_c = max(int(cols[0]), 0), min(int(cols[-1]) + self.fw - 1, cells_nc - 3)
            spans[level] = (fa_r, fb_r, fa_c, fb_c)
            # the pixels those features read, from a corner on the cell grid: feature f is cell
            # f + 1's histogram over the 2x2 blocks of cells f..f + 2, which take votes from
            # pixels 8f - 4 .. 8f + 27 (and their neighbours for the gradient); one cell more on
            # the right keeps them out of fhog's scalar tail (its ties break the other way)
            y0, x0 = CELL * max(fa_r - 1, 0), CELL * max(fa_c - 1, 0)
            y1, x1 = min(h, CELL * (fb_r + 4)), min(w, CELL * (fb_c + 5))
            wanted[level] = (y0, y1, x0, x1)
        _, levels = pyramid_levels(img, wanted, exact)
        out = {}
        for level, (rows, cols) in windows.items():
            (r0, _, c0, _), pix = levels[level]  # may reach further, for the levels above
            y0, y1, x0, x1 = wanted[level]
            feats = fhog(pix[y0 - r0:y1 - r0, x0 - c0:x1 - c0])  # from a corner on the cell grid
            fa_r, fb_r, fa_c, fb_c = spans[level]
            oy, ox = y0 // CELL, x0 // CELL
            # the padded feature block the windows cover (zeros outside the level's features)
            r_lo, c_lo = int(rows[0]), int(cols[0])
            block = np.zeros((NUM_FEATURES, len(rows) + self.fh - 1, len(cols) + self.fw - 1), np.float64)
            if fb_r >= fa_r and fb_c >= fa_c:
                block[:, fa_r - r_lo:fb_r - r_lo + 1, fa_c - c_lo:fb_c - c_lo + 1] = \
                    feats[:, fa_r - oy:fb_r - oy + 1, fa_c - ox:fb_c - ox + 1]
            win = np.lib.stride_tricks.sliding_window_view(block, (self.fh, self.fw), axis=(1, 2))
            # (31, R, C, fh, fw) -> (R, C, 31 * fh * fw) @ (31 * fh * fw, D)
            flat = np.ascontiguousarray(win.transpose(1, 2, 0, 3, 4)).reshape(len(rows), len(cols), -1)
            out[level] = (flat @ self._matrix).transpose(2, 0, 1) - self.thresholds[:, None, None]
        return out

    def best_rectangle(self, image: np.ndarray, rough, levels_around: int = LEVELS_AROUND, min_iou: float = MIN_IOU,
                       exact: bool = False):
        """The rectangle dlib's detector returns for the face near ``rough`` (dlib's convention):
        the best-scoring window of its 5 filters among those overlapping ``rough`` (IoU >=
        ``min_iou``) at the pyramid levels within ``levels_around`` of its size. Also its score
        (dlib's detection confidence; dlib reports only windows scoring >= 0)."""
        img = np.asarray(image)
        windows = self.candidates(rough, img.shape[:2], levels_around, min_iou)
        if not windows:
            return None, -np.inf
        scores = self.score_windows(img, windows, exact)
        best, best_score = None, -np.inf
        for level, s in scores.items():
            top = s.max(0)
            k = np.unravel_index(np.argmax(top), top.shape)
            if top[k] > best_score:
                rows, cols = windows[level]
                ye = self.window_edges(level, rows[k[0]], 1)
                xe = self.window_edges(level, cols[k[1]], 0)
                best = (int(xe[0]), int(ye[0]), int(xe[1]), int(ye[1]))
                best_score = float(top[k])
        return best, best_score


_DEFAULT: HogFaceDetector | None = None


def default_detector() -> HogFaceDetector:
    """The shipped detector, loaded on first use and kept."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = HogFaceDetector()
    return _DEFAULT
