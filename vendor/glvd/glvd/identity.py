"""The identity code of a view: the aligned chip (:mod:`glvd.face_chip`) through the frozen
backbone (:mod:`glvd.facenet`). One place, so that the training cache and the runtime compute
it the same way: MediaPipe's mesh on the image the camera saw (a render or the full photo),
five points, dlib's chip, the 128-D descriptor. Several views: their mean (order-free).

Two alignments (``IdentityEncoder(alignment=...)``):

- ``"mediapipe"`` (the default; the shipped model was trained on it, through the feature
  cache): the five points are MediaPipe mesh vertices (``face_chip.MEDIAPIPE_FIVE``), or the
  68's when 68 points are given.
- ``"dlib5"``: dlib's own five points, from its 5-point predictor in numpy
  (:mod:`glvd.shape_predictor`) run in the rectangle dlib's HOG face detector would return,
  picked near the mesh by that detector's filters in numpy (:mod:`glvd.hog_detector`); the
  descriptor then lands nearer dlib's ``compute_face_descriptor`` (tests/test_facenet.py).
  Needs the mesh (468/478 points). A model trained on one alignment must be run with the same one.
"""

from __future__ import annotations

import numpy as np
import torch

from .face_chip import (face_chip, five_points_from_68, five_points_from_mediapipe, five_points_from_predictor,
                        image_to_chip)
from .facenet import CHIP_MAP_CHANNELS, CHIP_MAP_SIZE, DESCRIPTOR_DIM, describe_with_maps, load_facenet

ALIGNMENTS = ("mediapipe", "dlib5")


class IdentityEncoder:
    """Descriptors of face views. ``device``: where the backbone runs; ``alignment``: one of
    :data:`ALIGNMENTS`; ``predictor_weights``: the 5-point predictor's file (``"dlib5"``)."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        weights: str | None = None,
        alignment: str = "mediapipe",
        predictor_weights: str | None = None,
    ):
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment {alignment!r}: expected one of {ALIGNMENTS}")
        self.net = load_facenet(weights, device)
        self.alignment = alignment
        self.predictor = None
        if alignment == "dlib5":
            from .shape_predictor import ShapePredictor, default_predictor

            self.predictor = ShapePredictor(predictor_weights) if predictor_weights else default_predictor()

    def five_points(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The ``(5, 2)`` points (glvd pixels) the chip of ``image`` is aligned on."""
        pts = np.asarray(points)
        if self.alignment == "dlib5":
            if len(pts) == 68:
                raise ValueError("alignment 'dlib5' needs MediaPipe's mesh (468/478 points), not the 68")
            return five_points_from_predictor(image, pts, self.predictor)
        return five_points_from_68(pts) if len(pts) == 68 else five_points_from_mediapipe(pts)

    def chips(self, images: list[np.ndarray], points: list[np.ndarray]) -> np.ndarray:
        """``images`` (H, W, 3) uint8 and their landmarks (MediaPipe's 468/478 or the 68, glvd
        pixels) -> ``(V, 150, 150, 3)`` uint8 chips."""
        return np.stack([face_chip(img, self.five_points(img, pts)) for img, pts in zip(images, points, strict=True)])

    def describe(self, images: list[np.ndarray], points: list[np.ndarray]) -> np.ndarray:
        """``(V, 128)`` float32 descriptors, one per view."""
        return self.describe_with_maps(images, points)[0]

    def describe_with_maps(self, images: list[np.ndarray], points: list[np.ndarray]
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per view: the descriptor ``(V, 128)``, the backbone's chip maps ``(V, 128, 8, 8)`` float32 and the
        ``(V, 2, 3)`` map from image pixels to chip pixels (:func:`glvd.face_chip.image_to_chip`), so that a
        point of the image can read the maps where it lands on the chip."""
        if not images:
            maps = np.zeros((0, CHIP_MAP_CHANNELS, CHIP_MAP_SIZE, CHIP_MAP_SIZE), np.float32)
            return np.zeros((0, DESCRIPTOR_DIM), np.float32), maps, np.zeros((0, 2, 3), np.float32)
        five = [self.five_points(img, pts) for img, pts in zip(images, points, strict=True)]
        chips = np.stack([face_chip(img, f) for img, f in zip(images, five, strict=True)])
        desc, maps = describe_with_maps(self.net, torch.from_numpy(chips))
        affine = np.stack([image_to_chip(f) for f in five]).astype(np.float32)
        return desc.cpu().numpy(), maps.cpu().numpy(), affine
