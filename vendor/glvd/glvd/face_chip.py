"""The aligned face chip the identity backbone reads (dlib's ``get_face_chip_details``).

dlib aligns a face by a similarity transform that puts five points (the outer and
inner corners of both eyes and the base of the nose) onto a fixed template, padded
by 0.25 of the face on every side, at 150x150. We compute the same five points from
MediaPipe's mesh (which our detector already runs) or from the renders' true
landmarks, so the runtime needs no dlib. The chip is cut as dlib cuts it (its
rectangle convention, image pyramid and bilinear sampling, replicated here) so
that the descriptor equals dlib's for the same five points.

Points are in glvd's pixel convention (pixel centres at integer + 0.5, the image
spans ``[0, W]``); dlib's has centres at integers: converted here, once.
"""

from __future__ import annotations

import numpy as np

from .facenet import CHIP_SIZE

#: dlib's 5-point template in [0, 1] (interpolation.h), in dlib's point order:
#: the image-right eye's outer then inner corner, the image-left eye's outer then
#: inner corner, the base of the nose.
DLIB_FIVE_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
CHIP_PADDING = 0.25

#: MediaPipe mesh vertex ids for dlib's five points, in dlib's order: the subject's
#: left eye (image right) outer 263 / inner 362, right eye outer 33 / inner 133, and
#: the nose base (subnasale, 2). Checked against dlib's 5-point predictor on real
#: photos (tests/test_facenet.py): ~2 chip px from its points, so the descriptor lands
#: ~0.09 from dlib's; :func:`five_points_from_predictor` (dlib's predictor in numpy)
#: gets closer (``IdentityEncoder(alignment="dlib5")``).
MEDIAPIPE_FIVE = (263, 362, 33, 133, 2)
#: The same from the 68-point (iBUG) layout: eye corners 45, 42, 36, 39; the nose
#: base is 33 (the middle of the nostril line).
IBUG68_FIVE = (45, 42, 36, 39, 33)


def five_points_from_mediapipe(dense: np.ndarray) -> np.ndarray:
    """``(468|478, 2)`` MediaPipe mesh points -> ``(5, 2)`` in dlib's order (same pixels)."""
    return np.asarray(dense, np.float64)[list(MEDIAPIPE_FIVE)]


def five_points_from_predictor(image: np.ndarray, dense: np.ndarray, predictor=None) -> np.ndarray:
    """dlib's own five points: its 5-point predictor (:mod:`glvd.shape_predictor`, numpy) run on
    the image in the rectangle dlib's HOG detector returns for the face of MediaPipe's mesh
    ``dense`` (glvd pixels; :func:`glvd.shape_predictor.face_rectangle`).
    ``predictor``: a ``ShapePredictor`` (default: the shipped weights, loaded once)."""
    from .shape_predictor import default_predictor

    return (predictor or default_predictor()).predict_from_mesh(image, dense)


def five_points_from_68(lm68: np.ndarray) -> np.ndarray:
    """``(68, 2)`` iBUG landmarks -> ``(5, 2)`` in dlib's order (same pixels)."""
    return np.asarray(lm68, np.float64)[list(IBUG68_FIVE)]


def similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (no reflection) ``dst ~ A @ src + b`` as a ``(2, 3)`` matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / (s**2).sum(1).mean()
    A = scale * rot
    return np.concatenate([A, (mu_d - A @ mu_s)[:, None]], axis=1)


class ChipDetails:
    """dlib's ``chip_details``: the chip's rectangle in the image (``l, t, r, b``, dlib pixels) and angle."""

    def __init__(self, rect: tuple[float, float, float, float], angle: float, size: int):
        self.rect = rect
        self.angle = angle
        self.size = size


def chip_details(points5: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> ChipDetails:
    """``(5, 2)`` points (glvd pixels) -> where dlib would cut the chip (its ``get_face_chip_details``)."""
    template = (padding + DLIB_FIVE_TEMPLATE) / (2 * padding + 1) * size
    T = similarity_lstsq(template, np.asarray(points5, np.float64) - 0.5)
    p = T[:, :2] @ np.array([1.0, 0.0])
    angle = float(np.arctan2(p[1], p[0]))
    scale = float(np.hypot(*p))
    cx, cy = T[:, :2] @ np.array([size / 2.0, size / 2.0]) + T[:, 2]
    half = (size * scale - 1.0) / 2.0  # dlib's centered_drect: width - 1
    return ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size)


def _area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect
    return max(right - left + 1.0, 0.0) * max(bottom - top + 1.0, 0.0)  # dlib's drectangle: inclusive


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """dlib's ``pyramid_down<2>::rect_down`` (its ``point_down``: ``p / 2 - (1.25, 0.75)``)."""
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _rotate(centre: np.ndarray, p: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    d = p - centre
    return centre + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])


def _corners(rect: tuple[float, float, float, float], angle: float) -> list[np.ndarray]:
    """tl, tr, bl, br rotated about the rectangle's centre."""
    left, top, right, bottom = rect
    centre = np.array([(left + right) / 2, (top + bottom) / 2])
    points = ((left, top), (right, top), (left, bottom), (right, bottom))
    return [_rotate(centre, np.array(p, np.float64), angle) for p in points]


