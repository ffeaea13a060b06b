"""Photo-like degradations of sRGB images: colour jitter, gamma, blur, low resolution, noise, JPEG.

All randomness comes from the caller's generator, so samples stay reproducible.
Each function takes and returns ``(n, 3, S, S)`` float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

try:  # JPEG round trips need OpenCV; without it they are skipped
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the degradations."""

    brightness: float = 0.25  # multiplicative, +-
    contrast: float = 0.25
    saturation: float = 0.35
    white_balance: float = 0.08  # per-channel gain, +-
    gamma: tuple[float, float] = (0.8, 1.25)
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # pixels
    lowres_prob: float = 0.15
    lowres_factor: tuple[float, float] = (0.35, 0.8)
    noise_prob: float = 0.7
    noise_std: tuple[float, float] = (0.002, 0.035)
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)


def _u(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def color_jitter(img: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Brightness, contrast, saturation, white balance and gamma."""
    n = img.shape[0]
    dev = img.device
    b = _u(gen, n, 1 - cfg.brightness, 1 + cfg.brightness).to(dev).view(n, 1, 1, 1)
    c = _u(gen, n, 1 - cfg.contrast, 1 + cfg.contrast).to(dev).view(n, 1, 1, 1)
    s = _u(gen, n, 1 - cfg.saturation, 1 + cfg.saturation).to(dev).view(n, 1, 1, 1)
    wb = (1 + cfg.white_balance * (2 * torch.rand(n, 3, generator=gen) - 1)).to(dev).view(n, 3, 1, 1)
    g = _u(gen, n, *cfg.gamma).to(dev).view(n, 1, 1, 1)
    img = img * (b * wb)  # one pass per step: lerp(m, x, c) = (x - m) * c + m
    img = torch.lerp(img.mean(dim=(1, 2, 3), keepdim=True).expand_as(img), img, c)
    img = torch.lerp(img.mean(1, keepdim=True).expand_as(img), img, s)
    return img.clamp_(0, 1).pow_(g)


def gaussian_blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image ``sigma (n,)`` in pixels (0 = unchanged)."""
    n, c, H, W = img.shape
    r = max(1, int(np.ceil(3 * float(sigma.max()))))
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    sg = sigma.to(img.device).clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (x[None] / sg) ** 2)
    k = k / k.sum(1, keepdim=True)  # (n, 2r+1)
    k = k.repeat_interleave(c, 0)  # one kernel per channel
    flat = img.reshape(1, n * c, H, W)
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), k[:, None, :, None], groups=n * c)
    return flat.view(n, c, H, W)


def jpeg(img: torch.Tensor, quality: list[int]) -> torch.Tensor:
    """JPEG round trip per image (``quality`` per image; <= 0 skips that image)."""
    if cv2 is None:
        return img
    out = img.clone()
    arr = (img.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i, q in enumerate(quality):
        if q <= 0:
            continue
        ok, buf = cv2.imencode(".jpg", arr[i][..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(q)])
        if ok:
            dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
            out[i] = torch.from_numpy(dec).to(img.device).permute(2, 0, 1).float() / 255.0
    return out


def augment(img: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """The full chain, in the order a camera would apply it: optics, sensor, processing, compression."""
    n, _, H, W = img.shape
    dev = img.device
    # optics: defocus / motion-free blur
    on = torch.rand(n, generator=gen) < cfg.blur_prob
    sig = _u(gen, n, *cfg.blur_sigma) * on
    blurred = on.nonzero(as_tuple=True)[0].to(dev)
    if blurred.numel():  # only the images drawn for it (sigma 0 leaves an image as it was anyway)
        img = img.index_copy(0, blurred, gaussian_blur(img.index_select(0, blurred), sig.to(dev)[blurred]))
    # low resolution (small faces in big photos, upscaled by the crop)
    lr = torch.rand(n, generator=gen) < cfg.lowres_prob
    fac = _u(gen, n, *cfg.lowres_factor)
    for i in lr.nonzero(as_tuple=True)[0].tolist():
        s = max(8, int(H * float(fac[i])))
        small = F.interpolate(img[i : i + 1], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        img[i] = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)[0]
    # sensor noise: signal-dependent plus read noise
    on = (torch.rand(n, generator=gen) < cfg.noise_prob).float()
    std = (_u(gen, n, *cfg.noise_std) * on).to(dev).view(n, 1, 1, 1)
    noise = torch.randn(img.shape, generator=gen).to(dev)
    img = img + noise * std * (0.5 + img.clamp(0, 1).sqrt())
    img = color_jitter(img.clamp(0, 1), gen, cfg)
    q = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (n,), generator=gen)
    q = torch.where(torch.rand(n, generator=gen) < cfg.jpeg_prob, q, torch.zeros_like(q))
    return jpeg(img, q.tolist()).clamp(0, 1)
