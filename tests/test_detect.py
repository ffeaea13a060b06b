"""glvd.detect: faces on real photos (MediaPipe Face Mesh -> 68 points, OpenCV Haar fallback).

Photos come from installed packages (scikit-image's astronaut, matplotlib's
grace_hopper). Tests that need MediaPipe skip when it is not importable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glvd import detect
from glvd.crop import CROP_MARGIN, crop_box_from_points
from glvd.errors import NoFaceError
from glvd.landmarks_map import MEDIAPIPE_TO_68, mediapipe_to_68
from glvd.preprocess import load_image, prepare_view

needs_mediapipe = pytest.mark.skipif(
    not detect.mediapipe_available(), reason="mediapipe (0.10.21) is not installed: Haar fallback only"
)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the astronaut test photo")
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    cbook = pytest.importorskip("matplotlib.cbook", reason="matplotlib ships the grace_hopper test photo")
    return load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _photos(astronaut: np.ndarray, hopper: np.ndarray) -> dict[str, np.ndarray]:
    return {"astronaut": astronaut, "hopper": hopper}


# --------------------------------------------------------------------------- no detector needed


def test_mapping_table() -> None:
    assert len(MEDIAPIPE_TO_68) == 68
    ids = [i for t in MEDIAPIPE_TO_68 for i in t]
    assert all(0 <= i < 468 for i in ids)
    pts = np.random.default_rng(0).normal(size=(478, 3)).astype(np.float32)
    out = mediapipe_to_68(pts)
    assert out.shape == (68, 3) and out.dtype == np.float32
    assert np.allclose(out[8], pts[152]) and np.allclose(out[27], (pts[168] + pts[6]) / 2)
    with pytest.raises(ValueError):
        mediapipe_to_68(pts[:100])


def test_box_same_as_training() -> None:
    pts = np.random.default_rng(1).uniform(50, 300, size=(68, 2)).astype(np.float32)
    cx, cy, side = crop_box_from_points(torch.from_numpy(pts), CROP_MARGIN)
    assert np.allclose(detect.box_from_landmarks(pts), (float(cx), float(cy), float(side)), rtol=1e-5)


def test_calibrated_box_mirrors_profiles() -> None:
    a = detect.calibrated_box("haar-profile", (100, 50, 80, 80), mirrored=False)
    b = detect.calibrated_box("haar-profile", (100, 50, 80, 80), mirrored=True)
    assert a[1] == b[1] and a[2] == b[2] and a[0] - 140 == pytest.approx(140 - b[0])


def test_haar_fallback_matches_mediapipe_box(astronaut: np.ndarray, hopper: np.ndarray) -> None:
    """The calibrated Haar box lands near the 68-landmark box (numbers measured with MediaPipe)."""
    expected = {"astronaut": (225.4, 131.1, 148.6), "hopper": (263.7, 246.0, 295.5)}
    for name, img in _photos(astronaut, hopper).items():
        v = prepare_view(img, name=name, detector="haar")
        cx, cy, side = v.box
        ex, ey, es = expected[name]
        assert v.landmarks68 is None and v.detector.startswith("haar")
        assert abs(cx - ex) < 0.1 * es and abs(cy - ey) < 0.1 * es, (name, v.box)
        assert 0.85 < side / es < 1.15, (name, v.box)


def test_bad_backend(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError):
        detect.detect_faces(astronaut, backend="dlib")


# --------------------------------------------------------------------------- MediaPipe


def _check_face_geometry(lm: np.ndarray, box: tuple[float, float, float], name: str) -> None:
    cx, cy, side = box
    assert lm.shape == (68, 2), name
    inside = (np.abs(lm[:, 0] - cx) < side / 2) & (np.abs(lm[:, 1] - cy) < side / 2)
    assert inside.all(), name
    eyes_y = lm[36:48, 1].mean()
    mouth_y = lm[48:68, 1].mean()
    brows_y = lm[17:27, 1].mean()
    nose_tip = lm[30]
    assert brows_y < eyes_y < nose_tip[1] < mouth_y < lm[8, 1], name
    assert lm[36, 0] < lm[39, 0] < lm[27, 0] < lm[42, 0] < lm[45, 0], name  # eye corners left to right
    assert lm[0, 0] < nose_tip[0] < lm[16, 0] and lm[48, 0] < lm[54, 0], name
    # framed like the training crops: the ICT template's 68 points, frontal, normalised to their box,
    # have the chin at 0.79, the brows at 0.21, the eye outer corners at 0.31 / 0.69 (x) and 0.33 (y)
    u = (lm - np.array([cx - side / 2, cy - side / 2])) / side
    assert abs(u[8, 1] - 0.79) < 0.04 and abs(u[17:27, 1].min() - 0.21) < 0.04, name
    assert abs(u[36, 0] - 0.31) < 0.04 and abs(u[45, 0] - 0.69) < 0.04 and abs(u[36, 1] - 0.32) < 0.04, name


@needs_mediapipe
def test_landmarks_on_real_photos(astronaut: np.ndarray, hopper: np.ndarray) -> None:
    for name, img in _photos(astronaut, hopper).items():
        v = prepare_view(img, size=192, name=name)
        assert v.detector == "mediapipe" and v.faces_found == 1
        assert v.landmarks68 is not None and v.landmarks68.dtype == np.float32
        assert v.landmarks_dense is not None and v.landmarks_dense.shape == (468, 2)
        _check_face_geometry(v.landmarks68, v.box, name)
        assert np.allclose(detect.box_from_landmarks(v.landmarks68), v.box, rtol=1e-4)
        # the crop-space landmarks are consistent with K_crop: the nose tip lands mid-crop
        lc = v.landmarks68_crop
        assert lc is not None and (np.abs(lc - 96) < 96).all()


@needs_mediapipe
def test_crop_content_at_landmark(astronaut: np.ndarray) -> None:
    """The crop pixel K_crop gives for a landmark's ray is the photo's pixel at that landmark."""
    v = prepare_view(astronaut, size=256)
    K, Kc = v.K_image.double(), v.K_crop.double()
    for i in (30, 36, 45, 48, 8):
        u, w_ = v.landmarks68[i]
        ray = torch.linalg.solve(K, torch.tensor([float(u), float(w_), 1.0], dtype=torch.float64)) * 0.6
        uc, vc = (Kc @ ray / ray[2])[:2].tolist()
        assert abs(uc - v.landmarks68_crop[i, 0]) < 1e-3 and abs(vc - v.landmarks68_crop[i, 1]) < 1e-3
        crop_px = v.crop[:, int(vc), int(uc)].numpy() * 255
        r = max(1, round(v.box[2] / 256 / 2))  # photo pixels per crop pixel, halved
        patch = astronaut[int(w_) - r : int(w_) + r + 1, int(u) - r : int(u) + r + 1].astype(np.float32)
        assert np.abs(crop_px - patch.reshape(-1, 3).mean(0)).max() < 25, i


@needs_mediapipe
def test_flipped_photo(astronaut: np.ndarray, hopper: np.ndarray) -> None:
    for name, img in _photos(astronaut, hopper).items():
        a = prepare_view(img, name=name)
        b = prepare_view(np.ascontiguousarray(img[:, ::-1]), name=name)
        w = img.shape[1]
        assert abs((w - b.box[0]) - a.box[0]) < 0.05 * a.box[2]
        assert abs(b.box[1] - a.box[1]) < 0.05 * a.box[2] and abs(b.box[2] / a.box[2] - 1) < 0.08
        _check_face_geometry(b.landmarks68, b.box, name + " flipped")


@needs_mediapipe
@pytest.mark.parametrize("k", [1, 2, 3])
def test_photo_stored_sideways(hopper: np.ndarray, k: int) -> None:
    """Rotated by 90/180/270 degrees without an EXIF tag: still found, in the rotated photo's pixels."""
    a = prepare_view(hopper)
    rot = np.ascontiguousarray(np.rot90(hopper, k))
    b = prepare_view(rot, name="sideways.jpg")
    h, w = hopper.shape[:2]
    # where the upright box centre goes under rot90^k (continuous coords)
    x, y = a.box[0], a.box[1]
    for j in range(k):
        ww = w if j % 2 == 0 else h
        x, y = y, ww - x
    assert abs(b.box[0] - x) < 0.1 * a.box[2] and abs(b.box[1] - y) < 0.1 * a.box[2]
    assert 0.8 < b.box[2] / a.box[2] < 1.25


