"""How ``glvd-train evaluate`` scores a predicted face-area mesh against the truth (the metrics of
:mod:`glvd_train.evaluate`), and the error after every descent step."""

from __future__ import annotations

import numpy as np
import torch

from .metrics import similarity_align
from .surface import Surface


class Scorer:
    """Scores predicted face-area meshes against ground truth (see :mod:`glvd_train.evaluate`).

    Args:
        triangles: ``(F, 3)`` face-area triangles; narrow_count: narrow-area vertex count;
        landmarks68: ``(68,)`` vertex ids; surface_points: score the surface error on this many
            vertices (a fixed random subset, an unbiased estimate of the mean; None = all).
    """

    def __init__(self, triangles: np.ndarray, narrow_count: int, landmarks68: np.ndarray,
                 surface_points: int | None = None, seed: int = 0) -> None:
        self.triangles = np.asarray(triangles, np.int64)
        self.narrow = int(narrow_count)
        self.lm = torch.as_tensor(np.asarray(landmarks68), dtype=torch.long)
        on_surface = np.unique(self.triangles)
        if surface_points is not None and surface_points < len(on_surface):
            on_surface = np.sort(np.random.default_rng(seed).choice(on_surface, surface_points, replace=False))
        self.points = on_surface
        self._gt_cache: dict[int, Surface] = {}

    def score(self, pred: torch.Tensor, gt: torch.Tensor, key: int | None = None) -> dict[str, float]:
        """``pred``, ``gt`` ``(N, 3)`` metres -> errors in mm. ``key`` caches the GT surface across calls."""
        p = pred.detach().double().cpu()[None]
        g = gt.detach().double().cpu()[None]
        al = similarity_align(p, g)[0]
        al_n = similarity_align(p[:, :self.narrow], g[:, :self.narrow])[0]
        g0 = g[0]
        d = (al - g0).norm(dim=-1)
        out = {
            "v2v": float(d.mean() * 1000),
            "v2v_n": float((al_n - g0[:self.narrow]).norm(dim=-1).mean() * 1000),
            "lm68": float(d[self.lm].mean() * 1000),
        }
        gs = self._gt_cache.get(key) if key is not None else None
        if gs is None:
            gs = Surface(g0.numpy(), self.triangles)
            if key is not None:
                self._gt_cache[key] = gs
        ps = Surface(al.numpy(), self.triangles)
        pts = self.points
        d_pg = gs.closest(al.numpy()[pts])[0]  # predicted vertices -> GT surface
        d_gp = ps.closest(g0.numpy()[pts])[0]  # GT vertices -> predicted surface
        nar = pts < self.narrow
        out["surf"] = float(0.5 * (d_pg.mean() + d_gp.mean()) * 1000)
        out["surf_n"] = float(0.5 * (d_pg[nar].mean() + d_gp[nar].mean()) * 1000) if nar.any() else float("nan")
        return out


def per_step_v2v(xs: torch.Tensor, gt: torch.Tensor) -> list[float]:
    """``xs (T+1, N, 3)``, ``gt (N, 3)`` -> aligned face-area error (mm) after each step."""
    g = gt.double()[None].expand(xs.shape[0], -1, -1)
    al = similarity_align(xs.double(), g)
    return ((al - g).norm(dim=-1).mean(-1) * 1000).tolist()
