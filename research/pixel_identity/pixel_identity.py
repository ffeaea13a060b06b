"""Do the frozen face-recognition network's pixel features carry an identity that survives real photos?

The render-trained encoder's features make two photos of one person differ (research/photo_consistency_sources);
dlib's face-recognition ResNet was trained on real faces. This renders fresh synthetic faces (256 px crops, one
view each), cuts dlib's chip (aligned on the true 68 landmarks), and fits ridge maps (kernel form) to the kit's
identity from: the 128-D descriptor; the network's stage-2 and stage-3 maps (64 and 128 channels) sampled at the
inner 51 landmarks in the chip; and both. Scored on held-out renders (the kit shape of the predicted identity
against the true identity shape, similarity-aligned v2v, mm) and on the real photos of
``../shared/data/photos_identity`` (MediaPipe's landmarks and chip, as the runtime; evaluation only).

Usage: .venv/bin/python -m research.pixel_identity.pixel_identity [--faces 1500] [--held-out 200]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from glvd.face_chip import CHIP_SIZE, _corners, chip_details, five_points_from_68
from glvd.facenet import DlibFaceResNet
from glvd.identity import IdentityEncoder
from glvd_train.metrics import similarity_align
from glvd_train.photo_consistency import default_photos_dir, spread
from research.common import finish, generated_by, start

INNER = slice(17, 68)
SEED = 61_000_001  # disjoint from training, validation, evaluate and the other experiments
#: the last block of each stage whose maps are sampled (glvd.facenet.STAGES: blocks 3-6 are 64 ch, 7-9 128 ch)
TAPS = {"stage 2 (64 ch, 17 px)": 6, "stage 3 (128 ch, 8 px)": 9}
LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def to_chip(points: np.ndarray, lm68: np.ndarray) -> np.ndarray:
    """``points (P, 2)`` glvd pixels -> the chip's pixels (the chip aligned on ``lm68``'s five points)."""
    d = chip_details(five_points_from_68(lm68))
    tl, tr, bl, _ = _corners(d.rect, d.angle)
    A = np.stack([(tr - tl) / (CHIP_SIZE - 1), (bl - tl) / (CHIP_SIZE - 1)], 1)  # chip (x, y) -> image
    return np.linalg.solve(A, (np.asarray(points, np.float64) - 0.5 - tl).T).T


@torch.no_grad()
def features(net: DlibFaceResNet, chips: np.ndarray, chip_pts: np.ndarray) -> dict[str, np.ndarray]:
    """Per chip: the descriptor and each tap's maps sampled at ``chip_pts (B, P, 2)`` (bilinear), flattened."""
    x = (torch.from_numpy(chips).permute(0, 3, 1, 2).float() - net.mean_rgb[:, None, None]) / 256.0
    x = F.max_pool2d(F.relu(net.stem(x)), 3, 2)
    grid = torch.from_numpy(chip_pts / (CHIP_SIZE - 1) * 2 - 1).float()[:, :, None]  # (B, P, 1, 2)
    out = {}
    for i, block in enumerate(net.blocks):
        x = block(x)
        for name, tap in TAPS.items():
            if i == tap:
                out[name] = F.grid_sample(x, grid, align_corners=True)[..., 0].flatten(1).numpy()
    out["descriptor"] = net.fc(x.mean(dim=(2, 3))).numpy()
    return out


