"""MediaPipe's FaceMesh solution, static-image path, rebuilt around the torch networks.

As ``mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=n,
refine_landmarks=...)`` runs its FaceLandmarkFrontCpu graph (mediapipe/modules/face_landmark,
v0.10.21, Apache-2.0) on a photo:

1. BlazeFace on the letterboxed photo (:mod:`.blazeface`); the best ``max_num_faces``.
2. FaceDetectionFrontDetectionToRoi: the detection's box, turned so the line between its two
   eye keypoints is horizontal (rotation = -atan2(-(y1 - y0), x1 - x0), normalised to
   [-pi, pi)), squared on its longer side and scaled by 1.5 (RectTransformationCalculator).
   Overlapping rects (IoU > 0.5, rotation ignored) are merged as AssociationNormRectCalculator
   does: the later one replaces the earlier.
3. FaceLandmarkCpu: that rotated square cropped to 192 x 192 (replicated border, values in
   [0, 1]), the landmark network (:mod:`.face_landmarker`), faces with presence <= 0.5 dropped.
4. LandmarkProjectionCalculator: crop-normalised points turned and scaled back into the photo;
   z scaled as x (by the rect's normalised width), as MediaPipe's normalised z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import load_graph
from .blazeface import Detection, FaceDetector, image_to_tensor
from .face_landmarker import INPUT_SIZE, MIN_PRESENCE, FaceLandmarker

#: FaceDetectionFrontDetectionToRoi options
ROI_SCALE = 1.5
ROI_EYE_KEYPOINTS = (0, 1)
ROI_TARGET_ANGLE = 0.0
#: AssociationNormRectCalculator of FaceLandmarkFrontCpu
ASSOCIATION_IOU = 0.5


@dataclass
class NormRect:
    """MediaPipe's NormalizedRect: centre, size (normalised to the photo) and rotation (radians)."""

    x_center: float
    y_center: float
    width: float
    height: float
    rotation: float

    def pixels(self, w: int, h: int) -> tuple[float, float, float, float, float]:
        return self.x_center * w, self.y_center * h, self.width * w, self.height * h, self.rotation


@dataclass
class MeshFace:
    """One face: landmarks as MediaPipe returns them (normalised x, y; z scaled as x)."""

    landmarks: np.ndarray  # (468 | 478, 3) normalised
    image_size: tuple[int, int]  # (w, h)
    roi: NormRect
    detection: Detection
    presence: float

    @property
    def pixels(self) -> np.ndarray:
        """(N, 2) landmarks in image pixels (x * w, y * h), as glvd.detect uses them."""
        w, h = self.image_size
        return (self.landmarks[:, :2] * np.array([w, h], np.float32)).astype(np.float32)


def normalize_radians(a: float) -> float:
    return a - 2 * math.pi * math.floor((a - (-math.pi)) / (2 * math.pi))


def detection_to_roi(det: Detection, w: int, h: int) -> NormRect:
    """DetectionsToRectsCalculator (rotation from the eyes) + RectTransformationCalculator."""
    k0, k1 = det.keypoints[ROI_EYE_KEYPOINTS[0]], det.keypoints[ROI_EYE_KEYPOINTS[1]]
    x0, y0 = float(k0[0]) * w, float(k0[1]) * h
    x1, y1 = float(k1[0]) * w, float(k1[1]) * h
    rotation = normalize_radians(ROI_TARGET_ANGLE - math.atan2(-(y1 - y0), x1 - x0))
    xc = det.xmin + det.width / 2
    yc = det.ymin + det.height / 2
    long_side = max(det.width * w, det.height * h)
    return NormRect(xc, yc, long_side / w * ROI_SCALE, long_side / h * ROI_SCALE, rotation)


def _rect_iou(a: NormRect, b: NormRect) -> float:
    ax0, ay0 = a.x_center - a.width / 2, a.y_center - a.height / 2
    bx0, by0 = b.x_center - b.width / 2, b.y_center - b.height / 2
    ix = min(ax0 + a.width, bx0 + b.width) - max(ax0, bx0)
    iy = min(ay0 + a.height, by0 + b.height) - max(ay0, by0)
    if ix < 0 or iy < 0:
        return 0.0
    inter = ix * iy
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def associate(items: list[tuple[NormRect, Detection]]) -> list[tuple[NormRect, Detection]]:
    """AssociationCalculator without previous rects: a later rect overlapping earlier ones replaces them."""
    out: list[tuple[NormRect, Detection]] = []
    for it in items:
        out = [o for o in out if _rect_iou(it[0], o[0]) <= ASSOCIATION_IOU]
        out.append(it)
    return out


