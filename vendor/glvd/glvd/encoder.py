"""The image encoder: one small CNN pass per view, multi-scale feature maps.

Computed once per view and reused by every descent step, so its cost is paid
once per reconstruction, not per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FeatureMaps:
    """Per-view features. ``maps[i]``: ``(B*V, C_i, H_i, W_i)``; ``global_``: ``(B*V, G)``."""

    maps: list[torch.Tensor]
    global_: torch.Tensor
    batch: int
    views: int
    size: int  # input crop size in pixels

    def blank(self) -> FeatureMaps:
        """The same shapes, all zeros: what a model whose fields read no image sees (ModelConfig.field_image)."""
        return FeatureMaps([torch.zeros_like(m) for m in self.maps], torch.zeros_like(self.global_), self.batch,
                           self.views, self.size)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.a = _conv(ch, ch)
        self.b = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.GroupNorm(8, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b(self.a(x)))


class ImageEncoder(nn.Module):
    """``(B*V, 3, S, S)`` -> three feature maps at S/4, S/8, S/16 and a global vector."""

    def __init__(self, widths: tuple[int, ...] = (32, 48, 96, 144, 192)) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = _conv(3, w0, 2)
        self.s1 = nn.Sequential(_conv(w0, w1, 2), _Residual(w1))
        self.s2 = nn.Sequential(_conv(w1, w2, 2), _Residual(w2))
        self.s3 = nn.Sequential(_conv(w2, w3, 2), _Residual(w3))
        self.s4 = _conv(w3, w4, 2)
        self.out_channels = (w1, w2, w3)
        self.global_channels = w4
        # ImageNet-like normalisation without pretrained weights: keeps inputs centred
        self.register_buffer("mean", torch.tensor([0.5, 0.45, 0.4]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem((images - self.mean) / self.std)
        f1 = self.s1(x)
        f2 = self.s2(f1)
        f3 = self.s3(f2)
        g = self.s4(f3).mean(dim=(2, 3))
        return [f1, f2, f3], g
