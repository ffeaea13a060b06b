"""What the frozen real-face networks tell a guided model (:class:`Guidance`): the identity code and the
detected landmarks, and the landmark evidence the keypoint module reads from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .cameras import Cameras
from .facenet import DESCRIPTOR_DIM

#: per landmark keypoint and view: the offset to the detected landmark (2, camera frame, dm) and a found flag
LANDMARK_FEATURES = 3


def landmark_stack(landmarks68: list[np.ndarray | None]) -> torch.Tensor:
    """Per view the ``(68, 2)`` landmarks, or None where the detector found none -> ``(V, 68, 2)`` float32 (NaN
    there)."""
    nan = np.full((68, 2), np.nan, np.float32)
    return torch.from_numpy(np.stack([nan if p is None else np.asarray(p, np.float32) for p in landmarks68]))


@dataclass
class Guidance:
    """What the frozen real-face networks say about one batch of faces.

    identity ``(B, D)``: the mean of the views' identity descriptors (glvd.identity; zeros = unknown);
    landmarks ``(B, V, 68, 2)``: the detector's 68 landmarks in crop pixels, NaN where it found none;
    chip_maps ``(B, V, 128, 8, 8)``: the identity backbone's pixel features of each view's chip
    (:data:`glvd.facenet.CHIP_MAP_BLOCK`; zeros where no face was found), and chip_affine ``(B, V, 2, 3)``: crop
    pixels -> that chip's pixels; both None when the model reads no chip features.
    """

    identity: torch.Tensor
    landmarks: torch.Tensor
    chip_maps: torch.Tensor | None = None
    chip_affine: torch.Tensor | None = None

    @classmethod
    def none(cls, batch: int, views: int, device: torch.device, dim: int = DESCRIPTOR_DIM) -> Guidance:
        return cls(torch.zeros(batch, dim, device=device), torch.full((batch, views, 68, 2), float("nan"),
                                                                        device=device))

    @classmethod
    def of_views(cls, identity: torch.Tensor | np.ndarray, landmarks68: list[np.ndarray | None],
                 chip_maps: np.ndarray | None = None, chip_affine: np.ndarray | None = None) -> Guidance:
        """One face (batch 1): its identity code ``(D,)``, per view the ``(68, 2)`` crop-pixel landmarks or None
        where the detector found none (NaN), and optionally per view the chip maps ``(V, 128, 8, 8)`` and
        ``(V, 2, 3)`` crop-to-chip maps."""
        maps = None if chip_maps is None else torch.as_tensor(np.asarray(chip_maps), dtype=torch.float32)[None]
        aff = None if chip_affine is None else torch.as_tensor(np.asarray(chip_affine), dtype=torch.float32)[None]
        return cls(torch.as_tensor(identity, dtype=torch.float32).reshape(1, -1), landmark_stack(landmarks68)[None],
                   maps, aff)

    def to(self, device: torch.device) -> Guidance:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Guidance(self.identity.to(device), self.landmarks.to(device), move(self.chip_maps),
                        move(self.chip_affine))

    def to_chip(self, uv: torch.Tensor) -> torch.Tensor:
        """``uv (B, V, P, 2)`` crop pixels -> the same points in each view's chip pixels."""
        A = self.chip_affine.to(uv.dtype)
        return torch.einsum("bvij,bvpj->bvpi", A[..., :2], uv) + A[:, :, None, :, 2]

    def landmark_offsets(self, cams: Cameras, uv: torch.Tensor, depth: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the detector puts each of the 68 landmarks relative to the landmark keypoints.

        ``uv (B, V, 68, 2)``, ``depth (B, V, 68)``: the keypoints' projections. Returns the offset
        ``(B, V, 68, 2)`` in metres, the pixel offset back-projected to the keypoint's depth (camera frame;
        0 where not found), and the found flag ``(B, V, 68, 1)``.
        """
        lm = self.landmarks  # (B,V,68,2) crop pixels, NaN where not found
        found = torch.isfinite(lm).all(-1, keepdim=True)
        d_px = torch.where(found, lm - uv, torch.zeros_like(lm))
        f = torch.stack([cams.K[..., 0, 0], cams.K[..., 1, 1]], -1)[:, :, None]  # (B,V,1,2)
        return d_px / f * depth[..., None], found