def project_landmarks(pts: np.ndarray, roi: NormRect) -> np.ndarray:
    """LandmarkProjectionCalculator: (N, 3) crop-normalised -> photo-normalised."""
    x = pts[:, 0] - 0.5
    y = pts[:, 1] - 0.5
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    nx = (c * x - s * y) * roi.width + roi.x_center
    ny = (s * x + c * y) * roi.height + roi.y_center
    nz = pts[:, 2] * roi.width
    return np.stack([nx, ny, nz], 1).astype(np.float32)


class FaceMesh:
    """``FaceMesh(refine_landmarks=True).process(img, max_num_faces=1)`` -> [MeshFace].

    ``img``: (H, W, 3) uint8 RGB. The networks run on ``device`` (CUDA when there is one by
    default); the crops are OpenCV's, on the CPU, as in MediaPipe's CPU graph.
    """

    def __init__(self, refine_landmarks: bool = True, min_detection_confidence: float = 0.5,
                 min_presence: float = MIN_PRESENCE, device: str | torch.device | None = None,
                 weights: str | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.detector = FaceDetector(load_graph("face_detector", weights)).to(self.device).eval()
        key = "face_landmarker_attention" if refine_landmarks else "face_landmarker"
        self.landmarker = FaceLandmarker(load_graph(key, weights), attention=refine_landmarks).to(self.device).eval()
        self.min_detection_confidence = min_detection_confidence
        self.min_presence = min_presence

    @torch.no_grad()
    def process(self, img: np.ndarray, max_num_faces: int = 1) -> list[MeshFace]:
        img = np.ascontiguousarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        dets = self.detector.detect(img, self.min_detection_confidence)[:max_num_faces]
        if not dets:
            return []
        items = associate([(detection_to_roi(d, w, h), d) for d in dets])
        crops = [image_to_tensor(img, roi.pixels(w, h), INPUT_SIZE, INPUT_SIZE, (0.0, 1.0), border_zero=False)
                 for roi, _ in items]
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(self.device)
        pts, presence = self.landmarker(x)
        pts = pts.float().cpu().numpy() / INPUT_SIZE  # TensorsToLandmarks: crop-normalised (z / width too)
        presence = presence.float().cpu().numpy()
        faces = []
        for (roi, det), p, pr in zip(items, pts, presence, strict=True):
            if not pr > self.min_presence:
                continue
            faces.append(MeshFace(project_landmarks(p, roi), (w, h), roi, det, float(pr)))
        return faces


#: tiles of detector_boxes: sides (times the photo's longer side), overlapping by half
TILE_SIDES = (0.5, 0.25)


def _tile_centres(length: float, side: float) -> list[float]:
    if length <= side:
        return [length / 2]
    n = int(np.ceil((length - side) / (side / 2))) + 1
    return [float(v) for v in np.linspace(side / 2, length - side / 2, n)]


def detector_boxes(detector: FaceDetector, img: np.ndarray, min_score: float = 0.5,
                   iou: float = 0.5) -> list[tuple[float, float, float, float, float]]:
    """Face boxes (x, y, w, h, score) in pixels, small faces included: BlazeFace short range on
    the whole photo and on overlapping square tiles a half and a quarter of its longer side.

    MediaPipe's short-range model wants faces of a fifth of the frame or more; the tiles bring a
    face of a twentieth of the photo to that size (one batch through the network). Boxes of one
    face from several tiles are merged (the best-scored kept). Candidates for a close-up
    landmark pass, as glvd.detect uses them.
    """
    from .blazeface import INPUT_SIZE as DET_SIZE
    from .blazeface import letterbox_rect

    h, w = img.shape[:2]
    rects = [letterbox_rect(w, h)]
    for frac in TILE_SIDES:
        side = frac * max(w, h)
        if side < 2 * DET_SIZE:  # a small photo: the whole-photo pass sees its faces at full size
            continue
        rects += [(x, y, side, side, 0.0) for y in _tile_centres(h, side) for x in _tile_centres(w, side)]
    tensors = [image_to_tensor(img, r, DET_SIZE, DET_SIZE, (-1.0, 1.0), border_zero=True) for r in rects]
    batch = torch.from_numpy(np.stack(tensors)).permute(0, 3, 1, 2)
    found: list[tuple[float, float, float, float, float]] = []
    for (cx, cy, sw, sh, _), dets in zip(rects, detector.detect_batch(batch, min_score), strict=True):
        for box, _kps, score in dets:
            x0, y0 = cx - sw / 2 + box[0] * sw, cy - sh / 2 + box[1] * sh
            found.append((float(x0), float(y0), float((box[2] - box[0]) * sw), float((box[3] - box[1]) * sh), score))
    found.sort(key=lambda b: -b[4])
    kept: list[tuple[float, float, float, float, float]] = []
    for b in found:
        r = NormRect(b[0] + b[2] / 2, b[1] + b[3] / 2, b[2], b[3], 0.0)
        if all(_rect_iou(r, NormRect(k[0] + k[2] / 2, k[1] + k[3] / 2, k[2], k[3], 0.0)) <= iou for k in kept):
            kept.append(b)
    return kept
