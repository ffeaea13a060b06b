"""The face crop: one definition shared by synthetic renders and real photos.

Training crops and user-photo crops must frame the face the same way, or the
network sees a different world at inference. Both go through these functions.
"""

from __future__ import annotations

import numpy as np
import torch

#: Square crop side as a multiple of the 68-landmark bounding box's longer side.
CROP_MARGIN = 1.6
#: RGBA images are composited on this grey (transparent = neutral background).
ALPHA_BACKGROUND = 128
#: What fills crop pixels that fall outside the photo: the edge pixels are
#: replicated (``cv2.BORDER_REPLICATE``) so no flat grey band appears that the
#: renders never have.
BORDER = "replicate"


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


def crop_square(img: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """Resample the square ``box`` = (cx, cy, side) of ``img`` to ``size`` x ``size`` (bilinear).

    Crop pixel (i, j) covers image area ``x0 + [i, i+1] * side/size``; big
    reductions first go through an area-averaging resize so the crop does not alias.
    Returns HxWx3 uint8.
    """
    import cv2

    cx, cy, side = (float(v) for v in box)
    x0, y0 = cx - side / 2, cy - side / 2
    s = side / size  # image pixels per crop pixel
    src = img
    rx = ry = 1.0
    ox = oy = 0.0
    f = int(s // 1.5)
    if f >= 2:
        # only the region we need (plus a margin), reduced by ~f with area averaging
        h, w = img.shape[:2]
        ax0 = int(max(0, np.floor(x0) - 2 * f))
        ay0 = int(max(0, np.floor(y0) - 2 * f))
        ax1 = int(min(w, np.ceil(x0 + side) + 2 * f))
        ay1 = int(min(h, np.ceil(y0 + side) + 2 * f))
        if ax1 - ax0 >= 2 and ay1 - ay0 >= 2:
            roi = img[ay0:ay1, ax0:ax1]
            nw, nh = max(1, round(roi.shape[1] / f)), max(1, round(roi.shape[0] / f))
            src = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            rx, ry = nw / roi.shape[1], nh / roi.shape[0]
            ox, oy = ax0, ay0
    # continuous coords, centres at +0.5: u_src = (x0 - ox + (i + 0.5) * s) * rx; cv2 index = u_src - 0.5
    M = np.array(
        [
            [s * rx, 0.0, (x0 - ox + 0.5 * s) * rx - 0.5],
            [0.0, s * ry, (y0 - oy + 0.5 * s) * ry - 0.5],
        ],
        dtype=np.float64,
    )
    border = cv2.BORDER_REPLICATE if BORDER == "replicate" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(
        np.ascontiguousarray(src),
        M,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=border,
        borderValue=(ALPHA_BACKGROUND,) * 3,
    )
