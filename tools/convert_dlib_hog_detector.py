"""Convert dlib's HOG frontal face detector to the numpy runtime's weights (and check it).

dlib's ``get_frontal_face_detector()`` (dlib-bin, a development dependency; dlib is under
the Boost Software License 1.0) is an ``object_detector<scan_fhog_pyramid<pyramid_down<6>>>``
that ``fhog_object_detector.save`` serialises (dlib/image_processing/object_detector.h,
scan_fhog_pyramid.h): version 2; the scanner (version 1, no feature extractor state, no
features, cell size 8, padding 0, an 80x80 px window, at most 1000 levels, 64x64 px the
smallest, the nuclear-norm strength, 3100 dimensions: 31 planes of 10x10 cells); the
non-max-suppression overlap test (IoU 0.33, covered 0.79); 5 weight vectors of 3101
doubles (the 31 10x10 filters, row-major, then the threshold).

dlib does not run those filters as they are: ``build_fhog_filterbank`` splits each 10x10
plane by SVD into rank-1 (column x row) float32 pairs, dropping singular values below
``max(1e-4, 0.001 * largest)``, and sums the separable responses. The file keeps exactly
those float32 pairs (``col``, ``row``, with their ``detector`` and ``plane``; ~300 pairs),
the 5 ``thresholds`` (float64) and the ``window``: ``glvd.hog_detector`` adds the pairs
back into 10x10 filters (in float64) at load time.

``--check`` measures against dlib on the real photos (the shared identity set and the two
package photos): how many of dlib's rectangles the numpy detector returns from the
rectangle the MediaPipe mesh gives, and the scores' difference.

Usage:  .venv/bin/python tools/convert_dlib_hog_detector.py [--out PATH] [--check]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "vendor" / "glvd"))
sys.path.insert(0, str(REPO / "tools"))

from dlib_dat import Reader  # noqa: E402
from glvd.hog_detector import NUM_FEATURES, HogFaceDetector, default_weights_path  # noqa: E402


def saved_detector() -> bytes:
    """dlib's frontal face detector, serialised by dlib-bin."""
    import dlib

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frontal_face_detector.svm"
        dlib.get_frontal_face_detector().save(str(path))
        return path.read_bytes()


def read_detector(data: bytes) -> dict:
    """The serialised ``object_detector<scan_fhog_pyramid<pyramid_down<6>>>``'s fields."""
    r = Reader(data)
    if r.int() != 2:
        raise ValueError("object_detector: expected version 2")
    if r.int() != 1:
        raise ValueError("scan_fhog_pyramid: expected version 1")
    feats_max, feats_n = r.int(), r.int()  # an empty dlib::array: max_size, size
    if feats_n != 0:
        raise ValueError(f"scanner holds {feats_n} feature images, expected none ({feats_max})")
    out = {
        "cell_size": r.int(), "padding": r.int(), "window": (r.int(), r.int()), "max_levels": r.int(),
        "min_layer": (r.int(), r.int()), "nuclear_norm": r.float(), "dims": r.int(),
        "overlap": (r.float(), r.float()),
    }
    weights = []
    for _ in range(r.int()):
        nr, nc = -r.int(), -r.int()
        if nc != 1 or nr != out["dims"] + 1:
            raise ValueError(f"weight vector {nr}x{nc}, expected {out['dims'] + 1}x1")
        weights.append(r.floats(nr))
    if r.pos != len(data):
        raise ValueError(f"{len(data) - r.pos} bytes left after the detector")
    out["weights"] = np.array(weights)
    return out


def without_suppression(data: bytes) -> bytes:
    """The serialised detector with its non-max suppression off (both overlap thresholds 1: no
    two different rectangles overlap more), so that ``run(image, upsample, adjust)`` returns
    every window scoring >= ``adjust`` with its score and filter: what the tests check each
    window's score against."""
    r = Reader(data)
    r.int(), r.int(), r.int(), r.int()  # versions, the empty feature array
    for _ in range(7):  # cell size, padding, window (2), max levels, min layer (2)
        r.int()
    r.float(), r.int()  # nuclear norm strength, dimensions
    start = r.pos
    r.float(), r.float()
    one = b"\x01\x01\x01\x00"  # 1.0: mantissa 1, exponent 0 (dlib's packed ints)
    return data[:start] + one + one + data[r.pos:]


