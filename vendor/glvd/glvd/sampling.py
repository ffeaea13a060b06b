"""Bilinear sampling of per-view feature maps at projected points (``grid_sample``, differentiable).

The keypoint module, the vertex module while training, and the camera refiner read their
pixel-aligned features this way; the vertex module's inference path uses
:mod:`glvd.pooled_sampling` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_maps(maps: torch.Tensor, uv: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear samples of per-view maps at pixel positions.

    Args:
        maps: ``(B*V, C, H, W)``.
        uv: ``(B, V, P, 2)`` pixels of an ``size``-square crop.
    Returns:
        ``(B, V, P, C)``.
    """
    return sample_maps_channels_first(maps, uv, size).transpose(-1, -2)


def sample_maps_channels_first(maps: torch.Tensor, uv: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`sample_maps` in grid_sample's own layout, ``(B, V, C, P)`` (a view of its output)."""
    B, V, P, _ = uv.shape
    grid = (uv / size * 2.0 - 1.0).reshape(B * V, P, 1, 2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(B, V, -1, P)
