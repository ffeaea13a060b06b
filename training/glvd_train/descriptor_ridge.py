"""Baseline (f): the identity descriptor, mapped linearly to the ICT identity coefficients.

The floor GLVD guided by the descriptor must beat: a ridge regression from the mean of the
views' dlib descriptors (:mod:`glvd.identity`) to the kit's 100 identity coefficients, fitted on
the feature cache (renders only, never photos). Its shape is the kit's mean plus those modes:
a neutral face, no expression, no out-of-PCA detail. Each cached face gives one row per view
and one for the mean of its views, so one map serves 1 to 3 views.

    glvd-train ridge --cache runs/cache --out runs/descriptor_ridge.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_PATH = Path("runs/descriptor_ridge.npz")
LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def _rows(desc: np.ndarray, ident: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``desc (F, V, 128)``, ``ident (F, I)`` -> rows: every view alone, then each face's mean."""
    F, V, D = desc.shape
    X = np.concatenate([desc.reshape(F * V, D), desc.mean(1)])
    Y = np.concatenate([np.repeat(ident, V, 0), ident])
    return X, Y


def _solve(X: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    Xb = np.concatenate([X, np.ones((len(X), 1))], 1)
    reg = lam * len(X) * np.eye(Xb.shape[1])
    reg[-1, -1] = 0  # no penalty on the intercept
    return np.linalg.solve(Xb.T @ Xb + reg, Xb.T @ Y)


class DescriptorRidge:
    """``W (129, I)``: ``coefficients = [descriptor, 1] @ W``."""

    def __init__(self, W: np.ndarray, lam: float, faces: int, val_r2: float):
        self.W, self.lam, self.faces, self.val_r2 = W, lam, faces, val_r2

    @classmethod
    def fit(cls, desc: np.ndarray, ident: np.ndarray, val_frac: float = 0.1) -> DescriptorRidge:
        """Chooses the strength on the last ``val_frac`` of the faces, then refits on all."""
        desc, ident = desc.astype(np.float64), ident.astype(np.float64)
        n_val = max(int(len(desc) * val_frac), 1)
        Xt, Yt = _rows(desc[:-n_val], ident[:-n_val])
        Xv, Yv = _rows(desc[-n_val:], ident[-n_val:])
        best = None
        for lam in LAMBDAS:
            W = _solve(Xt, Yt, lam)
            pred = np.concatenate([Xv, np.ones((len(Xv), 1))], 1) @ W
            r2 = 1 - ((pred - Yv) ** 2).sum() / ((Yv - Yv.mean(0)) ** 2).sum()
            if best is None or r2 > best[1]:
                best = (lam, r2)
        X, Y = _rows(desc, ident)
        return cls(_solve(X, Y, best[0]), best[0], len(desc), float(best[1]))

    def coefficients(self, descriptors: np.ndarray) -> np.ndarray:
        """``(V, 128)`` views of one face -> ``(I,)``."""
        x = np.asarray(descriptors, np.float64).mean(0)
        return np.append(x, 1.0) @ self.W

    def save(self, path: str | Path) -> None:
        np.savez(path, W=self.W, lam=self.lam, faces=self.faces, val_r2=self.val_r2)

    @classmethod
    def load(cls, path: str | Path) -> DescriptorRidge:
        d = np.load(path)
        return cls(d["W"], float(d["lam"]), int(d["faces"]), float(d["val_r2"]))


def fit_from_cache(cache_path: str | Path, skip_faces: int = 0) -> DescriptorRidge:
    """Fitted on the cache's faces after the first ``skip_faces`` (those a training stage holds out)."""
    from .feature_cache import FeatureCache

    c = FeatureCache(cache_path)
    return DescriptorRidge.fit(c.arrays["descriptor"][skip_faces:].astype(np.float32),
                               c.arrays["identity"][skip_faces:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="glvd-train ridge", description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path("runs/cache"))
    p.add_argument("--out", type=Path, default=DEFAULT_PATH)
    a = p.parse_args(argv)
    try:
        r = fit_from_cache(a.cache)
    except FileNotFoundError as exc:
        print(f"glvd-train ridge: {exc}", file=sys.stderr)
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    r.save(a.out)
    print(f"descriptor ridge on {r.faces} cached faces: lambda {r.lam:g}, held-out R^2 {r.val_r2:.3f} -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
