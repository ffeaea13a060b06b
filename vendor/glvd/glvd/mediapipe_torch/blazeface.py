"""MediaPipe's short-range face detector (BlazeFace, 128 x 128) in torch.

The network is MediaPipe's face_detection_short_range.tflite run as its TFLite graph
(:mod:`.tflite_graph`); around it, the calculators of MediaPipe's FaceDetectionShortRange graph
(mediapipe/modules/face_detection, v0.10.21, Apache-2.0), ported one by one:

- ImageToTensorCalculator: the whole photo letterboxed into 128 x 128 (keep_aspect_ratio, zero
  border), values in [-1, 1]; the same OpenCV warpPerspective MediaPipe's CPU path uses.
- SsdAnchorsCalculator: 896 fixed-size anchors (strides 8, 16, 16, 16; 2 + 6 per cell).
- TensorsToDetectionsCalculator: box (x, y, w, h) and 6 keypoints relative to the anchors
  (scale 128), score = sigmoid(clip(logit, +-100)), kept when >= min_score.
- NonMaxSuppressionCalculator: weighted NMS, IoU > 0.3 (a box's cluster is averaged, weighted
  by the scores).
- DetectionProjectionCalculator: from the letterboxed tensor back to the photo (normalised).

Keypoints: 0 right eye, 1 left eye (the person's), 2 nose tip, 3 mouth, 4 right ear, 5 left ear;
as MediaPipe, "left" and "right" follow the image (index 0 is the eye on the image's left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .tflite_graph import TFLiteGraph

INPUT_SIZE = 128
#: SsdAnchorsCalculatorOptions of face_detection_short_range
ANCHOR_OPTIONS = {
    "num_layers": 4,
    "min_scale": 0.1484375,
    "max_scale": 0.75,
    "input_size": INPUT_SIZE,
    "anchor_offset": 0.5,
    "strides": (8, 16, 16, 16),
    "aspect_ratios": (1.0,),
    "interpolated_scale_aspect_ratio": 1.0,
}
#: TensorsToDetectionsCalculatorOptions
NUM_KEYPOINTS = 6
BOX_SCALE = 128.0
SCORE_CLIP = 100.0
MIN_SCORE = 0.5
#: NonMaxSuppressionCalculatorOptions
NMS_IOU = 0.3


@dataclass
class Detection:
    """One face: box and keypoints normalised to the photo ([0, 1] x [0, 1]), and its score."""

    xmin: float
    ymin: float
    width: float
    height: float
    keypoints: np.ndarray  # (6, 2)
    score: float

    def box_pixels(self, w: int, h: int) -> tuple[float, float, float, float]:
        return self.xmin * w, self.ymin * h, self.width * w, self.height * h


# --------------------------------------------------------------------------- anchors


def ssd_anchors(opts: dict = ANCHOR_OPTIONS) -> np.ndarray:
    """SsdAnchorsCalculator with fixed_anchor_size: (N, 2) anchor centres (x, y), normalised.

    With fixed_anchor_size every anchor has w = h = 1, so only the centres matter. Layers with
    the same stride share one grid; each grid cell holds one anchor per aspect ratio plus the
    interpolated one, per layer in the group.
    """
    strides = opts["strides"]
    n_layers = opts["num_layers"]
    centres = []
    layer = 0
    while layer < n_layers:
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += len(opts["aspect_ratios"]) + (1 if opts["interpolated_scale_aspect_ratio"] > 0 else 0)
            last += 1
        stride = strides[layer]
        fm = math.ceil(opts["input_size"] / stride)
        ys, xs = np.meshgrid(np.arange(fm), np.arange(fm), indexing="ij")
        cx = (xs + opts["anchor_offset"]) / fm
        cy = (ys + opts["anchor_offset"]) / fm
        grid = np.stack([cx, cy], -1).reshape(-1, 1, 2).astype(np.float32)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
        layer = last
    return np.concatenate(centres, 0)


# --------------------------------------------------------------------------- decoding


def decode_boxes(raw: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(N, 16) regressors -> (N, 16): ymin, xmin, ymax, xmax, then 6 keypoints (x, y).

    MediaPipe's XYWH layout (reverse_output_order) relative to fixed-size anchors:
    centre = raw / 128 + anchor, size = raw / 128.
    """
    ax, ay = anchors[:, 0], anchors[:, 1]
    xc = raw[:, 0] / BOX_SCALE + ax
    yc = raw[:, 1] / BOX_SCALE + ay
    w = raw[:, 2] / BOX_SCALE
    h = raw[:, 3] / BOX_SCALE
    out = [yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2]
    for k in range(NUM_KEYPOINTS):
        out.append(raw[:, 4 + 2 * k] / BOX_SCALE + ax)
        out.append(raw[:, 5 + 2 * k] / BOX_SCALE + ay)
    return torch.stack(out, 1)


