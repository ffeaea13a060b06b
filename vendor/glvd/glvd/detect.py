"""Face detection on photos, offline, with what ships in the package registries.

Every detector here ends in the same thing: the square crop box that training
used, ``glvd.crop.crop_box_from_points(landmarks68, CROP_MARGIN)``.

- **MediaPipe 0.10.21 Face Mesh** (preferred), run by its torch port
  :mod:`glvd.mediapipe_torch` (the BlazeFace detector and the mesh model, converted
  from the 0.10.21 wheel and shipped in the package; same landmarks as mediapipe's to
  well under a pixel; the mediapipe package is not needed): 468 landmarks mapped to
  the 68 (:mod:`glvd.landmarks_map`), so the box is computed exactly as in
  training. Smaller and extra faces: candidate boxes from the detector run on tiles
  of the photo (and, when the mesh finds nothing, OpenCV's Haar cascades) are cropped
  and the mesh is run again on each; then the photo is tried rotated by 90/180/270
  degrees (scans without an EXIF tag).
- **OpenCV Haar cascades** (fallback when MediaPipe's weights are missing, or a
  candidate the mesh cannot confirm): frontal + profile, the profile one also on
  the mirrored photo. A Haar box is mapped to the 68-landmark box by a scale and
  offset calibrated against MediaPipe on photos (``HAAR_CALIBRATION``); such
  faces have no landmarks.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .crop import CROP_MARGIN, crop_square
from .landmarks_map import mediapipe_to_68

#: Detector box (x, y, w, h) -> 68-landmark crop box:
#: ``cx = x + w * (0.5 + dx)``, ``cy = y + h * (0.5 + dy)``, ``side = s * max(w, h)``
#: (dx mirrored for profiles found on the mirrored photo). Medians of
#: (MediaPipe-68 box) vs (detector box): frontal Haar and the MediaPipe detector
#: on astronaut + grace_hopper (flips, 3 scales) and 86 lfw_subset faces; the
#: profile cascade on synthetic renders (yaw 20-60 deg) against their true
#: 68-landmark boxes, as no real profile photo ships in a package. See docs/photos.md.
HAAR_CALIBRATION: dict[str, tuple[float, float, float]] = {
    "haar-frontal": (0.0, 0.155, 1.36),
    "haar-profile": (-0.02, 0.10, 1.06),
    "mediapipe-detector": (0.0, 0.09, 1.42),
}
#: A candidate the mesh cannot confirm is still kept (box only) when MediaPipe's
#: detector is this sure, or a Haar profile box is this strong; Haar alone fires on
#: coins and the moon, so frontal Haar boxes need the MediaPipe detector to agree.
UNCONFIRMED_DETECTOR_SCORE = 0.75
UNCONFIRMED_PROFILE_WEIGHT = 2.5

#: Proposals of the tiled short-range detector need this score: lower, it fires on upside-down
#: faces (which the rotated-photo pass finds upright) and the mesh "confirms" them.
TILE_DETECTOR_SCORE = 0.7

#: Haar cascades run on a copy whose longer side is at most this (speed).
HAAR_MAX_SIDE = 1024
#: Side of the square the mesh sees when it is re-run on a candidate box, and
#: how much context (times the candidate's size) that square holds.
REGION_SIZE = 320
REGION_CONTEXT = 2.2

_lock = threading.Lock()  # MediaPipe graphs are not thread-safe
_cache: dict[Any, Any] = {}


@dataclass
class Face:
    """A detected face. ``crop_box`` = (cx, cy, side) in image pixels, matched to training."""

    crop_box: tuple[float, float, float]
    detector: str
    landmarks68: np.ndarray | None = None  # (68, 2) image pixels
    landmarks_dense: np.ndarray | None = None  # (468, 2) Face Mesh points, image pixels
    score: float = 1.0

    @property
    def side(self) -> float:
        return float(self.crop_box[2])


def box_from_landmarks(lm68: np.ndarray, margin: float = CROP_MARGIN) -> tuple[float, float, float]:
    """numpy twin of :func:`glvd.crop.crop_box_from_points` (same arithmetic)."""
    lo = lm68.min(axis=0)
    hi = lm68.max(axis=0)
    c = (lo + hi) * 0.5
    return float(c[0]), float(c[1]), float((hi - lo).max() * margin)


# --------------------------------------------------------------------------- MediaPipe


def mediapipe_available() -> bool:
    """MediaPipe's face networks, run by the torch port (:mod:`glvd.mediapipe_torch`; weights ship in the package).

    The mediapipe package itself is not used at run time (only as the reference in the tests).
    """
    if "mp" not in _cache:
        try:
            from .mediapipe_torch import WEIGHTS

            _cache["mp"] = WEIGHTS if WEIGHTS.exists() else None
        except Exception:  # a broken install (no torch, no opencv)
            _cache["mp"] = None
    return _cache["mp"] is not None


def _mp() -> Any:
    if not mediapipe_available():
        raise RuntimeError("MediaPipe's face networks are missing: glvd/weights/mediapipe_face.pt "
                           "(make it with tools/convert_mediapipe.py)")
    return _cache["mp"]


def _device() -> str:
    """The GPU when this process already uses one (the worker's model), else the CPU: no CUDA start-up just for this."""
    import torch

    return "cuda" if torch.cuda.is_available() and torch.cuda.is_initialized() else "cpu"


def _face_mesh() -> Any:
    """MediaPipe Face Mesh, static-image path, 468 points (refine_landmarks=False), in torch."""
    key = ("mesh", _device())
    if key not in _cache:
        _mp()
        from .mediapipe_torch.pipeline import FaceMesh

        _cache[key] = FaceMesh(refine_landmarks=False, min_detection_confidence=0.5, device=key[1])
    return _cache[key]


def _mesh_faces(img: np.ndarray, max_faces: int) -> list[np.ndarray]:
    """Face Mesh on a whole RGB image -> list of (468, 2) pixel landmarks."""
    with _lock:
        faces = _face_mesh().process(np.ascontiguousarray(img), max_num_faces=max_faces)
    return [f.pixels[:468] for f in faces]


def _detector_boxes(img: np.ndarray) -> list[tuple[float, float, float, float, float]]:
    """Smaller and extra faces -> (x, y, w, h, score) in pixels: MediaPipe's short-range detector
    (the mesh's own, in torch) on the whole photo and on overlapping tiles
    (:func:`glvd.mediapipe_torch.pipeline.detector_boxes`)."""
    from .mediapipe_torch.pipeline import detector_boxes

    with _lock:
        return detector_boxes(_face_mesh().detector, np.ascontiguousarray(img), min_score=TILE_DETECTOR_SCORE)


def _mesh_in_region(img: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray | None:
    """Run the mesh on a square region (resampled to REGION_SIZE); landmarks back in image pixels."""
    region = crop_square(img, (cx, cy, side), REGION_SIZE)
    found = _mesh_faces(region, 1)
    if not found:
        return None
    s = side / REGION_SIZE
    pts = found[0] * s + np.array([cx - side / 2, cy - side / 2], dtype=np.float32)
    return pts.astype(np.float32)


def _face_from_mesh(dense: np.ndarray, detector: str = "mediapipe") -> Face:
    lm68 = mediapipe_to_68(dense).astype(np.float32)
    return Face(box_from_landmarks(lm68), detector, lm68, dense)


# --------------------------------------------------------------------------- Haar


def _cascade(name: str) -> Any:
    key = ("haar", name)
    if key not in _cache:
        import cv2

        path = os.path.join(cv2.data.haarcascades, name)
        c = cv2.CascadeClassifier(path)
        if c.empty():
            raise RuntimeError(f"OpenCV Haar cascade missing or unreadable: {path}")
        _cache[key] = c
    return _cache[key]


HaarBox = tuple[str, tuple[float, float, float, float], float, bool]


def haar_boxes(img: np.ndarray, min_neighbors: int = 5) -> list[HaarBox]:
    """OpenCV Haar cascades -> [(kind, (x, y, w, h), score, mirrored)] in ``img`` pixels.

    kind is "haar-frontal" or "haar-profile"; the profile cascade (trained on one
    side) also runs on the mirrored photo (``mirrored`` True). score = the
    cascade's level weight.
    """
    import cv2

    h, w = img.shape[:2]
    r = min(1.0, HAAR_MAX_SIDE / max(h, w))
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if r < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)
    grey = cv2.equalizeHist(grey)
    gw = grey.shape[1]
    min_size = max(24, int(0.04 * min(grey.shape[:2])))
    out: list[HaarBox] = []
    jobs = [
        ("haar-frontal", "haarcascade_frontalface_default.xml", False),
        ("haar-profile", "haarcascade_profileface.xml", False),
        ("haar-profile", "haarcascade_profileface.xml", True),
    ]
    for kind, fname, flip in jobs:
        g = np.ascontiguousarray(grey[:, ::-1]) if flip else grey
        rects, _, weights = _cascade(fname).detectMultiScale3(
            g, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(min_size, min_size), outputRejectLevels=True
        )
        for (x, y, bw, bh), wt in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=False):
            xx = gw - x - bw if flip else x
            out.append((kind, (xx / r, y / r, bw / r, bh / r), float(wt), flip))
    return out