@needs_mediapipe
@pytest.mark.parametrize("angle", [-25.0, 25.0])
def test_tilted_photo(astronaut: np.ndarray, angle: float) -> None:
    cv2 = pytest.importorskip("cv2")
    M = cv2.getRotationMatrix2D((256.0, 256.0), angle, 1.0)
    img = cv2.warpAffine(astronaut, M, (512, 512), borderMode=cv2.BORDER_REFLECT)
    v = prepare_view(img, name="tilted.jpg")
    assert v.landmarks68 is not None
    a = prepare_view(astronaut)
    centre = M @ np.array([a.box[0] - 0.5, a.box[1] - 0.5, 1.0]) + 0.5
    assert np.hypot(*(np.array(v.box[:2]) - centre)) < 0.1 * a.box[2]
    # eyes still above the mouth along the tilted face's own axis
    lm = v.landmarks68
    up = lm[27] - lm[8]
    assert np.dot(lm[36:48].mean(0) - lm[48:68].mean(0), up) > 0


@needs_mediapipe
def test_largest_face_first_and_face_index(astronaut: np.ndarray, hopper: np.ndarray) -> None:
    cv2 = pytest.importorskip("cv2")
    small = cv2.resize(astronaut[40:260, 120:340], (150, 150), interpolation=cv2.INTER_AREA)
    big = cv2.resize(hopper[60:460, 60:460], (360, 360), interpolation=cv2.INTER_AREA)
    canvas = np.full((420, 700, 3), 170, np.uint8)
    canvas[30:390, 20:380] = big
    canvas[150:300, 500:650] = small
    v0 = prepare_view(canvas, name="two.jpg")
    v1 = prepare_view(canvas, name="two.jpg", face_index=1)
    assert v0.faces_found == 2 and v1.faces_found == 2
    assert v0.box[0] < 380 < 500 < v1.box[0]  # the big face is on the left
    assert v0.box[2] > 1.8 * v1.box[2]
    with pytest.raises(NoFaceError, match=r"two\.jpg"):
        prepare_view(canvas, name="two.jpg", face_index=2)
    # the other order on the canvas gives the same choice
    flipped = np.ascontiguousarray(canvas[:, ::-1])
    assert prepare_view(flipped).box[0] > 350


