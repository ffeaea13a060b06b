"""glvd.mediapipe_torch: MediaPipe's face detector and face mesh in torch, against mediapipe 0.10.21.

Unit tests of each piece (anchors, box decoding, weighted NMS, TFLite padding, the attention
model's custom operators, the ROI) run everywhere. The comparisons with mediapipe itself (same
faces; landmarks within 0.5 px median and 1.5 px max at the photo's resolution) skip when
mediapipe is not installed, and the shared identity photos skip when ../shared is absent.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glvd.mediapipe_torch import WEIGHTS, load_graph, load_weights
from glvd.mediapipe_torch.blazeface import (
    FaceDetector,
    decode_boxes,
    scores_from_logits,
    ssd_anchors,
    weighted_nms,
)
from glvd.mediapipe_torch.pipeline import FaceMesh, NormRect, associate, detection_to_roi, project_landmarks
from glvd.mediapipe_torch.tflite_graph import (
    _same_pad,
    landmarks_to_transform_matrix,
    transform_landmarks,
    transform_tensor_bilinear,
)
from runtime_fixtures import IDENTITY_PHOTOS, identity_photos, package_photos

REPO = Path(__file__).resolve().parents[1]
MEDIAN_PX = 0.5
MAX_PX = 1.5


def _mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import mediapipe as mp

        _ = mp.solutions.face_mesh.FaceMesh
        return mp
    except Exception:  # not installed, or a wheel without the solutions (Python 3.13)
        return None


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The networks are small: one thread is faster than two on this shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


needs_mediapipe = pytest.mark.skipif(_mediapipe() is None, reason="mediapipe 0.10.21 (the reference) is not installed")


# --------------------------------------------------------------------------- pieces


def test_anchors() -> None:
    a = ssd_anchors()
    assert a.shape == (896, 2)
    # stride 8: 16 x 16 cells, 2 anchors each; then stride 16: 8 x 8 cells, 6 anchors each
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[1], a[0])
    assert np.allclose(a[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(a[511], [15.5 / 16, 15.5 / 16])
    assert np.allclose(a[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_decode_boxes_known_tensor() -> None:
    anchors = torch.tensor([[0.25, 0.5], [0.75, 0.75]])
    raw = torch.zeros(2, 16)
    raw[0, :4] = torch.tensor([12.8, -6.4, 25.6, 51.2])  # x, y offsets; w, h (in 1/128)
    raw[0, 4:6] = torch.tensor([-12.8, 12.8])  # keypoint 0
    out = decode_boxes(raw, anchors)
    yc, xc, w, h = 0.5 - 0.05, 0.25 + 0.1, 0.2, 0.4
    assert torch.allclose(out[0, :4], torch.tensor([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2]))
    assert torch.allclose(out[0, 4:6], torch.tensor([0.15, 0.6]))
    assert torch.allclose(out[1, :4], torch.tensor([0.75, 0.75, 0.75, 0.75]))  # zero size at the anchor
    assert torch.allclose(out[1, 4:].reshape(6, 2), torch.tensor([0.75, 0.75]).expand(6, 2))
    s = scores_from_logits(torch.tensor([0.0, 1000.0, -1000.0]))
    assert torch.allclose(s, torch.tensor([0.5, 1 / (1 + math.exp(-100)), 1 / (1 + math.exp(100))]))


def test_weighted_nms() -> None:
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [2.0, 2.0, 3.0, 3.0]], np.float32)
    kps = np.stack([np.full((6, 2), v, np.float32) for v in (0.0, 1.0, 5.0)])
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    out = weighted_nms(boxes, kps, scores)
    assert len(out) == 2
    box, kp, score = out[0]
    assert score == pytest.approx(0.9)  # the best box keeps its own score...
    assert np.allclose(box, (boxes[0] * 0.6 + boxes[1] * 0.9) / 1.5)  # ...and takes its cluster's weighted mean
    assert np.allclose(kp, 0.9 / 1.5)
    assert out[1][2] == pytest.approx(0.7) and np.allclose(out[1][0], boxes[2])


def test_same_padding_is_tflite() -> None:
    assert _same_pad(128, 5, 2) == (1, 2)  # the extra one at the bottom/right
    assert _same_pad(64, 3, 1) == (1, 1)
    assert _same_pad(64, 3, 2) == (0, 1)
    assert _same_pad(16, 2, 2) == (0, 0)


def test_custom_ops() -> None:
    # TransformTensorBilinear with the identity samples every pixel at itself
    x = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(1, 2, 5, 6)
    eye = torch.eye(4)[None]
    assert torch.allclose(transform_tensor_bilinear(x, eye, 5, 6), x)
    # a shift of half a pixel interpolates; past the edge is zero
    m = eye.clone()
    m[0, 0, 3] = 0.5
    y = transform_tensor_bilinear(x, m, 5, 6)
    assert torch.allclose(y[..., :5], (x[..., :5] + x[..., 1:]) / 2) and torch.all(y[..., 5] == 0)
    # TransformLandmarks: the 2 x 2 block and the translation
    m = torch.tensor([[[2.0, 0, 0, 1], [0, 3.0, 0, -1], [0, 0, 1, 0], [0, 0, 0, 1]]])
    pts = torch.tensor([[[1.0, 1.0], [0.0, 2.0]]])
    assert torch.allclose(transform_landmarks(pts, m), torch.tensor([[[3.0, 2.0], [1.0, 5.0]]]))
    # Landmarks2TransformMatrix: an axis-aligned square of points -> its box, scaled 1.5, on a 16 x 16 grid
    lm = torch.zeros(1, 4, 3)
    lm[0, :, :2] = torch.tensor([[10.0, 20.0], [30.0, 20.0], [10.0, 40.0], [30.0, 40.0]])
    opts = {"left_rotation_idx": 0, "right_rotation_idx": 1, "subset_idxs": [0, 1, 2, 3], "scale_x": 1.5,
            "scale_y": 1.5, "output_width": 16, "output_height": 16, "target_rotation_radians": 0.0}
    t = landmarks_to_transform_matrix(lm, opts)
    centre = t[0, :2, :2] @ torch.tensor([8.0, 8.0]) + t[0, :2, 3]
    assert torch.allclose(centre, torch.tensor([20.0, 30.0]), atol=1e-5)
    assert torch.allclose(t[0, :2, :2], torch.eye(2) * 1.5 * 20 / 16, atol=1e-6)
    # the same square turned by 90 degrees (left -> right points down): the matrix turns with it
    rot = lm.clone()
    rot[0, :, 0], rot[0, :, 1] = -lm[0, :, 1], lm[0, :, 0]
    t2 = landmarks_to_transform_matrix(rot, opts)
    assert torch.allclose(t2[0, :2, :2], torch.tensor([[0.0, -1.0], [1.0, 0.0]]) * 1.875, atol=1e-5)


def test_roi_from_detection() -> None:
    from glvd.mediapipe_torch.blazeface import Detection

    kps = np.zeros((6, 2), np.float32)
    kps[0], kps[1] = (0.4, 0.5), (0.6, 0.4)  # the eyes: the line rises to the right (in a 200 x 100 photo)
    det = Detection(0.3, 0.3, 0.4, 0.4, kps, 0.9)
    roi = detection_to_roi(det, 200, 100)
    assert roi.x_center == pytest.approx(0.5) and roi.y_center == pytest.approx(0.5)
    # square on the long side (0.4 * 200 = 80 px), times 1.5
    assert roi.width * 200 == pytest.approx(120) and roi.height * 100 == pytest.approx(120)
    assert roi.rotation == pytest.approx(-math.atan2(10, 40))
    # projection: the crop's centre is the ROI's centre, its right edge midpoint turns with the ROI
    pts = np.array([[0.5, 0.5, 0.1], [1.0, 0.5, 0.0]], np.float32)
    out = project_landmarks(pts, roi)
    assert np.allclose(out[0], [0.5, 0.5, 0.1 * roi.width])
    assert np.allclose(out[1, :2], [0.5 + 0.5 * math.cos(roi.rotation) * roi.width,
                                    0.5 + 0.5 * math.sin(roi.rotation) * roi.height], atol=1e-6)
    # association: a later rect overlapping an earlier one replaces it
    a, b, c = NormRect(0.5, 0.5, 0.2, 0.2, 0), NormRect(0.51, 0.5, 0.2, 0.2, 0), NormRect(0.1, 0.1, 0.1, 0.1, 0)
    kept = associate([(a, "a"), (c, "c"), (b, "b")])
    assert [k[1] for k in kept] == ["c", "b"]


def test_weights_file() -> None:
    assert WEIGHTS.exists() and WEIGHTS.stat().st_size < 6e6
    blob = load_weights()
    assert "Apache" in blob["licence"]
    assert {"face_detector", "face_landmarker", "face_landmarker_attention"} <= set(blob)
    assert (WEIGHTS.parent / "NOTICE").read_text().count("Apache License 2.0") == 1
    g = load_graph("face_landmarker_attention")
    assert g.output_names[-1] == "conv_faceflag"


def test_runtime_needs_no_mediapipe(tmp_path: Path) -> None:
    """The runtime path (the port, and glvd.detect on it) imports neither mediapipe nor flatbuffers."""
    pytest.importorskip("skimage.data", reason="scikit-image provides the astronaut test photo")
    code = (
        "import sys\n"
        "sys.modules['mediapipe'] = None\nsys.modules['flatbuffers'] = None\n"
        "import skimage.data\n"
        "from glvd.mediapipe_torch.pipeline import FaceMesh\n"
        "f = FaceMesh(device='cpu').process(skimage.data.astronaut())\n"
        "assert len(f) == 1 and f[0].landmarks.shape == (478, 3), f\n"
        "from glvd import detect\n"
        "faces = detect.detect_faces(skimage.data.astronaut())\n"
        "assert detect.backend_name() == 'mediapipe' and faces[0].landmarks_dense.shape == (468, 2), faces\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


@needs_mediapipe
def test_converter_reproduces_weights(tmp_path: Path) -> None:
    """tools/convert_mediapipe.py on the installed wheel gives the committed file's tensors."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import convert_mediapipe
    finally:
        sys.path.pop(0)
    mp = _mediapipe()
    out = tmp_path / "mp.pt"
    convert_mediapipe.convert(Path(mp.__file__).parent, out)
    new = torch.load(out, weights_only=True)
    old = load_weights()
    for key in ("face_detector", "face_landmarker", "face_landmarker_attention"):
        assert new[key]["graph"] == old[key]["graph"]
        assert set(new[key]["tensors"]) == set(old[key]["tensors"])
        for k, t in old[key]["tensors"].items():
            assert torch.equal(new[key]["tensors"][k], t), (key, k)


