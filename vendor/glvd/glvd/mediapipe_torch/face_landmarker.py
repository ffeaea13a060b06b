"""MediaPipe's face landmark networks (192 x 192 crop -> 468 or 478 points) in torch.

Two models, run as their TFLite graphs (:mod:`.tflite_graph`):

- ``face_landmark.tflite``: 468 mesh points (FaceMesh with ``refine_landmarks=False``);
- ``face_landmark_with_attention.tflite``: the mesh plus lips, eyes and irises refined through
  MediaPipe's attention crops (its custom operators, ported), assembled into 478 points as
  MediaPipe's TensorsToFaceLandmarksWithAttention graph does (LandmarksRefinementCalculator,
  indices in :mod:`._refinement`).

Both give points in the crop's pixels (x, y in [0, 192], z in the same unit as x) and the
face-presence score (sigmoid of the face flag; MediaPipe drops the face at <= 0.5).
"""

from __future__ import annotations

import torch

from ._refinement import REFINEMENT
from .tflite_graph import TFLiteGraph

INPUT_SIZE = 192
#: ThresholdingCalculator of face_landmark_cpu: a face is kept when its presence is > this
MIN_PRESENCE = 0.5


class FaceLandmarker(torch.nn.Module):
    """``forward(x)``: (B, 3, 192, 192) RGB in [0, 1] -> (points (B, 468|478, 3), presence (B,))."""

    def __init__(self, graph: TFLiteGraph, attention: bool):
        super().__init__()
        self.net = graph
        self.attention = attention

    @property
    def num_points(self) -> int:
        return 478 if self.attention else 468

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        b = x.shape[0]
        if not self.attention:
            mesh, flag = out
            return mesh.reshape(b, 468, 3), torch.sigmoid(flag.reshape(b))
        *parts, flag = out
        return refine(parts, b), torch.sigmoid(flag.reshape(b))


def refine(parts: list[torch.Tensor], b: int) -> torch.Tensor:
    """LandmarksRefinementCalculator: six landmark outputs -> (B, 478, 3)."""
    mesh = parts[0].reshape(b, 468, 3)
    out = torch.zeros(b, 478, 3, dtype=mesh.dtype, device=mesh.device)
    for (_name, idx, z), t in zip(REFINEMENT, parts, strict=True):
        n = len(idx)
        dims = t.numel() // (b * n)
        pts = t.reshape(b, n, dims)
        index = torch.as_tensor(idx, device=mesh.device)
        out[:, index, :2] = pts[..., :2]
        if z == "copy":
            out[:, index, 2] = pts[..., 2]
        elif isinstance(z, list):  # assign_average: the mean z of those (already refined) points
            out[:, index, 2] = out[:, z, 2].mean(1, keepdim=True)
        # "none": the z already there (the mesh's) stays
    return out
