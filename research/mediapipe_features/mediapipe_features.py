"""Do the face-mesh network's intermediate maps, sampled at the landmarks, carry identity that survives photos?

research/pixel_identity found dlib's face-recognition stage-3 maps (128 ch, 8 x 8 on its 150 px chip) at the
inner 51 landmarks better on renders than the descriptor, though less consistent on real photos. The runtime
already runs MediaPipe's face-mesh network (trained on real faces, for geometry) on every photo; its maps are
finer. This renders fresh synthetic faces (256 px crops, one view each), runs the mesh network as the runtime
does (BlazeFace's ROI, 192 px crop, ``glvd.mediapipe_torch``), reads a few of its intermediate tensors
(``TFLiteGraph.forward_taps``) and samples them (bilinear) at the true inner 51 landmarks mapped into that crop;
then fits the same ridge maps to the kit's identity as pixel_identity (kernel form, standardised features,
strength chosen on a validation split). dlib's descriptor and stage 3 (chip aligned on the true 68) are fitted
on the same faces. Scored on held-out renders (the kit shape of the predicted identity against the true identity
shape, similarity-aligned v2v, mm) and on the real photos of ``../shared/data/photos_identity`` (MediaPipe's ROI
and landmarks on the photo, as the runtime; evaluation only, never fitted on).

Usage: .venv/bin/python -m research.mediapipe_features.mediapipe_features [--faces 1500] [--held-out 200]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from glvd.identity import IdentityEncoder
from glvd.landmarks_map import mediapipe_to_68
from glvd.mediapipe_torch.blazeface import image_to_tensor
from glvd.mediapipe_torch.face_landmarker import INPUT_SIZE
from glvd.mediapipe_torch.pipeline import FaceMesh, NormRect, detection_to_roi, project_landmarks
from glvd_train.metrics import similarity_align
from glvd_train.photo_consistency import default_photos_dir, spread
from research.common import finish, generated_by, start
from research.pixel_identity.pixel_identity import INNER, LAMBDAS, features, to_chip

SEED = 62_000_001  # disjoint from training, validation, evaluate and the other experiments
#: the face-mesh network's tensors read (TFLite tensor indices of face_landmarker): the last PReLU of each
#: resolution (48, 24, 12, 6 px on the 192 px crop)
TAPS = {"MediaPipe 48 px": 53, "MediaPipe 24 px": 83, "MediaPipe 12 px": 113, "MediaPipe 6 px": 141}
DLIB = {"dlib descriptor": "descriptor", "dlib stage 3": "stage 3 (128 ch, 8 px)"}


def roi_inverse(points: np.ndarray, roi: NormRect, w: int, h: int) -> np.ndarray:
    """``points (P, 2)`` image pixels -> the 192 px crop's (the inverse of LandmarkProjectionCalculator)."""
    cx, cy, sw, sh, rot = roi.pixels(w, h)
    d = np.asarray(points, np.float64) - [cx, cy]
    c, s = math.cos(rot), math.sin(rot)
    x = (c * d[:, 0] + s * d[:, 1]) / sw  # R(rot)^T
    y = (-s * d[:, 0] + c * d[:, 1]) / sh
    return np.stack([x + 0.5, y + 0.5], 1) * INPUT_SIZE


def mesh_crop(fm: FaceMesh, img: np.ndarray) -> tuple[NormRect, np.ndarray] | None:
    """FaceMesh.process's first steps for one face: BlazeFace's best detection -> ROI -> the 192 px crop."""
    h, w = img.shape[:2]
    dets = fm.detector.detect(np.ascontiguousarray(img), fm.min_detection_confidence)[:1]
    if not dets:
        return None
    roi = detection_to_roi(dets[0], w, h)
    return roi, image_to_tensor(img, roi.pixels(w, h), INPUT_SIZE, INPUT_SIZE, (0.0, 1.0), border_zero=False)


