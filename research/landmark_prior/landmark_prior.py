"""Does the 2D landmark geometry add to the descriptor's identity prior, on renders and on real photos?

The identity prior (the descent's step 0: baseline (f)'s ridge from the dlib descriptor to the kit's identity)
is the one part of the model that is consistent on real photos (within/between 0.35 on
``../shared/data/photos_identity``, research/photo_consistency_sources). The ridge probes of the identity
issue put most of a single image's identity in the sub-pixel geometry of the features (the true 68: 0.61x the
template). This fits ridge maps on the cache (renders only) from the descriptor, the inner 51 landmarks
(similarity-normalised onto their mean shape), and both, with the training landmarks either the truth + noise
or MediaPipe's on the render; and scores each on the cache's held-out faces (the kit shape of the predicted
identity against the true identity shape, similarity-aligned v2v, mm; with MediaPipe's landmarks and with the
truth + 1.5 px) and on the real photos (MediaPipe's landmarks there; evaluation only).

Usage: .venv/bin/python -m research.landmark_prior.landmark_prior [--cache runs/cache] [--noise 1.5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from glvd.expression import normalise_landmarks
from glvd.landmarks_map import mediapipe_to_68
from glvd_train.descriptor_ridge import LAMBDAS, _solve
from glvd_train.feature_cache import FeatureCache
from glvd_train.metrics import similarity_align
from glvd_train.photo_consistency import default_photos_dir, spread
from research.common import finish, generated_by, start

INNER = slice(17, 68)
HELD_OUT = 64  # the guided training's validation faces (its first 2 shards)


def normalise(lm: np.ndarray, ref: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``lm (M, P, 2)`` -> each moved onto ``ref (P, 2)`` (default: their mean after centring and scaling) by a
    2D similarity, flattened ``(M, 2P)``; and the reference."""
    x = normalise_landmarks(torch.from_numpy(np.asarray(lm, np.float64))).numpy()  # centred, unit RMS radius
    if ref is None:
        ref = x.mean(0)
        for _ in range(3):
            ref = np.mean([_onto(a, ref) for a in x], 0)
            ref = ref / np.sqrt((ref ** 2).sum() / len(ref))
    return np.stack([_onto(a, ref) for a in x]).reshape(len(x), -1), ref