# --------------------------------------------------------------------------- against mediapipe


def _package_photos() -> dict[str, np.ndarray]:
    """The photos that ship in scikit-image and matplotlib, plus turned / mirrored / shrunk copies."""
    import cv2

    photos = package_photos()
    for name, img in list(photos.items()):
        h, w = img.shape[:2]
        photos[f"{name}_mirrored"] = np.ascontiguousarray(img[:, ::-1])
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 25.0, 1.0)
        photos[f"{name}_turned25"] = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        big = np.zeros((h * 2, w * 3, 3), np.uint8)
        big[h // 2: h // 2 + h, w: 2 * w] = img
        photos[f"{name}_small_in_wide"] = big
    return photos


_REFERENCE: dict = {}


def _reference_mesh(refine: bool):
    if refine not in _REFERENCE:
        mp = _mediapipe()
        _REFERENCE[refine] = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=refine, min_detection_confidence=0.5
        )
    return _REFERENCE[refine]


_OURS: dict = {}


def _ours(refine: bool) -> FaceMesh:
    if refine not in _OURS:
        _OURS[refine] = FaceMesh(refine_landmarks=refine)
    return _OURS[refine]


def _compare(photos: dict[str, np.ndarray], refine: bool) -> dict[str, tuple[float, float, float]]:
    """Per photo: (median, max) pixel distance of x, y and the max of z (in pixels of the width)."""
    out = {}
    for name, img in photos.items():
        h, w = img.shape[:2]
        ref = _reference_mesh(refine).process(img).multi_face_landmarks or []
        ours = _ours(refine).process(img, max_num_faces=1)
        assert len(ours) == len(ref), f"{name}: mediapipe found {len(ref)} faces, the port {len(ours)}"
        if not ref:
            continue
        a = np.array([(p.x * w, p.y * h, p.z * w) for p in ref[0].landmark], np.float64)
        b = np.concatenate([ours[0].pixels, ours[0].landmarks[:, 2:] * w], 1)
        assert a.shape == b.shape == (478 if refine else 468, 3)
        d = np.linalg.norm(a[:, :2] - b[:, :2], axis=1)
        out[name] = (float(np.median(d)), float(d.max()), float(np.abs(a[:, 2] - b[:, 2]).max()))
    return out


