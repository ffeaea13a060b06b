"""The camera head: each view's rotation and translation from the encoder's global feature and the focal
length, and the (u, v, log depth) parametrisation of the translation it predicts."""

from __future__ import annotations

import math

import torch
from torch import nn

from .cameras import FRONTAL_R, matrix_to_rotation_6d, rotation_6d_to_matrix
from .encoder import FeatureMaps


class CameraHead(nn.Module):
    """Per-view rotation and translation from the global feature and the focal length.

    The translation is parametrised by where the head origin projects (u, v in
    the crop, normalised) and a depth relative to the focal length, so the
    prediction is independent of the crop's pixel scale.
    """

    def __init__(self, global_channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(global_channels + 1, 256), nn.ReLU(inplace=True), nn.Linear(256, 9))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.register_buffer("r0", matrix_to_rotation_6d(FRONTAL_R), persistent=False)
        # a buffer, not a tensor built per call: that would copy from the CPU (a GPU sync, and no CUDA graph)
        self.register_buffer("uvz0", torch.tensor([0.0, 0.0, math.log(0.2)]), persistent=False)

    def forward(self, feats: FeatureMaps, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``R (B,V,3,3)``, ``t (B,V,3)`` and the raw ``(B,V,3)`` (u, v, log depth) prediction."""
        B, V = feats.batch, feats.views
        S = feats.size
        f = K[..., 0, 0] / S  # (B,V)
        out = self.mlp(torch.cat([feats.global_.reshape(B, V, -1), torch.log(f)[..., None]], -1))
        R = rotation_6d_to_matrix(out[..., :6] + self.r0)
        uvz = out[..., 6:] + self.uvz0
        t = uvz_to_translation(uvz, K, S)
        return R, t, uvz


def uvz_to_translation(uvz: torch.Tensor, K: torch.Tensor, size: int) -> torch.Tensor:
    """(u, v in [-1, 1] of the crop, log(depth * S / fx)) -> ``t (..., 3)``."""
    u = (uvz[..., 0] + 1) * 0.5 * size
    v = (uvz[..., 1] + 1) * 0.5 * size
    z = torch.exp(uvz[..., 2]) * K[..., 0, 0] / size
    x = (u - K[..., 0, 2]) / K[..., 0, 0] * z
    y = (v - K[..., 1, 2]) / K[..., 1, 1] * z
    return torch.stack([x, y, z], -1)


def translation_to_uvz(t: torch.Tensor, K: torch.Tensor, size: int) -> torch.Tensor:
    """Inverse of :func:`uvz_to_translation`."""
    z = t[..., 2]
    u = K[..., 0, 0] * t[..., 0] / z + K[..., 0, 2]
    v = K[..., 1, 1] * t[..., 1] / z + K[..., 1, 2]
    return torch.stack([u / size * 2 - 1, v / size * 2 - 1, torch.log(z * size / K[..., 0, 0])], -1)
