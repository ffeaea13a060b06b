"""What the texture bake does where the photos are not to be trusted: the person's skin tone, how like a
colour is to it (or to the background behind an outline), the pull-push fill, and the hole metric.

Colours are RGB 0-255 float32 throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: Colour distance (0-255 RGB) at which a colour stops counting as skin-like (Gaussian sigma).
TONE_SIGMA = 45.0


def skin_tone(colors: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """The person's skin tone ``(3,)`` float32 0-255 from baked texels ``(P, 3)`` and their confidence ``(P,)``.

    The median of the well-seen texels, then again of those near it (brows, lips, eyes and hair fall out).
    """
    well = confidence >= 0.9
    if well.sum() < 50:
        well = confidence > 0
    if not well.any():
        return np.full(3, 128.0, np.float32)
    px = colors[well]
    tone = np.median(px, 0)
    near = np.linalg.norm(px - tone, axis=1) < 1.5 * TONE_SIGMA
    if near.sum() >= 20:
        tone = np.median(px[near], 0)
    return tone.astype(np.float32)


def likeness(colors: np.ndarray, tone: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """``(P,)`` in (0, 1]: 1 for the skin tone (or any reference colour, per texel or one), towards 0 for
    colours far from it (Gaussian, ``sigma`` default :data:`TONE_SIGMA`)."""
    s = TONE_SIGMA if sigma is None else sigma
    d2 = ((colors - tone) ** 2).sum(-1)
    return np.exp(-d2 * (0.5 / (s * s))).astype(np.float32)


def background_behind(img: np.ndarray, A: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """``(D * D, 3)`` float32: the photo's background (what lies outside the mesh in this view) in the depth
    map's frame, diffused in under the mesh (pull-push): the colour behind each point of the outline."""
    D = depth.shape[0]
    warped = cv2.warpAffine(np.ascontiguousarray(img), A[:2].astype(np.float64), (D, D), flags=cv2.INTER_AREA,
                            borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    return pull_push(warped, (~np.isfinite(depth)).astype(np.float32)).reshape(D * D, 3)


def hole_share(texture: np.ndarray, coverage: np.ndarray, chart: np.ndarray, tone: np.ndarray,
               backgrounds: Sequence[np.ndarray] = (), expected: np.ndarray | None = None) -> tuple[float, int]:
    """The share of the UV islands' texels that no photo saw and came out near-black or background-coloured.

    Args:
        texture: ``(S, S, 3)`` uint8; coverage ``(S, S)`` (0: no photo behind the texel); chart ``(S, S)``
            bool, the islands (:attr:`glvd.uv_layout.UVRaster.chart`); tone: the skin tone.
        backgrounds: RGB colours of the photos' backgrounds (0-255), e.g. the median of their borders.
        expected: ``(S, S, 3)`` the true colours where they are known (renders of a known albedo): a texel
            whose true colour is itself that dark or that close to a background (hair, clothes) does not count.
    Returns:
        ``(share, unseen texels)``; near-black: darker than 35% of the tone's brightness; background-coloured:
        within 30 of a background colour and further than that from the tone.
    """
    hole = chart & (coverage <= 0)
    n = int(hole.sum())
    if n == 0:
        return 0.0, 0

    def bad(px: np.ndarray) -> np.ndarray:
        out = px.mean(1) < 0.35 * float(np.mean(tone))
        for bg in backgrounds:
            bg = np.asarray(bg, np.float32)
            if np.linalg.norm(bg - tone) > 30.0:
                out |= np.linalg.norm(px - bg, axis=1) < 30.0
        return out

    wrong = bad(texture[hole].astype(np.float32))
    if expected is not None:
        wrong &= ~bad(np.asarray(expected)[hole].astype(np.float32))
    return float(wrong.mean()), n


def pull_push(color: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Fill a whole image from weighted samples (Gortler et al. 1996 pull-push, a fast smooth diffusion).

    Args:
        color: ``(S, S, 3)`` float32 colours (any value where weight is 0).
        weight: ``(S, S)`` float32 in [0, 1].
    Returns:
        ``(S, S, 3)`` float32: the colours where weight is 1, a smooth fill where it is 0.
    """
    w = np.clip(weight, 0.0, 1.0).astype(np.float32)
    c = color.astype(np.float32) * w[..., None]  # premultiplied
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    while True:
        levels.append((c, w))
        h, wd = w.shape
        if h <= 1 and wd <= 1:
            break
        nh, nw = max(1, (h + 1) // 2), max(1, (wd + 1) // 2)
        # pull: sums over 2x2 children (area mean * 4); weights saturate at 1
        c2 = cv2.resize(c, (nw, nh), interpolation=cv2.INTER_AREA) * 4.0
        w2 = cv2.resize(w, (nw, nh), interpolation=cv2.INTER_AREA) * 4.0
        scale = np.minimum(w2, 1.0) / np.maximum(w2, 1e-12)
        c, w = c2 * scale[..., None], np.minimum(w2, 1.0)
    # push: from the coarsest level down, fill each level's missing weight with the upsampled coarser result
    c, w = levels[-1]
    out = c / np.maximum(w, 1e-12)[..., None]
    for c, w in reversed(levels[:-1]):
        up = cv2.resize(out, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR)
        if up.ndim == 2:
            up = up[..., None]
        out = c + (1.0 - w)[..., None] * up
    return out