def _onto(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``a (P, 2)`` (centred) rotated and scaled onto ``ref`` (least squares)."""
    za, zr = a[:, 0] + 1j * a[:, 1], ref[:, 0] + 1j * ref[:, 1]
    z = za * (np.vdot(za, zr) / np.vdot(za, za))  # the complex scale: rotation and size in one
    return np.stack([z.real, z.imag], 1)


def fit(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Ridge with the strength chosen on the last tenth of the rows (faces are in row blocks of views)."""
    n = max(len(X) // 10, 1)
    best = None
    for lam in LAMBDAS:
        W = _solve(X[:-n], Y[:-n], lam)
        r2 = 1 - ((np.c_[X[-n:], np.ones(n)] @ W - Y[-n:]) ** 2).sum() / ((Y[-n:] - Y[-n:].mean(0)) ** 2).sum()
        if best is None or r2 > best[1]:
            best = (lam, r2)
    return _solve(X, Y, best[0])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    ap.add_argument("--noise", type=float, default=1.5, help="training/validation noise on the truth (crop px)")
    args, t0 = start(ap, argv)
    args.out = args.out or "research/landmark_prior/landmark_prior.md"
    from glvd_train.baselines import FaceModel
    from glvd_train.synth.morphable import HeadModel
    from glvd.checkpoint import load_checkpoint

    c = FeatureCache(args.cache)
    a = c.arrays
    F, V = a["descriptor"].shape[:2]
    rng = np.random.default_rng(0)
    desc = a["descriptor"].astype(np.float64).reshape(F * V, -1)
    ident = np.repeat(a["identity"].astype(np.float64), V, 0)
    true = a["landmarks2d"].astype(np.float64).reshape(F * V, 68, 2)
    mp = np.full_like(true, np.nan)
    for f, v in zip(*np.nonzero(a["mesh_found"]), strict=True):
        mp[f * V + v] = mediapipe_to_68(a["mesh2d"][f, v][:, :2])
    mp = np.where(np.isfinite(mp), mp, true + rng.normal(0, 2.0, true.shape))  # not found: the truth + 2 px
    noisy = true + rng.normal(0, args.noise, true.shape)
    lm_train = {"truth + noise": noisy, "MediaPipe on the render": mp}
    tr = slice(HELD_OUT * V, None)
    va = slice(0, HELD_OUT * V)
    _, ref = normalise(noisy[tr][:, INNER])

    model, _ = load_checkpoint(None, torch.device("cpu"))
    fm = FaceModel.from_head(HeadModel.load(None), model.template.triangles())
    basis = fm.identity.double().numpy()  # (I, N, 3)

    def shape(coef: np.ndarray) -> np.ndarray:
        return fm.mean.double().numpy() + np.einsum("i,inc->nc", coef, basis)

    def v2v(pred: np.ndarray, truth: np.ndarray) -> float:
        P = torch.from_numpy(np.stack([shape(p) for p in pred]))
        T = torch.from_numpy(np.stack([shape(t) for t in truth]))
        return float((similarity_align(P, T) - T).norm(dim=-1).mean() * 1000)

    def features(kind: str, d: np.ndarray, lm: np.ndarray | None) -> np.ndarray:
        parts = []
        if "descriptor" in kind:
            parts.append(d)
        if "landmarks" in kind:
            parts.append(normalise(lm[:, INNER], ref)[0])
        return np.concatenate(parts, 1)

    # the real photos: MediaPipe's 478 on each photo, its chip's descriptor
    from glvd.detect import detect_faces
    from glvd.identity import IdentityEncoder
    from glvd.preprocess import load_image

    enc = IdentityEncoder()
    photos = sorted(default_photos_dir().glob("person_*"))
    names, p_desc, p_lm = [], [], []
    for p in photos:
        img = load_image(str(p))
        faces = [f for f in detect_faces(img) if f.landmarks_dense is not None]
        if not faces:
            continue
        f = max(faces, key=lambda f: f.side)
        names.append(p.name.split("_")[1])
        p_desc.append(enc.describe([img], [f.landmarks_dense])[0])
        p_lm.append(mediapipe_to_68(f.landmarks_dense[:, :2]))
    p_desc, p_lm = np.asarray(p_desc, np.float64), np.asarray(p_lm, np.float64)

    lines = ["# Does the 2D landmark geometry add to the descriptor's identity prior?", "",
             generated_by("research.landmark_prior.landmark_prior", argv), "",
             f"Cache `{args.cache}`: {F} faces x {V} views, the first {HELD_OUT} held out (one row per view, 1 view "
             f"each); training noise on the truth {args.noise} px (crop pixels, 128 px crop). Shape: the kit's mean + "
             "the predicted identity modes against the true identity shape (face area, similarity-aligned v2v, mm). "
             f"Real photos: {len(names)} of `{default_photos_dir().name}` with MediaPipe's landmarks (evaluation "
             "only).", "",
             "| ridge input | trained on landmarks | held-out, MediaPipe's landmarks (mm) | held-out, truth + "
             f"{args.noise} px (mm) | real photos within / between (mm) | ratio |", "|---|---|---|---|---|---|"]
    mean_face = np.zeros((HELD_OUT * V, basis.shape[0]))
    lines.append(f"| none (the kit's mean) | | {v2v(mean_face, ident[va]):.3f} | | | |")
    for kind in ("descriptor", "landmarks", "descriptor + landmarks"):
        for src, lm in lm_train.items():
            if kind == "descriptor" and src != "truth + noise":
                continue
            W = fit(features(kind, desc[tr], lm[tr]), ident[tr])
            def pred(d: np.ndarray, pts: np.ndarray, kind=kind, W=W) -> np.ndarray:
                return np.c_[features(kind, d, pts), np.ones(len(d))] @ W

            e_mp = v2v(pred(desc[va], mp[va]), ident[va])
            e_tr = v2v(pred(desc[va], noisy[va]), ident[va])
            sp = spread(names, [shape(x) * 1000 for x in pred(p_desc, p_lm)])
            lines.append(f"| {kind} | {src if kind != 'descriptor' else ''} | {e_mp:.3f} | {e_tr:.3f} | "
                         f"{sp['within_mm']:.2f} / {sp['between_mm']:.2f} | {sp['ratio']:.2f} |")
    finish(lines, t0, args.threads, args.out)


if __name__ == "__main__":
    main()
