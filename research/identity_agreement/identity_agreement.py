"""Can a code read from the descriptor and MediaPipe's landmarks, trained to agree across views, carry
identity that is both accurate on renders and consistent on real photos?

The identity prior the shipped model starts from (step 0) is a linear map of dlib's descriptor: on the
real photos it is consistent (ratio 0.35), on renders it barely beats the kit's mean; the descent's
first step, which reads the render-trained image features, makes it accurate on renders and
inconsistent on photos (research/photo_consistency_sources). This probes the other way: a small
network on the frozen networks' outputs only (the descriptor and MediaPipe's 468 points,
similarity-normalised), trained on the feature cache's renders (3 views per face) to predict the
face's neutral identity shape, with a penalty on disagreement between the views of one face.
Scored on the cache's held-out shards 0-1 (1 view; the mean of 3 views' predictions) in mm against
the true neutral identity shape, and on the real photos (evaluation only) as within / between.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from glvd_train.metrics import similarity_align
from glvd_train.photo_consistency import default_photos_dir, spread
from research.common import finish, generated_by, start

HELD_OUT_SHARDS = 2  # shards 0-1: the held-out faces the other cache users keep out too
# MediaPipe mesh vertices of the outer eye corners (the in-plane roll is taken off along them)
EYE_OUTER = (33, 263)
INNER = slice(17, 68)  # the inner 51 of the 68 (MediaPipe's jaw contour follows the silhouette, the kit's does not)
INNER_EYE_OUTER = (36 - 17, 45 - 17)


def normalise_points(p: np.ndarray, eyes: tuple[int, int] = EYE_OUTER) -> np.ndarray:
    """``(..., 468, 2)`` -> the same moved to their centroid, scaled to unit RMS radius and rotated so that the
    outer eye corners lie level: what is left is shape and out-of-plane pose."""
    c = p - p.mean(-2, keepdims=True)
    c = c / np.sqrt((c ** 2).sum(-1).mean(-1))[..., None, None]
    e = c[..., eyes[1], :] - c[..., eyes[0], :]
    a = np.arctan2(e[..., 1], e[..., 0])
    cos, sin = np.cos(-a)[..., None], np.sin(-a)[..., None]
    return np.stack([c[..., 0] * cos - c[..., 1] * sin, c[..., 0] * sin + c[..., 1] * cos], -1)


def load_cache(path: Path) -> dict[str, np.ndarray]:
    keys = ("identity", "descriptor", "mesh2d", "mesh_found", "landmarks2d")
    parts = []
    i = 0
    while (path / f"shard_{i:05d}.npz").is_file():
        with np.load(path / f"shard_{i:05d}.npz") as z:
            parts.append({k: z[k] for k in keys})
        i += 1
    out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    out["faces_per_shard"] = len(parts[0]["identity"])
    return out


class IdentityNet(nn.Module):
    """``(B, D)`` features of one view -> ``(B, 100)`` identity coefficients."""

    def __init__(self, dim: int, hidden: int, out: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_net(X: torch.Tensor, Y: torch.Tensor, M: torch.Tensor, gram: torch.Tensor, agree: float,
              iterations: int, hidden: int, dropout: float, noise: float, seed: int) -> IdentityNet:
    """``X (F, 3, D)`` features, ``Y (F, 100)`` truth, ``M (F, 3)`` which views have landmarks; the loss is the
    mean squared vertex error (through ``gram`` = basis^T basis) of every view's prediction, plus ``agree`` times
    the squared vertex distance of each view's prediction from the mean of its face's views."""
    torch.manual_seed(seed)
    net = IdentityNet(X.shape[-1], hidden, Y.shape[-1], dropout)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=iterations)
    g = torch.Generator().manual_seed(seed)

    def vtx(d: torch.Tensor) -> torch.Tensor:  # (..., 100) coefficient differences -> squared vertex norm
        return torch.einsum("...i,ij,...j->...", d, gram, d)

    for _ in range(iterations):
        idx = torch.randint(len(X), (128,), generator=g)
        x, y, m = X[idx], Y[idx], M[idx].float()
        if noise:
            x = x + noise * torch.randn(x.shape, generator=g)
        p = net(x)  # (B, 3, 100)
        fit = (vtx(p - y[:, None]) * m).sum() / m.sum()
        mean = (p * m[..., None]).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)[..., None]
        dis = (vtx(p - mean) * m).sum() / m.sum()
        loss = fit + agree * dis
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def ridge(X: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    A = np.c_[X, np.ones(len(X))]
    reg = lam * np.eye(A.shape[1])
    reg[-1, -1] = 0
    return np.linalg.solve(A.T @ A + reg, A.T @ Y)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--quick", action="store_true", help="fewer variants (a smoke run)")
    args, t0 = start(ap, argv)
    args.out = args.out or ("research/identity_agreement/identity_agreement.md" if not args.quick else None)
    from glvd.checkpoint import load_checkpoint
    from glvd.detect import detect_faces
    from glvd.preprocess import load_image
    from glvd_train.baselines import FaceModel
    from glvd_train.synth.morphable import HeadModel

    c = load_cache(Path(args.cache))
    F = len(c["identity"])
    h = HELD_OUT_SHARDS * c["faces_per_shard"]
    found = c["mesh_found"]
    with np.errstate(invalid="ignore", divide="ignore"):  # views without a mesh: zeros, masked out of the loss
        lms = np.nan_to_num(normalise_points(c["mesh2d"].astype(np.float64)).reshape(F, 3, -1))
    desc = c["descriptor"].astype(np.float64)
    Y = c["identity"].astype(np.float64)

    # the real photos as the runtime sees them (MediaPipe on the full photo, the chip, the descriptor)
    from glvd.identity import IdentityEncoder

    enc = IdentityEncoder()
    from glvd.landmarks_map import mediapipe_to_68

    names, p_desc, p_lms, p_68 = [], [], [], []
    for p in sorted(default_photos_dir().glob("person_*")):
        img = load_image(str(p))
        faces = [f for f in detect_faces(img) if f.landmarks_dense is not None]
        if not faces:
            continue
        f = max(faces, key=lambda f: f.side)
        p_desc.append(enc.describe([img], [f.landmarks_dense])[0])
        p_lms.append(normalise_points(f.landmarks_dense[:468, :2].astype(np.float64)).reshape(-1))
        p_68.append(normalise_points(mediapipe_to_68(f.landmarks_dense[:, :2])[INNER].astype(np.float64),
                                     INNER_EYE_OUTER).reshape(-1))
        names.append(p.name.split("_")[1])
    p_desc, p_lms, p_68 = np.stack(p_desc).astype(np.float64), np.stack(p_lms), np.stack(p_68)

    model, _ = load_checkpoint(None, torch.device("cpu"))
    fm = FaceModel.from_head(HeadModel.load(args.kit), model.template.triangles())
    mean, basis = fm.mean.double().numpy(), fm.identity.double().numpy()
    B = torch.from_numpy(basis.reshape(len(basis), -1))
    gram = (B @ B.T).float() / fm.mean.shape[0] * 1e6  # mean squared per-vertex error in mm^2

    def shapes(coef: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mean[None] + np.einsum("bi,inc->bnc", coef, basis))

    def err(coef: np.ndarray, rows: np.ndarray | None = None) -> float:
        truth = shapes(Y[:h] if rows is None else Y[:h][rows])
        pred = shapes(coef if rows is None else coef[rows])
        return float((similarity_align(pred, truth) - truth).norm(dim=-1).mean() * 1000)

    kit_mean = err(np.zeros((h, Y.shape[1])))
    tr = np.arange(h, F)
    feats = {"descriptor": (desc, p_desc), "landmarks": (lms, p_lms),
             "descriptor + landmarks": (np.concatenate([desc, lms], -1), np.concatenate([p_desc, p_lms], -1))}
    # references: the true 68's inner 51 (+ noise in crop pixels) on the renders, MediaPipe's 68 on the photos
    rng = np.random.default_rng(0)
    true68 = c["landmarks2d"].astype(np.float64)[..., INNER, :]
    for sigma in (0.0, 1.0, 2.0):
        t = normalise_points(true68 + rng.normal(0, sigma, true68.shape), INNER_EYE_OUTER).reshape(F, 3, -1)
        feats[f"true inner 51 + {sigma:g} px"] = (t, p_68)
        if sigma == 1.0:
            feats["descriptor + true inner 51 + 1 px"] = (np.concatenate([desc, t], -1),
                                                          np.concatenate([p_desc, p_68], -1))
    truth_rows = {k for k in feats if "true" in k}
    lines = ["# An identity code from the descriptor and MediaPipe's landmarks, trained to agree across views", "",
             generated_by("research.identity_agreement.identity_agreement", argv), "",
             f"Feature cache `{args.cache}`: {F} faces x 3 views; faces {h}..{F - 1} train (views where MediaPipe "
             f"found the face), shards 0-1 ({h} faces) held out. Target: the face's neutral identity shape (the kit's "
             f"100 modes, face area); errors mm after a similarity alignment. The kit's mean face: {kit_mean:.3f} mm. "
             f"Real photos: {len(names)} of `{default_photos_dir().name}` (MediaPipe on the full photo, as the "
             f"runtime), scored as `glvd_train.photo_consistency` (evaluation only). Landmarks: the 468 points "
             f"moved to their centroid, scaled to unit RMS radius, rolled level on the outer eye corners. "
             f"'true inner 51 + s px': the true projections of the inner 51 of the 68 landmark vertices (128 px crops) "
             f"with Gaussian "
             f"noise s, normalised the same way: not available at run time, a reference for what 2D precision is "
             f"worth; on the photos the same map reads MediaPipe's 68 (`glvd.landmarks_map.mediapipe_to_68`). "
             f"MLP: 2 x 512 GELU, AdamW, batch 128 faces, {args.iterations} iterations; 'agree a': the loss adds a "
             f"times each view's squared distance from its face's mean prediction.", "",
             "| features | model | held-out, 1 view (mm) | 3 views, mean code (mm) | photos within / between (mm) | "
             "ratio |", "|---|---|---|---|---|---|"]

    def row(label: str, model_name: str, predict) -> None:
        X, P = feats[label]
        one_rows, any_rows = (np.ones(h, bool),) * 2 if label in truth_rows else (found[:h, 0], found[:h].any(1))
        one = predict(X[:h, 0])
        three = np.stack([predict(X[:h, v]) for v in range(3)], 1)
        m = found[:h, :, None]
        m = np.ones_like(m) if label in truth_rows else m
        three = np.where(m, three, 0).sum(1) / np.maximum(m.sum(1), 1)
        sp = spread(names, list(shapes(predict(P)).numpy() * 1000))
        lines.append(f"| {label} | {model_name} | {err(one, one_rows):.3f} | {err(three, any_rows):.3f} | "
                     f"{sp['within_mm']:.2f} / {sp['between_mm']:.2f} | {sp['ratio']:.2f} |")
        print(lines[-1], flush=True)

    all_views = np.ones_like(found)
    for label, (X, _) in feats.items():
        mask = all_views if label in truth_rows else found
        rows = X[tr][mask[tr]]
        yy = np.repeat(Y[tr][:, None], 3, 1)[mask[tr]]
        mu, sd = rows.mean(0), rows.std(0) + 1e-6
        for lam in ((10.0, 100.0) if not args.quick else (10.0,)):
            W = ridge((rows - mu) / sd, yy, lam * len(rows) / 1000)
            row(label, f"ridge (lambda {lam:g})",
                lambda x, W=W, mu=mu, sd=sd: np.c_[(x - mu) / sd, np.ones(len(x))] @ W)
        variants = [(0.0, 0.1, 0.0), (1.0, 0.1, 0.0), (4.0, 0.1, 0.0), (1.0, 0.3, 0.1)] if not args.quick \
            else [(1.0, 0.1, 0.0)]
        if label == "descriptor" or label in truth_rows:
            variants = variants[:2]
        for agree, dropout, noise in variants:
            Xt = torch.from_numpy((X[tr] - mu) / sd).float()
            net = train_net(Xt, torch.from_numpy(Y[tr]).float(), torch.from_numpy(mask[tr]), gram, agree,
                            args.iterations, 512, dropout, noise, seed=0)

            def predict(x, net=net, mu=mu, sd=sd):
                with torch.no_grad():
                    return net(torch.from_numpy((x - mu) / sd).float()).double().numpy()

            row(label, f"MLP 2x512, agree {agree:g}, dropout {dropout:g}, noise {noise:g}", predict)
    finish(lines, t0, args.threads, args.out)


if __name__ == "__main__":
    main()