def calibrated_box(
    kind: str, rect: tuple[float, float, float, float], mirrored: bool = False
) -> tuple[float, float, float]:
    """A detector rectangle -> the 68-landmark crop box, with ``HAAR_CALIBRATION``."""
    x, y, w, h = rect
    dx, dy, s = HAAR_CALIBRATION[kind]
    if mirrored:  # a profile found on the mirrored photo: its offset mirrors too
        dx = -dx
    return x + w * (0.5 + dx), y + h * (0.5 + dy), s * max(w, h)


# --------------------------------------------------------------------------- search


def _overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """IoU of two (cx, cy, side) squares."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[2] / 2, a[0] + a[2] / 2, a[1] + a[2] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[2] / 2, b[0] + b[2] / 2, b[1] + b[2] / 2
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    return inter / max(a[2] ** 2 + b[2] ** 2 - inter, 1e-9)


def _dedup(faces: list[Face], iou: float = 0.35) -> list[Face]:
    """Keep one face per place: landmarked faces first, then by score."""
    order = sorted(faces, key=lambda f: (f.landmarks68 is None, -f.score))
    kept: list[Face] = []
    for f in order:
        if all(_overlap(f.crop_box, k.crop_box) < iou for k in kept):
            kept.append(f)
    return kept


def _rotate_points_back(pts: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """Points found in ``np.rot90(img, k)`` -> points in ``img`` (W x H, continuous coords)."""
    p = pts.astype(np.float64)
    # one rot90 (counter-clockwise) maps (u, v) of an image of width W_in to (v, W_in - u);
    # undo the turns last first; widths alternate w, h, w, ...
    for j in range(k % 4, 0, -1):
        w_in = w if (j - 1) % 2 == 0 else h
        p = np.stack([w_in - p[:, 1], p[:, 0]], 1)
    return p.astype(np.float32)


def _confirm(img: np.ndarray, cands: list[HaarBox], faces: list[Face], det_boxes: list) -> None:
    """Re-run the mesh close up on each candidate box no face covers yet; keep trusted boxes it misses."""
    for kind, rect, score, mirrored in cands:
        box = calibrated_box(kind, rect, mirrored)
        if any(_overlap(box, f.crop_box) > 0.3 for f in faces):
            continue
        x, y, w, h = rect
        dense = _mesh_in_region(img, x + w / 2, y + h / 2, max(w, h) * REGION_CONTEXT)
        if dense is not None:
            faces.append(_face_from_mesh(dense, "mediapipe"))
            continue
        # a box the mesh cannot confirm (e.g. a full profile): kept without landmarks if trusted
        if kind == "mediapipe-detector":
            trusted = score >= UNCONFIRMED_DETECTOR_SCORE
        else:
            trusted = any(_overlap(box, d) > 0.3 for d in det_boxes) or (
                kind == "haar-profile" and score >= UNCONFIRMED_PROFILE_WEIGHT
            )
        if trusted:
            faces.append(Face(box, kind, score=score))


def _detect_mediapipe(img: np.ndarray, max_faces: int) -> list[Face]:
    faces = [_face_from_mesh(d) for d in _mesh_faces(img, max_faces)]
    # the mesh's own detector is short-range: run on tiles of the photo it finds smaller faces
    dets: list[HaarBox] = [("mediapipe-detector", b[:4], b[4], False) for b in _detector_boxes(img)]
    det_boxes = [calibrated_box(k, r) for k, r, _, _ in dets]
    _confirm(img, dets, faces, det_boxes)
    if faces:
        return faces
    # turned faces both MediaPipe detectors miss: Haar frontal + profile proposals
    _confirm(img, haar_boxes(img, min_neighbors=4), faces, det_boxes)
    if faces:
        return faces
    # photos stored sideways without an EXIF tag
    h, w = img.shape[:2]
    for k in (1, 3, 2):
        rot = np.ascontiguousarray(np.rot90(img, k))
        found = _mesh_faces(rot, max_faces)
        for d in found:
            faces.append(_face_from_mesh(_rotate_points_back(d, k, w, h), "mediapipe-rotated"))
        if faces:
            break
    return faces


def _detect_haar(img: np.ndarray) -> list[Face]:
    return [Face(calibrated_box(k, rect, m), k, score=sc) for k, rect, sc, m in haar_boxes(img)]


def detect_faces(img: np.ndarray, backend: str = "auto", max_faces: int = 8) -> list[Face]:
    """All faces in an ``(H, W, 3)`` uint8 RGB image, largest first.

    backend: "auto" (MediaPipe when importable, else Haar), "mediapipe", "haar".
    """
    if backend not in ("auto", "mediapipe", "haar"):
        raise ValueError(f"unknown face detector {backend!r}: use auto, mediapipe or haar")
    use_mp = backend != "haar" and mediapipe_available()
    if backend == "mediapipe" and not use_mp:
        raise RuntimeError("MediaPipe's face networks are missing: glvd/weights/mediapipe_face.pt")
    faces = _detect_mediapipe(img, max_faces) if use_mp else _detect_haar(img)
    faces = _dedup(faces)
    faces.sort(key=lambda f: -f.side)
    return faces


def warm_up() -> None:
    """Build the detectors and run them once on a blank image.

    Their first call pays loading the weights and building the graphs (a tenth of a second with
    the torch port); a worker does this in the background while torch loads, so a first request
    does not wait.
    """
    blank = np.zeros((64, 64, 3), np.uint8)
    if mediapipe_available():
        _mesh_faces(blank, 8)
        _mesh_faces(blank, 1)
        _detector_boxes(blank)
    else:
        haar_boxes(blank)


def backend_name() -> str:
    """The detector "auto" uses on this install."""
    return "mediapipe" if mediapipe_available() else "haar"