def kernel_ridge(X: np.ndarray, Y: np.ndarray, Xv: np.ndarray, Yv: np.ndarray) -> tuple[np.ndarray, float]:
    """Linear ridge in its kernel form on standardised features, the strength chosen on (Xv, Yv) by identity
    R^2; returns a function's weights ``W (D + 1, I)`` and the strength."""
    best = None
    for lam in LAMBDAS:
        K = X @ X.T / X.shape[1]
        a = np.linalg.solve(K + lam * np.eye(len(X)), Y - Y.mean(0))
        W = X.T @ a / X.shape[1]
        pred = Xv @ W + Y.mean(0)
        r2 = 1 - ((pred - Yv) ** 2).sum() / ((Yv - Yv.mean(0)) ** 2).sum()
        if best is None or r2 > best[2]:
            best = (W, lam, r2)
    return np.vstack([best[0], Y.mean(0)[None]]), best[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=1500)
    ap.add_argument("--held-out", type=int, default=200)
    args, t0 = start(ap, argv)
    args.out = args.out or "research/pixel_identity/pixel_identity.md"
    from glvd.checkpoint import load_checkpoint
    from glvd.detect import detect_faces
    from glvd.landmarks_map import mediapipe_to_68
    from glvd.preprocess import load_image
    from glvd_train.baselines import FaceModel
    from glvd_train.synth import SynthConfig, SyntheticFaces
    from glvd_train.synth.morphable import HeadModel

    enc = IdentityEncoder()
    gen = SyntheticFaces(kit_path=args.kit, config=SynthConfig(image_size=256), seed=SEED)
    feats, ident = [], []
    for b in range(0, args.faces, 50):
        s = gen.sample(min(50, args.faces - b), 1)
        imgs = (s["images"][:, 0].permute(0, 2, 3, 1).clamp(0, 1) * 255 + 0.5).byte().numpy()
        lm = s["landmarks2d"][:, 0].numpy()
        chips = enc.chips(list(imgs), list(lm))
        pts = np.stack([to_chip(p[INNER], p) for p in lm])
        feats.append(features(enc.net, chips, pts))
        ident.append(s["identity"].numpy())
    X = {k: np.concatenate([f[k] for f in feats]).astype(np.float64) for k in feats[0]}
    Y = np.concatenate(ident).astype(np.float64)

    # the real photos, as the runtime sees them
    names, photo_feats = [], []
    for p in sorted(default_photos_dir().glob("person_*")):
        img = load_image(str(p))
        found = [f for f in detect_faces(img) if f.landmarks_dense is not None]
        if not found:
            continue
        f = max(found, key=lambda f: f.side)
        lm = mediapipe_to_68(f.landmarks_dense[:, :2])
        chip = enc.chips([img], [f.landmarks_dense])
        photo_feats.append(features(enc.net, chip, to_chip(lm[INNER], lm)[None]))
        names.append(p.name.split("_")[1])
    P = {k: np.concatenate([f[k] for f in photo_feats]).astype(np.float64) for k in photo_feats[0]}

    model, _ = load_checkpoint(None, torch.device("cpu"))
    fm = FaceModel.from_head(HeadModel.load(args.kit), model.template.triangles())
    mean, basis = fm.mean.double().numpy(), fm.identity.double().numpy()

    def shapes(coef: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mean[None] + np.einsum("bi,inc->bnc", coef, basis))

    h = args.held_out
    n_val = max((len(Y) - h) // 10, 1)
    tr, va, te = slice(h + n_val, None), slice(h, h + n_val), slice(0, h)
    truth = shapes(Y[te])
    kit_mean = float((similarity_align(shapes(np.zeros_like(Y[te])), truth) - truth).norm(dim=-1).mean() * 1000)
    lines = ["# Do the face-recognition network's pixel features carry identity that survives photos?", "",
             generated_by("research.pixel_identity.pixel_identity", argv), "",
             f"{len(Y)} synthetic faces (`SynthConfig(image_size=256)`, one view, seed {SEED}): {h} held out, "
             f"{n_val} choose the ridge strength, the rest fit it. Chips aligned on the true 68 landmarks; maps "
             f"sampled at the inner 51. Real photos: {len(names)} of `{default_photos_dir().name}` (MediaPipe's chip "
             f"and landmarks). The kit's mean face: {kit_mean:.3f} mm from the true identity shapes.", "",
             "| features | dims | lambda | held-out renders (mm) | real photos within / between (mm) | ratio |",
             "|---|---|---|---|---|---|"]
    combos = {"descriptor": ["descriptor"], **{k: [k] for k in TAPS},
              "descriptor + stage 3": ["descriptor", "stage 3 (128 ch, 8 px)"],
              "descriptor + stages 2 and 3": ["descriptor", *TAPS]}
    for label, keys in combos.items():
        A = np.concatenate([X[k] for k in keys], 1)
        Pa = np.concatenate([P[k] for k in keys], 1)
        mu, sd = A[tr].mean(0), A[tr].std(0) + 1e-6
        A, Pa = (A - mu) / sd, (Pa - mu) / sd
        W, lam = kernel_ridge(A[tr], Y[tr], A[va], Y[va])
        pred = np.c_[A[te], np.ones(h)] @ W
        err = float((similarity_align(shapes(pred), truth) - truth).norm(dim=-1).mean() * 1000)
        photo = np.c_[Pa, np.ones(len(Pa))] @ W
        sp = spread(names, list(shapes(photo).numpy() * 1000))
        lines.append(f"| {label} | {A.shape[1]} | {lam:g} | {err:.3f} | {sp['within_mm']:.2f} / "
                     f"{sp['between_mm']:.2f} | {sp['ratio']:.2f} |")
    finish(lines, t0, args.threads, args.out)


if __name__ == "__main__":
    main()
