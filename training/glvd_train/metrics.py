"""Error measures: similarity (Procrustes) alignment and per-vertex errors in millimetres."""

from __future__ import annotations

import torch


def similarity_transform(pred: torch.Tensor, gt: torch.Tensor, weights: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best similarity taking ``pred`` onto ``gt`` (Umeyama).

    Args:
        pred, gt: ``(B, N, 3)``.
        weights: optional ``(N,)`` point weights (e.g. a region mask).
    Returns:
        ``scale (B, 1, 1)``, ``R (B, 3, 3)``, ``pred_mean (B, 1, 3)``, ``gt_mean (B, 1, 3)``: the aligned
        points are ``scale * R @ (pred - pred_mean) + gt_mean``.
    """
    w = torch.ones(pred.shape[1], dtype=pred.dtype, device=pred.device) if weights is None else weights.to(pred)
    w = (w / w.sum())[None, :, None]
    mp = (pred * w).sum(1, keepdim=True)
    mg = (gt * w).sum(1, keepdim=True)
    p, g = pred - mp, gt - mg
    cov = torch.einsum("bni,bnj->bij", g * w, p)
    U, S, Vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(U @ Vh))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = U @ D @ Vh
    var_p = (p.pow(2).sum(-1, keepdim=True) * w).sum(1)
    scale = (S * D.diagonal(dim1=-2, dim2=-1)).sum(-1, keepdim=True) / var_p.clamp_min(1e-12)
    return scale[:, :, None], R, mp, mg


def apply_similarity(points: torch.Tensor, transform: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``points (B, N, 3)`` through a :func:`similarity_transform` result."""
    scale, R, mp, mg = transform
    return scale * torch.einsum("bij,bnj->bni", R, points - mp) + mg


def similarity_align(pred: torch.Tensor, gt: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Align ``pred`` to ``gt`` with the best rotation, translation and uniform scale; ``(B, N, 3)``."""
    return apply_similarity(pred, similarity_transform(pred, gt, weights))


def vertex_error_mm(pred: torch.Tensor, gt: torch.Tensor, align: bool = True, count: int | None = None) -> torch.Tensor:
    """Mean per-vertex Euclidean error in mm, ``(B,)``; on the first ``count`` vertices when given.

    Alignment uses the same vertex subset as the error.
    """
    if count is not None:
        pred, gt = pred[:, :count], gt[:, :count]
    if align:
        pred = similarity_align(pred, gt)
    return (pred - gt).norm(dim=-1).mean(-1) * 1000.0