@needs_mediapipe
def test_small_face_in_big_photo(hopper: np.ndarray) -> None:
    """A face ~8% of a 2400-pixel photo: the full-image mesh misses it, the close-up pass finds it."""
    cv2 = pytest.importorskip("cv2")
    canvas = np.full((1800, 2400, 3), 120, np.uint8)
    face = cv2.resize(hopper, (256, 300), interpolation=cv2.INTER_AREA)
    canvas[1200:1500, 1700:1956] = face
    v = prepare_view(canvas, name="crowd.jpg")
    assert 1700 < v.box[0] < 1956 and 1200 < v.box[1] < 1500
    assert v.landmarks68 is not None
    _check_face_geometry(v.landmarks68, v.box, "small face")


@needs_mediapipe
def test_no_face_with_mediapipe() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    assert detect.detect_faces(img, backend="mediapipe") == []
    with pytest.raises(NoFaceError, match=r"no face found in noise\.png"):
        prepare_view(img, name="noise.png")


def test_without_mediapipe_falls_back_to_haar(astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on an install without mediapipe: "auto" uses Haar, "mediapipe" says what to install."""
    monkeypatch.setitem(detect._cache, "mp", None)
    assert detect.backend_name() == "haar"
    v = prepare_view(astronaut)
    assert v.detector.startswith("haar") and v.landmarks68 is None and v.crop.shape == (3, 192, 192)
    with pytest.raises(RuntimeError, match="mediapipe"):
        detect.detect_faces(astronaut, backend="mediapipe")
