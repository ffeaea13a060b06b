"""Photometric augmentation of cached renders: the same face under another camera response.

The frozen encoder's features follow each real photo's light, colour and sharpness (research/
photo_consistency_sources: they, not the landmarks or the identity code, make two photos of one person
differ). Training the fields on renders whose colour balance, exposure, gamma, sharpness and noise change
while the shape stays teaches them to leave those feature changes out of the shape. Geometry is untouched:
the cameras, landmarks and truth of a batch stay valid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x (M, 3, S, S)`` blurred with a separable Gaussian of per-image ``sigma (M,)`` pixels (0: unchanged)."""
    r = 3
    k = torch.arange(-r, r + 1, dtype=x.dtype)
    w = torch.exp(-0.5 * (k[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    w = w / w.sum(1, keepdim=True)  # (M, 7)
    M, C, S, _ = x.shape
    y = x.reshape(1, M * C, S, S)
    wx = w.repeat_interleave(C, 0)  # (M*C, 7)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), wx[:, None, None, :], groups=M * C)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), wx[:, None, :, None], groups=M * C)
    return y.reshape(M, C, S, S)


def augment(images: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """``images (B, V, 3, S, S)`` in [0, 1] -> the same shape: per view a random white balance (channel gains
    0.75-1.25), exposure (+-0.08), gamma (0.75-1.35), a grey mix (one in five), a blur (half of them, sigma up
    to 1.2 px) and sensor noise (sigma up to 0.03); ``strength`` scales every range (0: unchanged)."""
    B, V = images.shape[:2]
    x = images.flatten(0, 1)
    M = x.shape[0]

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(M, *shape, generator=gen)

    s = float(strength)
    gain = 1 + s * u(-0.25, 0.25, 3, 1, 1)
    x = (x * gain + s * u(-0.08, 0.08, 1, 1, 1)).clamp(0, 1)
    x = x ** (1 + s * u(-0.25, 0.35, 1, 1, 1))
    grey = (torch.rand(M, 1, 1, 1, generator=gen) < 0.2 * min(s, 1.0)).to(x.dtype)
    x = grey * x.mean(1, keepdim=True).expand_as(x) + (1 - grey) * x
    sigma = s * u(0, 1.2) * (torch.rand(M, generator=gen) < 0.5).to(x.dtype)
    x = torch.where((sigma > 0.05)[:, None, None, None], _blur(x, sigma), x)
    x = x + torch.randn(x.shape, generator=gen) * (s * u(0, 0.03, 1, 1, 1))
    return x.clamp(0, 1).reshape(images.shape)