def scores_from_logits(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits.clamp(-SCORE_CLIP, SCORE_CLIP))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (xmin, ymin, xmax, ymax) with boxes b (M, 4), as MediaPipe's Rectangle_f."""
    ix = np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0])
    iy = np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1])
    inter = np.where((ix >= 0) & (iy >= 0), np.maximum(ix, 0) * np.maximum(iy, 0), 0.0)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou: float = NMS_IOU) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """NonMaxSuppressionCalculator, WEIGHTED: [(box xyxy, keypoints (K, 2), score)] best first.

    The best remaining box takes every box overlapping it by IoU > ``iou`` (itself included);
    its box and keypoints become their score-weighted means; its score stays its own.
    """
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        top = order[0]
        sim = _iou(boxes[top], boxes[order])
        cand = order[sim > iou]
        rest = order[~(sim > iou)]
        if cand.size:
            wts = scores[cand].astype(np.float64)
            total = wts.sum()
            box = (boxes[cand] * wts[:, None]).sum(0) / total
            kps = (keypoints[cand] * wts[:, None, None]).sum(0) / total
        else:
            box, kps = boxes[top], keypoints[top]
        out.append((box.astype(np.float32), kps.astype(np.float32), float(scores[top])))
        if rest.size == order.size:
            break
        order = rest
    return out


# --------------------------------------------------------------------------- image to tensor


def rotated_rect_transform(cx: float, cy: float, w: float, h: float, rotation: float, out_w: int, out_h: int):
    """The perspective matrix ImageToTensorCalculator's OpenCV path warps with (src px -> dst px)."""
    import cv2

    src = cv2.boxPoints(((cx, cy), (w, h), rotation * 180.0 / math.pi)).astype(np.float32)
    dst = np.array([[0, out_h], [0, 0], [out_w, 0], [out_w, out_h]], np.float32)
    return cv2.getPerspectiveTransform(src, dst)


def image_to_tensor(img: np.ndarray, rect: tuple[float, float, float, float, float], out_w: int, out_h: int,
                    value_range: tuple[float, float], border_zero: bool) -> np.ndarray:
    """Crop a rotated rect (cx, cy, w, h px, rotation rad) of a uint8 RGB photo -> (H, W, 3) float32."""
    import cv2

    m = rotated_rect_transform(*rect, out_w, out_h)
    border = cv2.BORDER_CONSTANT if border_zero else cv2.BORDER_REPLICATE
    crop = cv2.warpPerspective(np.ascontiguousarray(img), m, (out_w, out_h), flags=cv2.INTER_LINEAR,
                               borderMode=border, borderValue=(0, 0, 0, 0))
    lo, hi = value_range
    scale = (hi - lo) / 255.0
    return crop.astype(np.float32) * np.float32(scale) + np.float32(lo)


def letterbox_rect(w: int, h: int) -> tuple[float, float, float, float, float]:
    """The whole photo padded to a square (PadRoi with keep_aspect_ratio), as a rotated rect."""
    side = float(max(w, h))
    return 0.5 * w, 0.5 * h, side, side, 0.0


# --------------------------------------------------------------------------- the detector


class FaceDetector(torch.nn.Module):
    """BlazeFace short-range: ``detect(img)`` -> [Detection] for a uint8 RGB photo, best first."""

    def __init__(self, graph: TFLiteGraph):
        super().__init__()
        self.net = graph
        self.register_buffer("anchors", torch.from_numpy(ssd_anchors()), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.anchors.device

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 128, 128) in [-1, 1] -> regressors (B, 896, 16), logits (B, 896)."""
        reg, cls = self.net(x)
        return reg, cls[..., 0]

    def detect_tensor(self, x: torch.Tensor, min_score: float = MIN_SCORE):
        """One (3, 128, 128) tensor -> [(box xyxy, keypoints, score)] in tensor-normalised coordinates."""
        return self.detect_batch(x[None], min_score)[0]

    def detect_batch(self, x: torch.Tensor, min_score: float = MIN_SCORE):
        """(B, 3, 128, 128) tensors -> per tensor [(box xyxy, keypoints, score)], tensor-normalised."""
        reg, logits = self(x.to(self.device))
        out = []
        for r, lg in zip(reg, logits, strict=True):
            boxes = decode_boxes(r, self.anchors)
            scores = scores_from_logits(lg)
            keep = scores >= min_score
            b = boxes[keep].float().cpu().numpy()
            s = scores[keep].float().cpu().numpy()
            ok = (b[:, 2] - b[:, 0] >= 0) & (b[:, 3] - b[:, 1] >= 0)  # TensorsToDetections drops inverted boxes
            b, s = b[ok], s[ok]
            xyxy = b[:, [1, 0, 3, 2]]
            kps = b[:, 4:].reshape(-1, NUM_KEYPOINTS, 2)
            out.append(weighted_nms(xyxy, kps, s))
        return out

    def detect(self, img: np.ndarray, min_score: float = MIN_SCORE) -> list[Detection]:
        h, w = img.shape[:2]
        rect = letterbox_rect(w, h)
        t = image_to_tensor(img, rect, INPUT_SIZE, INPUT_SIZE, (-1.0, 1.0), border_zero=True)
        x = torch.from_numpy(t).permute(2, 0, 1)
        out = []
        # DetectionProjectionCalculator: tensor-normalised -> photo-normalised (no rotation here)
        cx, cy, side = rect[0], rect[1], rect[2]

        def proj(p: np.ndarray) -> np.ndarray:
            return np.stack([(p[..., 0] - 0.5) * side / w + cx / w, (p[..., 1] - 0.5) * side / h + cy / h], -1)

        for box, kps, score in self.detect_tensor(x, min_score):
            lo = proj(box[:2])
            hi = proj(box[2:])
            out.append(Detection(float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]),
                                 proj(kps).astype(np.float32), score))
        return out