def filter_size(det: dict) -> tuple[int, int]:
    """compute_fhog_window_size: the window's cells, grown by the padding."""
    cell = det["cell_size"]

    def cells(n: int) -> int:  # image_to_fhog of centered_rect(point(0, 0), n, n)
        lo = -(n // 2)
        return _to_fhog(lo + n - 1, cell) - _to_fhog(lo, cell) + 1

    return cells(det["window"][1]) + 2 * det["padding"], cells(det["window"][0]) + 2 * det["padding"]


def _to_fhog(p: int, cell: int) -> int:
    """image_to_fhog of one coordinate (filter padding 1): C++ integer division (towards zero)."""
    q = p - 1
    return int(q / cell) - 1


def separable_pairs(det: dict) -> dict[str, np.ndarray]:
    """build_fhog_filterbank: per detector and plane the rank-1 float32 (column, row) pairs."""
    fh, fw = filter_size(det)
    size = fh * fw
    cols, rows, planes, dets = [], [], [], []
    for d, w in enumerate(det["weights"]):
        for i in range(NUM_FEATURES):
            f = w[i * size:(i + 1) * size].reshape(fh, fw)
            u, s, vt = np.linalg.svd(f)
            thresh = max(1e-4, s.max() * 0.001)
            for j in np.nonzero(np.abs(s) >= thresh)[0]:  # round_zeros: |x| < eps -> 0
                cols.append((u[:, j] * np.sqrt(s[j])).astype(np.float32))
                rows.append((vt[j] * np.sqrt(s[j])).astype(np.float32))
                planes.append(i)
                dets.append(d)
    return {
        "col": np.array(cols), "row": np.array(rows), "plane": np.array(planes, np.uint8),
        "detector": np.array(dets, np.uint8), "thresholds": det["weights"][:, -1].copy(),
        "window": np.array(det["window"], np.int32), "filter_size": np.array((fh, fw), np.int32),
        "overlap": np.array(det["overlap"]),
    }


def check(detector: HogFaceDetector) -> None:
    """Against dlib on the real photos: dlib's rectangle found from the mesh's, and the score."""
    import dlib

    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "training"))
    from runtime_fixtures import identity_photos, package_photos

    from glvd.detect import detect_faces
    from glvd.shape_predictor import rect_from_mesh

    ffd = dlib.get_frontal_face_detector()
    photos = list(package_photos().items()) + list(identity_photos().items())
    hits, snap_hits, diffs = 0, 0, []
    for name, img in photos:
        rects, scores, _ = ffd.run(img, 1, 0.0)
        k = max(range(len(rects)), key=lambda i: rects[i].area())
        ref = (rects[k].left(), rects[k].top(), rects[k].right(), rects[k].bottom())
        faces = [f for f in detect_faces(img) if f.landmarks_dense is not None]
        mesh = max(faces, key=lambda f: f.side).landmarks_dense
        ours, score = detector.best_rectangle(img, rect_from_mesh(mesh, snap=False))
        hits += ours == ref
        snap_hits += rect_from_mesh(mesh) == ref
        diffs.append(abs(score - scores[k]) if ours == ref else np.nan)
        print(f"{name:28s} dlib {ref} {scores[k]:.4f}  ours {ours} {score:.4f}  {'ok' if ours == ref else 'MISS'}")
    print(f"dlib's rectangle: {hits}/{len(photos)} (the lattice snap alone: {snap_hits}); "
          f"score difference where found: max {np.nanmax(diffs):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=default_weights_path())
    ap.add_argument("--check", action="store_true", help="compare with dlib on the real photos")
    args = ap.parse_args()
    det = read_detector(saved_detector())
    arrays = separable_pairs(det)
    print(f"{len(det['weights'])} filters {tuple(arrays['filter_size'])} x {NUM_FEATURES}, "
          f"{len(arrays['col'])} separable pairs, thresholds {np.round(arrays['thresholds'], 4)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} KB)")
    if args.check:
        check(HogFaceDetector(args.out))


if __name__ == "__main__":
    main()
