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
# ridge strengths, in units of each descriptor dimension's variance (scale-free); the renders' best lies near 0.01
# (research/identity_agreement: on 5,000 faces a lighter ridge reads three times the identity on photos)
LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)


def _rows(desc: np.ndarray, ident: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``desc (F, V, 128)``, ``ident (F, I)`` -> rows: every view alone, then each face's mean."""
    F, V, D = desc.shape
    X = np.concatenate([desc.reshape(F * V, D), desc.mean(1)])
    Y = np.concatenate([np.repeat(ident, V, 0), ident])
    return X, Y


def _solve(X: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    Xb = np.concatenate([X, np.ones((len(X), 1))], 1)
    # each dimension penalised by its own variance: the same as a ridge on standardised descriptors, but W
    # stays a map of the raw descriptor (what the runtime's prior and (f) multiply)
    reg = lam * len(X) * np.diag(np.append(X.var(0), 0.0))  # no penalty on the intercept
    return np.linalg.solve(Xb.T @ Xb + reg, Xb.T @ Y)


class DescriptorRidge:
    """``W (129, I)``: ``coefficients = [descriptor, 1] @ W``."""

    def __init__(self, W: np.ndarray, lam: float, faces: int, val_r2: float):
        self.W, self.lam, self.faces, self.val_r2 = W, lam, faces, val_r2

    @classmethod
    def fit(cls, desc: np.ndarray, ident: np.ndarray, val_frac: float = 0.1,
            mode_weights: np.ndarray | None = None) -> DescriptorRidge:
        """Chooses the strength on the last ``val_frac`` of the faces, then refits on all. ``mode_weights (I,)``:
        how much each coefficient moves the face (the kit's per-mode vertex energy); the held-out R^2 that picks
        the strength is weighted by them, so that the modes that shape the face count, not the many small ones
        (default: all equal)."""
        w = np.ones(ident.shape[1]) if mode_weights is None else np.asarray(mode_weights, np.float64)
        desc, ident = desc.astype(np.float64), ident.astype(np.float64)
        n_val = max(int(len(desc) * val_frac), 1)
        Xt, Yt = _rows(desc[:-n_val], ident[:-n_val])
        Xv, Yv = _rows(desc[-n_val:], ident[-n_val:])
        best = None
        for lam in LAMBDAS:
            W = _solve(Xt, Yt, lam)
            pred = np.concatenate([Xv, np.ones((len(Xv), 1))], 1) @ W
            r2 = 1 - (((pred - Yv) ** 2).sum(0) @ w) / (((Yv - Yv.mean(0)) ** 2).sum(0) @ w)
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


def kit_mode_weights(kit: str | None = None) -> np.ndarray | None:
    """``(I,)`` the mean squared offset of each identity mode of the kit over the face area (None where no kit is
    found)."""
    from .synth.morphable import HeadModel

    try:
        head = HeadModel.load(kit)
    except (FileNotFoundError, OSError):
        return None
    basis = head.id_basis.double().cpu().view(head.num_identity, -1, 3)[:, :head.face_count].numpy()
    return (basis ** 2).sum(-1).mean(1)


def fit_from_cache(cache_path: str | Path, skip_faces: int = 0, kit: str | None = None) -> DescriptorRidge:
    """Fitted on the cache's faces after the first ``skip_faces`` (those a training stage holds out); the
    strength chosen by the R^2 weighted by the kit's mode energies (:func:`kit_mode_weights`)."""
    from .feature_cache import FeatureCache

    c = FeatureCache(cache_path)
    ident = c.arrays["identity"][skip_faces:]
    weights = kit_mode_weights(kit)
    if weights is not None and len(weights) != ident.shape[1]:  # another kit than the cache's
        weights = None
    return DescriptorRidge.fit(c.arrays["descriptor"][skip_faces:].astype(np.float32), ident, mode_weights=weights)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="glvd-train ridge", description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path("runs/cache"))
    p.add_argument("--out", type=Path, default=DEFAULT_PATH)
    p.add_argument("--kit", default=None, help="ict_facekit_light.npz (its mode energies weight the choice of "
                   "the ridge strength; default: $GLVD_KIT or ../shared)")
    a = p.parse_args(argv)
    try:
        r = fit_from_cache(a.cache, kit=a.kit)
    except FileNotFoundError as exc:
        print(f"glvd-train ridge: {exc}", file=sys.stderr)
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    r.save(a.out)
    print(f"descriptor ridge on {r.faces} cached faces: lambda {r.lam:g}, held-out R^2 {r.val_r2:.3f} -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
