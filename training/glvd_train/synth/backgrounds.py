"""Backgrounds behind the rendered head: gradients, dead leaves, fractal noise, natural crops.

Natural images come only from packages that happen to be installed (for example
scikit-image's data folder) or from a folder named by ``$GLVD_BACKGROUNDS``.
Images of faces or people (used for evaluation on real photos) are skipped by
name. Without any, the procedural kinds are used alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

#: file-name fragments of pictures we must not train on (people; kept for evaluation)
_DENY = ("astronaut", "face", "lena", "camera", "portrait", "person", "people", "lfw")
#: charts, scans and microscopy: not the kind of scene behind a person
_SKIP = ("chessboard", "logo", "text", "page", "horse", "phantom", "color", "clock", "retina", "ihc", "cell", "micro")


def _candidate_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("GLVD_BACKGROUNDS")
    if env:
        dirs.append(Path(env))
    try:  # scikit-image ships a few natural pictures (cat, coffee, rocket, ...)
        import importlib.util

        spec = importlib.util.find_spec("skimage")
        if spec is not None and spec.origin is not None:
            dirs.append(Path(spec.origin).parent / "data")
    except (ImportError, ValueError):
        pass
    return dirs


def natural_image_paths(min_side: int = 200) -> list[Path]:
    """Usable natural pictures found in installed packages or ``$GLVD_BACKGROUNDS``, sorted."""
    from PIL import Image

    out: list[Path] = []
    for d in _candidate_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            name = p.name.lower()
            if p.suffix.lower() not in (".png", ".jpg", ".jpeg") or any(k in name for k in _DENY + _SKIP):
                continue
            try:
                with Image.open(p) as im:
                    if min(im.size) >= min_side:
                        out.append(p)
            except (OSError, ValueError):
                continue
    return out


def find_natural_images(max_images: int = 64, min_side: int = 200, max_side: int = 512) -> list[np.ndarray]:
    """Load the natural background pictures as ``(H, W, 3)`` float32 sRGB in [0, 1].

    Pictures are shrunk to at most ``max_side`` pixels once, here, so crops are cheap later.
    """
    from PIL import Image

    out: list[np.ndarray] = []
    for p in natural_image_paths(min_side)[:max_images]:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                scale = max_side / max(im.size)
                if scale < 1:
                    im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.BILINEAR)
                arr = np.asarray(im, np.float32) / 255.0
        except (OSError, ValueError):
            continue
        if arr.std() > 0.05:  # flat pictures add little
            out.append(arr)
    return out


class Backgrounds:
    """Random ``(n, 3, S, S)`` sRGB backgrounds in [0, 1]."""

    def __init__(self, size: int, natural: bool = True, device: str | torch.device = "cpu") -> None:
        self.size = size
        self.device = torch.device(device)
        self.images = (
            [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in find_natural_images()] if natural else []
        )

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``(n, 3, S, S)``: each image one of gradient / dead leaves / noise / natural crop, then an optional blur."""
        S = self.size
        kinds = torch.randint(0, 4 if self.images else 3, (n,), generator=gen)
        out = torch.empty(n, 3, S, S)
        for k, fn in enumerate((self._gradient, self._dead_leaves, self._noise, self._natural)):
            idx = (kinds == k).nonzero(as_tuple=True)[0]
            if idx.numel():
                out[idx] = fn(int(idx.numel()), gen)
        return out.clamp(0, 1).to(self.device)

    def _gradient(self, n: int, gen: torch.Generator) -> torch.Tensor:
        S = self.size
        c0 = torch.rand(n, 3, 1, 1, generator=gen)
        c1 = (c0 + 0.5 * (torch.rand(n, 3, 1, 1, generator=gen) - 0.5)).clamp(0, 1)
        ang = torch.rand(n, 1, 1, generator=gen) * 6.2832
        lin = torch.linspace(-1, 1, S)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        s = (xx[None] * torch.cos(ang) + yy[None] * torch.sin(ang)) * 0.5 + 0.5  # (n, S, S)
        img = c0 + (c1 - c0) * s[:, None]
        return img + 0.1 * self._lowfreq(n, gen, 3, 4)

    def _lowfreq(self, n: int, gen: torch.Generator, c: int, res: int) -> torch.Tensor:
        g = torch.randn(n, c, res, res, generator=gen)
        return F.interpolate(g, size=(self.size, self.size), mode="bicubic", align_corners=False)

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Fractal (1/f-like) colour noise."""
        # octaves summed at 64 px and upsampled once (six bicubic upsamplings to S cost 5x more)
        top = min(64, self.size)
        acc = torch.zeros(n, 3, top, top)
        amp = 1.0
        for res in (2, 4, 8, 16, 32, 64):
            g = torch.randn(n, 3, res, res, generator=gen)
            acc = acc + amp * (g if res == top else F.interpolate(g, size=(top, top), mode="bicubic",
                                                                  align_corners=False))
            amp *= 0.55
        if top != self.size:
            acc = F.interpolate(acc, size=(self.size, self.size), mode="bicubic", align_corners=False)
        base = torch.rand(n, 3, 1, 1, generator=gen)
        contrast = 0.05 + 0.2 * torch.rand(n, 1, 1, 1, generator=gen)
        return base + contrast * acc

    def _dead_leaves(self, n: int, gen: torch.Generator, discs: int = 48, res: int = 96) -> torch.Tensor:
        """Occluding discs with power-law radii: natural-image-like statistics without any data."""
        lin = (torch.arange(res) + 0.5) / res
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        cx = torch.rand(n, discs, 1, 1, generator=gen) * 1.4 - 0.2
        cy = torch.rand(n, discs, 1, 1, generator=gen) * 1.4 - 0.2
        rad = 0.03 * (1 - torch.rand(n, discs, 1, 1, generator=gen) * 0.97) ** -0.7  # heavy-tailed radii
        cover = ((xx - cx) ** 2 + (yy - cy) ** 2) < rad**2  # (n, D, r, r)
        # the last covering disc wins: index of the max of (cover * rank)
        rank = torch.arange(1, discs + 1, dtype=torch.uint8).view(1, discs, 1, 1)
        top = (cover.to(torch.uint8) * rank).amax(1).long()  # (n, r, r), 0 = none
        cols = torch.rand(n, discs + 1, 3, generator=gen)
        cols[:, 0] = torch.rand(n, 3, generator=gen)
        img = torch.gather(cols, 1, top.view(n, -1, 1).expand(-1, -1, 3)).view(n, res, res, 3).permute(0, 3, 1, 2)
        img = F.interpolate(img, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return img + 0.05 * self._lowfreq(n, gen, 3, 8)

    def _natural(self, n: int, gen: torch.Generator) -> torch.Tensor:
        S = self.size
        out = torch.empty(n, 3, S, S)
        for i in range(n):
            im = self.images[int(torch.randint(0, len(self.images), (1,), generator=gen))]
            H, W = im.shape[1:]
            side = int(min(H, W) * (0.3 + 0.7 * float(torch.rand(1, generator=gen))))
            y = int(torch.randint(0, H - side + 1, (1,), generator=gen))
            x = int(torch.randint(0, W - side + 1, (1,), generator=gen))
            crop = im[:, y : y + side, x : x + side]
            if bool(torch.rand(1, generator=gen) < 0.5):
                crop = crop.flip(-1)
            out[i] = F.interpolate(crop[None], size=(S, S), mode="bilinear", align_corners=False, antialias=True)[0]
        return out