@torch.no_grad()
def mesh_features(fm: FaceMesh, crops: np.ndarray, crop_pts: np.ndarray | None
                  ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Run the mesh network on ``crops (B, 192, 192, 3)``: each tap sampled at ``crop_pts (B, P, 2)`` (the crop's
    pixels; None: at the network's own inner 51), flattened; and the network's points (B, 468, 3) and presence."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2)
    (mesh, flag), maps = fm.landmarker.net.forward_taps(x, taps=list(TAPS.values()))
    pts = mesh.reshape(len(x), 468, 3)
    presence = torch.sigmoid(flag.reshape(len(x))).numpy()
    if crop_pts is None:
        crop_pts = np.stack([mediapipe_to_68(p[:, :2])[INNER] for p in pts.numpy()])
    grid = torch.from_numpy(crop_pts / INPUT_SIZE * 2 - 1).float()[:, :, None]  # (B, P, 1, 2)
    out = {name: F.grid_sample(maps[t], grid, align_corners=False)[..., 0].flatten(1).numpy()
           for name, t in TAPS.items()}
    return out, pts.numpy(), presence


def ridge(X: np.ndarray, Y: np.ndarray, Xv: np.ndarray, Yv: np.ndarray) -> tuple[np.ndarray, float, float]:
    """pixel_identity's kernel ridge (the Gram matrix once): weights ``(D + 1, I)``, strength, validation R^2."""
    K = X @ X.T / X.shape[1]
    Yc = Y - Y.mean(0)
    best = None
    for lam in LAMBDAS:
        W = X.T @ np.linalg.solve(K + lam * np.eye(len(X)), Yc) / X.shape[1]
        pred = Xv @ W + Y.mean(0)
        r2 = 1 - ((pred - Yv) ** 2).sum() / ((Yv - Yv.mean(0)) ** 2).sum()
        if best is None or r2 > best[2]:
            best = (W, lam, r2)
    return np.vstack([best[0], Y.mean(0)[None]]), best[1], float(best[2])


def timed_ops(graph, x: torch.Tensor) -> dict[int, float]:
    """Seconds from the network's input to each operator's output (one pass, the operators one by one)."""
    env, out, t0 = {graph.inputs[0]: x}, {}, time.perf_counter()
    with torch.no_grad():
        for op in graph.ops:
            env[op["out"][0]] = graph._run(op, lambda i: env[i] if i in env else graph.constant(i))
            out[op["out"][0]] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> None:  # noqa: C901 - one experiment, top to bottom
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=1500)
    ap.add_argument("--held-out", type=int, default=200)
    args, t0 = start(ap, argv)
    args.out = args.out or "research/mediapipe_features/mediapipe_features.md"
    from glvd.checkpoint import load_checkpoint
    from glvd.preprocess import load_image
    from glvd_train.baselines import FaceModel
    from glvd_train.synth import SynthConfig, SyntheticFaces
    from glvd_train.synth.morphable import HeadModel

    enc = IdentityEncoder()
    fm = FaceMesh(refine_landmarks=False, device="cpu")  # the runtime's mesh (glvd.detect)
    gen = SyntheticFaces(kit_path=args.kit, config=SynthConfig(image_size=256), seed=SEED)
    feats, ident, missed = [], [], 0
    for b in range(0, args.faces, 50):
        s = gen.sample(min(50, args.faces - b), 1)
        imgs = (s["images"][:, 0].permute(0, 2, 3, 1).clamp(0, 1) * 255 + 0.5).byte().numpy()
        lm = s["landmarks2d"][:, 0].numpy()
        found = [mesh_crop(fm, im) for im in imgs]
        keep = [i for i, f in enumerate(found) if f is not None]
        rois, crops = [found[i][0] for i in keep], np.stack([found[i][1] for i in keep])
        pts = np.stack([roi_inverse(lm[i][INNER], r, 256, 256) for i, r in zip(keep, rois, strict=True)])
        mp, _, presence = mesh_features(fm, crops, pts)
        ok = presence > fm.min_presence  # the runtime drops the rest (no face)
        keep = [i for i, k in zip(keep, ok, strict=True) if k]
        missed += len(imgs) - len(keep)
        dl = features(enc.net, enc.chips([imgs[i] for i in keep], [lm[i] for i in keep]),
                      np.stack([to_chip(lm[i][INNER], lm[i]) for i in keep]))
        feats.append({**{k: v[ok] for k, v in mp.items()}, **{k: dl[v] for k, v in DLIB.items()}})
        ident.append(s["identity"].numpy()[keep])
        print(f"{b + len(imgs)} renders, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    X = {k: np.concatenate([f[k] for f in feats]).astype(np.float64) for k in feats[0]}
    Y = np.concatenate(ident).astype(np.float64)

    # the real photos, as the runtime sees them (MediaPipe's ROI and landmarks); timed one face at a time
    names, photo_feats, dense_diff = [], [], 0.0
    ms: dict[str, list[float]] = {"mesh": [], "dlib": [], **{k: [] for k in TAPS}}
    for p in sorted(default_photos_dir().glob("person_*")):
        img = load_image(str(p))
        h, w = img.shape[:2]
        found = mesh_crop(fm, img)
        if found is None:
            continue
        roi, crop = found
        t = time.perf_counter()
        mp, pts, presence = mesh_features(fm, crop[None], None)  # sampled at the network's own landmarks
        ms["mesh"].append(time.perf_counter() - t)
        if not presence[0] > fm.min_presence:
            continue
        dense = project_landmarks(pts[0] / INPUT_SIZE, roi)[:, :2] * np.array([w, h], np.float32)
        ref = fm.process(img, 1)[0].pixels
        dense_diff = max(dense_diff, float(np.abs(dense - ref).max()))  # the same landmarks as FaceMesh.process
        assert np.abs(roi_inverse(dense, roi, w, h) - pts[0, :, :2]).max() < 1e-2  # the crop's points back
        lm = mediapipe_to_68(dense)
        t = time.perf_counter()
        dl = features(enc.net, enc.chips([img], [dense]), to_chip(lm[INNER], lm)[None])
        ms["dlib"].append(time.perf_counter() - t)
        cum = timed_ops(fm.landmarker.net, torch.from_numpy(crop[None]).permute(0, 3, 1, 2))
        for k, tap in TAPS.items():
            ms[k].append(cum[tap])
        photo_feats.append({**mp, **{k: dl[v] for k, v in DLIB.items()}})
        names.append(p.name.split("_")[1])
    P = {k: np.concatenate([f[k] for f in photo_feats]).astype(np.float64) for k in photo_feats[0]}
    print(f"{len(names)} photos, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

    model, _ = load_checkpoint(None, torch.device("cpu"))
    fmodel = FaceModel.from_head(HeadModel.load(args.kit), model.template.triangles())
    mean, basis = fmodel.mean.double().numpy(), fmodel.identity.double().numpy()

    def shapes(coef: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mean[None] + np.einsum("bi,inc->bnc", coef, basis))

    h = args.held_out
    n_val = max((len(Y) - h) // 10, 1)
    tr, va, te = slice(h + n_val, None), slice(h, h + n_val), slice(0, h)
    truth = shapes(Y[te])
    kit_mean = float((similarity_align(shapes(np.zeros_like(Y[te])), truth) - truth).norm(dim=-1).mean() * 1000)

    def fit(keys: list[str]) -> tuple[int, float, float, float, dict]:
        A = np.concatenate([X[k] for k in keys], 1)
        Pa = np.concatenate([P[k] for k in keys], 1)
        mu, sd = A[tr].mean(0), A[tr].std(0) + 1e-6
        A, Pa = (A - mu) / sd, (Pa - mu) / sd
        W, lam, r2 = ridge(A[tr], Y[tr], A[va], Y[va])
        pred = np.c_[A[te], np.ones(h)] @ W
        err = float((similarity_align(shapes(pred), truth) - truth).norm(dim=-1).mean() * 1000)
        sp = spread(names, list(shapes(np.c_[Pa, np.ones(len(Pa))] @ W).numpy() * 1000))
        return A.shape[1], lam, r2, err, sp

    rows = {k: fit([k]) for k in [*DLIB, *TAPS]}
    best = max(TAPS, key=lambda k: rows[k][2])  # by validation R^2, not the held-out or the photos
    combos = {f"{best} + dlib descriptor": [best, "dlib descriptor"], f"{best} + dlib stage 3": [best, "dlib stage 3"],
              "MediaPipe, all four taps": list(TAPS)}
    rows.update({k: fit(v) for k, v in combos.items()})

    med = {k: 1000 * float(np.median(v)) for k, v in ms.items()}
    net = fm.landmarker.net
    shape = {k: f"{net.shapes[t][3]} x {net.shapes[t][1]} x {net.shapes[t][2]}" for k, t in TAPS.items()}
    shape.update({"dlib descriptor": "128", "dlib stage 3": "128 x 8 x 8"})
    cost = {k: f"{med[k]:.1f} ({med['mesh']:.1f})" for k in TAPS}
    cost.update({k: f"{med['dlib']:.1f}" for k in DLIB})
    lines = ["# Do the face-mesh network's maps, sampled at the landmarks, carry identity that survives photos?", "",
             generated_by("research.mediapipe_features.mediapipe_features", argv), "",
             f"{len(Y)} synthetic faces (`SynthConfig(image_size=256)`, one view, seed {SEED}; of {args.faces} "
             f"rendered, {missed} left out where MediaPipe finds no face, as the runtime would): {h} held out, "
             f"{n_val} choose the ridge strength, the rest fit it. MediaPipe: BlazeFace's ROI and the 192 px crop "
             "of `FaceMesh(refine_landmarks=False)` (the runtime's), its tensors sampled (bilinear) at the true "
             "inner 51 landmarks mapped into the crop; dlib: the chip aligned on the true 68, stage 3 sampled "
             f"there. Real photos: {len(names)} of `{default_photos_dir().name}`, MediaPipe's ROI and landmarks "
             f"(equal to `FaceMesh.process`'s within {dense_diff:.1e} px) for both networks. The kit's mean face: "
             f"{kit_mean:.3f} mm from the true identity shapes.", "",
             "| features | shape (ch x h x w) | dims | lambda | validation R^2 | held-out renders (mm) | "
             "real photos within / between (mm) | ratio | ms per face |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, (dims, lam, r2, err, sp) in rows.items():
        lines.append(f"| {label} | {shape.get(label, '-')} | {dims} | {lam:g} | {r2:.3f} | {err:.3f} | "
                     f"{sp['within_mm']:.2f} / {sp['between_mm']:.2f} | {sp['ratio']:.2f} | {cost.get(label, '-')} |")
    lines += ["", "ms per face: medians over the photos, one face at a time, on this CPU. MediaPipe: the mesh "
              "network from its input to that tensor (in brackets the whole network with every tap read and "
              "sampled, which the runtime runs anyway for its landmarks: reading the maps costs it only the "
              "sampling); the crop and BlazeFace not counted. dlib: its chip, the network and the sampling. The "
              f"combinations take the MediaPipe tap with the best validation R^2 ({best}).", ""]
    finish(lines, t0, args.threads, args.out)


if __name__ == "__main__":
    main()
