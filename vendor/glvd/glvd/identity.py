"""The identity code of a view: the aligned chip (:mod:`glvd.face_chip`) through the frozen
backbone (:mod:`glvd.facenet`). One place, so that the training cache and the runtime compute
it the same way: MediaPipe's mesh on the image the camera saw (a render or the full photo),
five points, dlib's chip, the 128-D descriptor. Several views: their mean (order-free).
"""

from __future__ import annotations

import numpy as np
import torch

from .face_chip import face_chip, five_points_from_68, five_points_from_mediapipe
from .facenet import DESCRIPTOR_DIM, describe, load_facenet


class IdentityEncoder:
    """Descriptors of face views. ``device``: where the backbone runs."""

    def __init__(self, device: str | torch.device = "cpu", weights: str | None = None):
        self.net = load_facenet(weights, device)

    def chips(self, images: list[np.ndarray], points: list[np.ndarray]) -> np.ndarray:
        """``images`` (H, W, 3) uint8 and their landmarks (MediaPipe's 468/478 or the 68, glvd
        pixels) -> ``(V, 150, 150, 3)`` uint8 chips."""
        out = []
        for img, pts in zip(images, points, strict=True):
            pts = np.asarray(pts)
            five = five_points_from_68(pts) if len(pts) == 68 else five_points_from_mediapipe(pts)
            out.append(face_chip(img, five))
        return np.stack(out)

    def describe(self, images: list[np.ndarray], points: list[np.ndarray]) -> np.ndarray:
        """``(V, 128)`` float32 descriptors, one per view."""
        if not images:
            return np.zeros((0, DESCRIPTOR_DIM), np.float32)
        return describe(self.net, torch.from_numpy(self.chips(images, points))).cpu().numpy()
