"""The face crop: one definition shared by synthetic renders and real photos.

Training crops and user-photo crops must frame the face the same way, or the
network sees a different world at inference. Both go through these functions.
"""

from __future__ import annotations

import torch

#: Square crop side as a multiple of the 68-landmark bounding box's longer side.
CROP_MARGIN = 1.6


def crop_box_from_points(
    points2d: torch.Tensor, margin: float = CROP_MARGIN
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square box around 2D points.

    Args:
        points2d: ``(..., P, 2)`` pixel coordinates.
        margin: side as a multiple of the bounding box's longer side.
    Returns:
        ``(cx, cy, side)`` each of shape ``(...)``.
    """
    lo = points2d.amin(dim=-2)
    hi = points2d.amax(dim=-2)
    centre = (lo + hi) * 0.5
    side = (hi - lo).amax(dim=-1) * margin
    return centre[..., 0], centre[..., 1], side


def crop_intrinsics(K: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, side: torch.Tensor, size: int) -> torch.Tensor:
    """Intrinsics of a square crop resized to ``size`` pixels.

    Args:
        K: ``(..., 3, 3)`` intrinsics of the full image.
        cx, cy, side: ``(...)`` crop box in full-image pixels.
        size: crop resolution in pixels.
    Returns:
        ``(..., 3, 3)`` intrinsics in crop pixels.
    """
    s = size / side
    Kc = K.clone()
    Kc[..., 0, 0] = K[..., 0, 0] * s
    Kc[..., 1, 1] = K[..., 1, 1] * s
    Kc[..., 0, 1] = K[..., 0, 1] * s
    Kc[..., 0, 2] = (K[..., 0, 2] - (cx - side * 0.5)) * s
    Kc[..., 1, 2] = (K[..., 1, 2] - (cy - side * 0.5)) * s
    return Kc


def uncrop_intrinsics(
    Kc: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, side: torch.Tensor, size: int
) -> torch.Tensor:
    """Inverse of :func:`crop_intrinsics`: crop-pixel intrinsics back to the full image."""
    s = side / size
    K = Kc.clone()
    K[..., 0, 0] = Kc[..., 0, 0] * s
    K[..., 1, 1] = Kc[..., 1, 1] * s
    K[..., 0, 1] = Kc[..., 0, 1] * s
    K[..., 0, 2] = Kc[..., 0, 2] * s + (cx - side * 0.5)
    K[..., 1, 2] = Kc[..., 1, 2] * s + (cy - side * 0.5)
    return K
