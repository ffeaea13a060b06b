"""dlib's HOG frontal face detector in numpy (glvd.hog_detector): the pyramid, fHOG and the
filters' scores against dlib-bin itself (a development dependency), and the rectangle it picks
near a face against the one dlib's ``get_frontal_face_detector()`` returns."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from glvd.hog_detector import (
    HogDetectorError,
    HogFaceDetector,
    fhog,
    level_sizes,
    pyramid_levels,
    resize_region,
    upsampled_size,
)
from glvd.shape_predictor import detector_lattice
from runtime_fixtures import package_photos

REPO = Path(__file__).resolve().parents[1]

#: dlib's rectangle and score for the astronaut (``detector.run(img, 1)``)
ASTRONAUT_RECT = (175, 76, 265, 166)


def _tool():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import convert_dlib_hog_detector as tool
    finally:
        sys.path.pop(0)
    return tool


@pytest.fixture(scope="module")
def detector():
    return HogFaceDetector()


@pytest.fixture(scope="module")
def astronaut():
    pytest.importorskip("skimage")
    return package_photos()["astronaut"]


def test_missing_and_corrupt_weights_are_clear_errors(tmp_path):
    with pytest.raises(HogDetectorError, match="not found"):
        HogFaceDetector(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a weights file")
    with pytest.raises(HogDetectorError, match="cannot read"):
        HogFaceDetector(bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, thresholds=np.zeros(5))
    with pytest.raises(HogDetectorError, match="malformed"):
        HogFaceDetector(wrong)


def test_geometry_is_the_lattice_of_the_shape_predictor(detector):
    """The windows' rectangles are those glvd.shape_predictor.detector_lattice enumerates."""
    assert upsampled_size(512, 512) == (1025, 1026)
    sizes = level_sizes(*upsampled_size(600, 800))
    assert sizes[1] == (5 * sizes[0][0] // 6, 5 * sizes[0][1] // 6) and min(sizes[-1]) >= 53
    for level in (0, 4, 11):
        for axis in (0, 1):
            first = np.arange(-4, 40)
            ours = detector.window_edges(level, first, axis)
            lattice = detector_lattice(level, first + 10, axis)  # its index: the padded centre + 1
            assert np.array_equal(ours[0], lattice[0]) and np.array_equal(ours[1], lattice[1])


def test_regions_are_slices_of_the_whole(astronaut):
    """A region of a resize, and of a level through the chain, equals that part of the whole."""
    h, w = astronaut.shape[:2]
    up = upsampled_size(h, w)
    whole = resize_region(astronaut, (0, 0), (h, w), up, (0, up[0]), (0, up[1]))
    part = resize_region(astronaut[100:300, 50:400], (100, 50), (h, w), up, (210, 590), (105, 790))
    assert np.array_equal(part, whole[210:590, 105:790])
    sizes, levels = pyramid_levels(astronaut, {3: (40, 200, 16, 180)})
    full = whole
    for level in range(1, 4):
        full = resize_region(full, (0, 0), full.shape[:2], sizes[level], (0, sizes[level][0]), (0, sizes[level][1]))
    (y0, y1, x0, x1), pix = levels[3]
    assert np.array_equal(pix, full[y0:y1, x0:x1])


def test_fhog_shape_and_flat_image():
    feats = fhog(np.full((67, 90, 3), 128, np.uint8))
    assert feats.shape == (31, 6, 9)  # round(67 / 8) - 2, round(90 / 8) - 2
    assert np.all(feats == 0)  # no gradient anywhere
    assert fhog(np.zeros((12, 12, 3), np.uint8)).shape == (31, 0, 0)


def test_best_rectangle_from_a_rough_one(detector, astronaut):
    """From a rectangle a few pixels and a few per cent off, the astronaut's dlib rectangle."""
    for rough in ((178, 80, 270, 172), (170, 70, 262, 160), (176, 74, 266, 164)):
        rect, score = detector.best_rectangle(astronaut, rough)
        assert rect == ASTRONAUT_RECT, (rough, rect)
        assert 1.0 < score < 1.4  # dlib's: 1.164
    rect, score = detector.best_rectangle(astronaut, ASTRONAUT_RECT, exact=True)
    assert rect == ASTRONAUT_RECT and abs(score - 1.1641348) < 1e-5


# ---------------------------------------------------------------------------------- against dlib


@pytest.fixture(scope="module")
def dlib():
    return pytest.importorskip("dlib", reason="dlib-bin is a dev dependency (requirements.txt)")


def test_pyramid_is_dlibs(dlib, astronaut):
    h, w = astronaut.shape[:2]
    up = upsampled_size(h, w)
    ours = resize_region(astronaut, (0, 0), (h, w), up, (0, up[0]), (0, up[1]))
    assert np.array_equal(ours, dlib.resize_image(astronaut, *up))  # pyramid_up's resize
    crop = np.ascontiguousarray(astronaut[13:313, 7:264])
    ch, cw = crop.shape[:2]
    down = resize_region(crop, (0, 0), (ch, cw), (5 * ch // 6, 5 * cw // 6), (0, 5 * ch // 6), (0, 5 * cw // 6))
    assert np.array_equal(down, dlib.pyramid_down(6)(crop))


def test_window_scores_are_dlibs(dlib, detector, astronaut, tmp_path):
    """Every window near the astronaut's face that dlib scores >= -0.8 (non-max suppression
    off), with the same rectangle, filter and score (to float rounding) on the exact pyramid."""
    tool = _tool()
    path = tmp_path / "all_windows.svm"
    path.write_bytes(tool.without_suppression(tool.saved_detector()))
    rects, scores, filters = dlib.fhog_object_detector(str(path)).run(astronaut, 1, -0.8)
    ref = {}
    for r, s, k in zip(rects, scores, filters):
        ref.setdefault((r.left(), r.top(), r.right(), r.bottom(), k), []).append(s)
    windows = detector.candidates(ASTRONAUT_RECT, astronaut.shape[:2], levels_around=2, min_iou=0.3)
    compared = 0
    for level, s in detector.score_windows(astronaut, windows, exact=True).items():
        rows, cols = windows[level]
        ye, xe = detector.window_edges(level, rows, 1), detector.window_edges(level, cols, 0)
        for d, i, j in zip(*np.nonzero(s >= -0.8 + 1e-4)):
            key = (int(xe[0][j]), int(ye[0][i]), int(xe[1][j]), int(ye[1][i]), int(d))
            assert key in ref, key
            assert min(abs(v - s[d, i, j]) for v in ref[key]) < 1e-5
            compared += 1
    assert compared >= 20
    assert max(scores) == pytest.approx(1.1641348, abs=1e-6)
