"""View-pooled bilinear sampling as one weighted embedding bag (the CPU inference fast path).

A vertex step reads, for every vertex, its bilinear sample of every view's feature map and sums
them with the view weights. With ``grid_sample`` that is V samplings of the whole map set plus V
weighted adds of ``(B, C, P)`` tensors. The same sum is a weighted bag of 4 V map pixels per
vertex (bilinear weight times view weight), the maps read as rows of channels: one
``embedding_bag`` call, no per-view temporaries, rows in the layout the vertex MLP reads, several
times faster than ``grid_sample`` on the CPU. The vertex module uses it whenever no gradient is
needed (inference, validation); training keeps ``grid_sample``, whose gradients reach the
sampling positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pooled_samples(maps: torch.Tensor, uv: torch.Tensor, size: int, weights: torch.Tensor | None) -> torch.Tensor:
    """``sum_v weights[:, v] * bilinear(maps[v], uv[:, v])``, as ``grid_sample`` (border, align_corners=False).

    Args:
        maps: ``(B*V, C, h, w)`` channels-last (``maps.permute(0, 2, 3, 1)`` is contiguous).
        uv: ``(B, V, P, 2)`` pixels of a ``size``-square crop.
        weights: ``(B, V, P)`` view weights, or None for one view.
    Returns:
        ``(B, P, C)``.
    """
    B, V, P, _ = uv.shape
    BV, C, h, w = maps.shape
    rows = maps.permute(0, 2, 3, 1).reshape(BV * h * w, C)  # a view for channels-last maps
    # grid_sample's unnormalisation (align_corners=False) and border clamp, in map pixels
    x = (uv[..., 0] * (w / size) - 0.5).nan_to_num(0.0).clamp(0, w - 1)
    y = (uv[..., 1] * (h / size) - 0.5).nan_to_num(0.0).clamp(0, h - 1)
    x0 = x.floor().clamp(max=max(w - 2, 0))
    y0 = y.floor().clamp(max=max(h - 2, 0))
    fx, fy = x - x0, y - y0
    dx, dy = min(1, w - 1), min(1, h - 1) * w  # a 1-pixel-wide map has no right / lower neighbour
    base = (torch.arange(BV, device=uv.device).view(B, V, 1) * (h * w)
            + y0.long() * w + x0.long())  # (B, V, P) top-left tap
    cols = torch.stack([base, base + dx, base + dy, base + dy + dx], -1)  # (B, V, P, 4)
    gx, gy = 1 - fx, 1 - fy
    vals = torch.stack([gx * gy, fx * gy, gx * fy, fx * fy], -1)
    if weights is not None:
        vals = vals * weights[..., None]
    # one bag per (batch, vertex): its 4 V taps, summed with their weights
    cols = cols.permute(0, 2, 1, 3).reshape(-1)
    vals = vals.permute(0, 2, 1, 3).reshape(-1)
    offsets = torch.arange(0, B * P * V * 4, V * 4, device=uv.device)
    out = F.embedding_bag(cols, rows, offsets, mode="sum", per_sample_weights=vals)  # (B*P, C)
    return out.view(B, P, C)