def _check(result: dict[str, tuple[float, float, float]]) -> None:
    report = "\n".join(f"{k}: median {m:.4f} px, max {x:.4f} px, z max {z:.4f}" for k, (m, x, z) in result.items())
    print(report)
    for name, (med, mx, zmax) in result.items():
        assert med <= MEDIAN_PX and mx <= MAX_PX, f"{name}: {med:.3f} / {mx:.3f} px\n{report}"
        assert zmax <= 2 * MAX_PX, f"{name}: z differs by {zmax:.3f}\n{report}"


@needs_mediapipe
def test_detector_matches_mediapipe() -> None:
    """Boxes, keypoints and scores of the short-range detector on the packaged photos."""
    mp = _mediapipe()
    photos = _package_photos()
    if not photos:
        pytest.skip("neither scikit-image nor matplotlib is installed (they ship the test photos)")
    det = FaceDetector(load_graph("face_detector"))
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as ref:
        for name, img in photos.items():
            h, w = img.shape[:2]
            r = ref.process(img).detections or []
            ours = det.detect(img)
            assert len(ours) == len(r), name
            for d, o in zip(r, ours, strict=True):
                b = d.location_data.relative_bounding_box
                assert np.allclose(o.box_pixels(w, h), (b.xmin * w, b.ymin * h, b.width * w, b.height * h), atol=0.5)
                kp = np.array([(p.x * w, p.y * h) for p in d.location_data.relative_keypoints])
                assert np.abs(o.keypoints * [w, h] - kp).max() < 0.5, name
                assert o.score == pytest.approx(d.score[0], abs=2e-3)


@needs_mediapipe
@pytest.mark.parametrize("refine", [True, False], ids=["478_attention", "468"])
def test_mesh_matches_mediapipe_package_photos(refine: bool) -> None:
    photos = _package_photos()
    if not photos:
        pytest.skip("neither scikit-image nor matplotlib is installed (they ship the test photos)")
    result = _compare(photos, refine)
    assert result, "no face found in the packaged photos"
    _check(result)


@needs_mediapipe
@pytest.mark.skipif(not IDENTITY_PHOTOS.is_dir(), reason=f"the shared identity photos are absent ({IDENTITY_PHOTOS})")
@pytest.mark.parametrize("refine", [True, False], ids=["478_attention", "468"])
def test_mesh_matches_mediapipe_identity_photos(refine: bool) -> None:
    photos = identity_photos()
    result = _compare(photos, refine)
    assert len(result) >= 0.9 * len(photos), f"faces found in {len(result)} of {len(photos)} photos"
    _check(result)