def pyramid_down(img: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>`` on an RGB uint8 image: a 5-tap [1 4 6 4 1] filter each
    way, every other pixel (down pixel ``(x, y)`` centred on ``(2x + 2, 2y + 2)``), floor."""
    h, w = img.shape[:2]
    W, H = (w - 3) // 2, (h - 3) // 2
    o = img.astype(np.uint32)
    taps = ((0, 1), (1, 4), (2, 6), (3, 4), (4, 1))
    t = sum(k * o[:, i : i + 2 * W - 1 : 2] for i, k in taps)
    d = sum(k * t[i : i + 2 * H - 1 : 2] for i, k in taps)
    return (d // 256).astype(np.uint8)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dlib's ``interpolate_bilinear``: 0 wherever a neighbour falls outside; truncated to uint8."""
    h, w = img.shape[:2]
    left = np.floor(x).astype(np.int64)
    top = np.floor(y).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    lc, tc = np.clip(left, 0, max(w - 2, 0)), np.clip(top, 0, max(h - 2, 0))
    fx, fy = (x - left)[..., None], (y - top)[..., None]
    f = img.astype(np.float64)
    upper = (1 - fx) * f[tc, lc] + fx * f[tc, lc + 1]
    lower = (1 - fx) * f[tc + 1, lc] + fx * f[tc + 1, lc + 1]
    v = (1 - fy) * upper + fy * lower
    v[~inside] = 0
    return np.clip(v, 0, 255).astype(np.uint8)


def extract_chip(image: np.ndarray, details: ChipDetails) -> np.ndarray:
    """``(H, W, 3)`` uint8 image -> ``(size, size, 3)`` uint8 chip, as dlib's ``extract_image_chips``.

    When the chip is much smaller than its footprint, dlib first builds an image
    pyramid of the footprint's neighbourhood (so bilinear sampling does not alias)
    and samples the level whose rectangle is just larger than the chip.
    """
    size = details.size
    depth, grow = 0, 2.0
    r = _rect_down(details.rect)
    while _area(r) > size * size:
        r = _rect_down(r)
        depth += 1
        grow = grow * 2 + 2
    corners = np.array(_corners(details.rect, details.angle))
    h, w = image.shape[:2]
    bl = max(corners[:, 0].min() - grow, 0.0)
    bt = max(corners[:, 1].min() - grow, 0.0)
    br = min(corners[:, 0].max() + grow, w - 1.0)
    bb = min(corners[:, 1].max() + grow, h - 1.0)
    if br < bl or bb < bt:  # the chip lies outside the image
        return np.zeros((size, size, 3), np.uint8)
    x0, y0, x1, y1 = (int(np.floor(v + 0.5)) for v in (bl, bt, br, bb))  # std::lround
    img = image[y0 : y1 + 1, x0 : x1 + 1]
    left, top, right, bottom = details.rect
    rect = (left - x0, top - y0, right - x0, bottom - y0)
    levels = 0
    while _area(_rect_down(rect)) > size * size and levels < depth:
        rect = _rect_down(rect)
        levels += 1
    for _ in range(levels):
        if min(img.shape[:2]) <= 8:
            break
        img = pyramid_down(img)
    tl, tr, blc, _ = _corners(rect, details.angle)
    # the affine map taking chip corners (0,0), (size-1,0), (0,size-1) to the rotated rectangle's
    ex = (tr - tl) / (size - 1)
    ey = (blc - tl) / (size - 1)
    gy, gx = np.mgrid[0:size, 0:size].astype(np.float64)
    x = tl[0] + gx * ex[0] + gy * ey[0]
    y = tl[1] + gx * ex[1] + gy * ey[1]
    return _bilinear(img, x, y)


def image_to_chip(points5: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """The ``(2, 3)`` affine map from image pixels to the chip's pixels (both in glvd's convention: the chip
    spans ``[0, size]``) for the chip :func:`face_chip` cuts on these five points: where an image point lands
    on the chip, and so on the backbone's maps (:meth:`glvd.facenet.DlibFaceResNet.forward_with_maps`)."""
    d = chip_details(points5, size, padding)
    tl, tr, bl, _ = _corners(d.rect, d.angle)
    A = np.stack([(tr - tl) / (size - 1), (bl - tl) / (size - 1)], 1)  # chip index (x, y) -> dlib image pixel
    inv = np.linalg.inv(A)
    # glvd image p -> dlib p - 0.5 -> chip index inv @ (p - 0.5 - tl) -> glvd chip index + 0.5
    return np.concatenate([inv, (0.5 - inv @ (tl + 0.5))[:, None]], 1)


def face_chip(
    image: np.ndarray, points5: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> np.ndarray:
    """The aligned chip from five points (glvd pixels): ``(size, size, 3)`` uint8."""
    return extract_chip(image, chip_details(points5, size, padding))
