"""How much of the real-photo NME is the landmark convention, and what snapping to a detector would cost.

The real-photo NME target (docs/RESULTS.md) compares the kit's 68 landmark *vertices*, projected, with
what MediaPipe (mapped to 68) and dlib mark on the photo. Three measurements:

1. Renders, where the truth is known: the NME of the *true* face's landmarks (true camera) against
   MediaPipe's 68 on the same render, beside GLVD's (photo path): the floor a perfect reconstruction
   would score against MediaPipe, and the signed offset per region (as research/jaw_offsets/jaw_offsets.py on photos).
2. Real photos: the NME against dlib after snapping the reconstruction's 68 landmarks onto MediaPipe's by
   a smooth deformation (per-landmark displacements in the camera's image plane, spread over the mesh by
   Gaussian radial basis functions), against none.
3. Renders: the 3D error (v2v, mm, after similarity alignment) of that same snapping, against none.

If (2) helps and (3) hurts, snapping only trades 3D accuracy for agreement with a detector's convention.

Usage: .venv/bin/python -m research.landmark_conventions.landmark_conventions [--faces 40] [--photos 20]
       [--out research/landmark_conventions/landmark_conventions.md]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from glvd.api import Reconstructor
from glvd.cameras import head_yaw_deg
from glvd.checkpoint import load_checkpoint
from glvd.detect import detect_faces
from glvd.landmarks_map import mediapipe_to_68
from glvd.pose import descend_with_landmark_cameras, project_points
from glvd_train.baselines import MediaPipeMesh
from glvd_train.evaluate_photos import DlibReference, nme, sample_photos
from glvd_train.landmark_calibration import reprojection_jacobian
from glvd_train.metrics import vertex_error_mm
from glvd_train.synth import SynthConfig, SyntheticFaces
from research.common import REGIONS, finish, generated_by, signed_offsets, start


SEED = 91_000_101
#: views beyond this yaw are left out of (1): their jaw points lie on the outline, not on fixed vertices
MAX_YAW = 30.0
SIGMAS = (0.015, 0.025)  # RBF widths (m) tried for the snapping


def snap_to_landmarks(verts: np.ndarray, cams: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      landmarks: list[np.ndarray | None], ids: np.ndarray, sigma: float,
                      iterations: int = 2, damping: float = 1e-3, smooth: float = 0.05) -> np.ndarray:
    """``(N, 3)`` vertices deformed so that vertices ``ids`` project onto ``landmarks`` (per view ``(68, 2)``
    pixels or None; ``cams`` per view ``(K, R, t)``).

    Per landmark, the 3D displacement that best moves its projections onto the marks (Gauss-Newton, damped:
    with one view the depth along the ray stays put), then spread over the mesh by Gaussian RBFs of width
    ``sigma`` (m) interpolating those displacements (``smooth`` regularises the interpolation).
    """
    X = np.asarray(verts, np.float64).copy()
    n = len(ids)
    for _ in range(iterations):
        P = X[ids]
        H, g, seen = np.zeros((n, 3, 3)), np.zeros((n, 3)), False
        for (K, R, t), lm in zip(cams, landmarks):
            if lm is None:
                continue
            J, r = reprojection_jacobian(P, K, R, t, lm)
            H += np.einsum("kai,kaj->kij", J, J)
            g += np.einsum("kai,ka->ki", J, r)
            seen = True
        if not seen:
            return X
        scale = np.trace(H, axis1=1, axis2=2).mean() / 3
        d = np.linalg.solve(H + damping * scale * np.eye(3), g[..., None])[..., 0]
        kernel = np.exp(-((P[:, None] - P[None]) ** 2).sum(-1) / (2 * sigma ** 2))
        c = np.linalg.solve(kernel + smooth * np.eye(n), d)
        X += np.exp(-((X[:, None] - P[None]) ** 2).sum(-1) / (2 * sigma ** 2)) @ c
    return X


def _cams(cams, view: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(x[0, view].double().numpy() for x in (cams.K, cams.R, cams.t))


@torch.no_grad()
def renders(model, kit: str | None, faces: int, mp: MediaPipeMesh) -> dict:
    """(1) and (3): per-face NME and offsets against MediaPipe, and v2v with and without snapping."""
    ids = np.asarray(model.template.landmarks68)
    s = SyntheticFaces(kit_path=kit, config=SynthConfig(image_size=model.cfg.image_size), seed=SEED).sample(faces, 1)
    out = {"nme": {"truth": [], "glvd": []}, "offsets": {"truth": [], "glvd": []},
           "v2v": {"none": [], **{f"snap {sg * 1000:.0f} mm": [] for sg in SIGMAS}}, "frontal": 0, "found": 0}
    for f in range(faces):
        img, K = s["images"][f], s["K"][f]
        pts = mp(img[0])
        if pts is None:
            continue
        out["found"] += 1
        ref = mediapipe_to_68(pts[:, :2])
        feats = model.encode(img[None])
        prep = model.prepare(feats)
        est = model.estimate_cameras(feats, K[None], prep)
        xs, _, cams, _ = descend_with_landmark_cameras(model, feats, est, [ref], prep=prep)
        final = xs[0, -1].double().numpy()
        gt = s["vertices"][f][None].double()
        out["v2v"]["none"].append(float(vertex_error_mm(torch.as_tensor(final)[None], gt)[0]))
        for sg in SIGMAS:
            snapped = snap_to_landmarks(final, [_cams(cams, 0)], [ref], ids, sg)
            out["v2v"][f"snap {sg * 1000:.0f} mm"].append(float(vertex_error_mm(torch.as_tensor(snapped)[None], gt)[0]))
        if abs(float(head_yaw_deg(s["R"][f])[0])) > MAX_YAW:
            continue
        out["frontal"] += 1
        true_cam = tuple(x[f, 0].double().numpy() for x in (s["K"], s["R"], s["t"]))
        preds = {"truth": project_points(s["vertices"][f].double().numpy()[ids], *true_cam),
                 "glvd": project_points(final[ids], *_cams(cams, 0))}
        for k, p in preds.items():
            out["nme"][k].append(nme(p, ref))
            out["offsets"][k].append(signed_offsets(p, ref))
    return out


def photos(rec: Reconstructor, count: int) -> dict:
    """(2): NME against dlib and MediaPipe, with and without snapping to MediaPipe's 68."""
    dl = DlibReference()
    ids = np.asarray(rec.template.landmarks68)
    out: dict = {"why": dl.why, "rows": {}}
    if not dl.available:
        return out
    for _, img in sample_photos(count):
        found = [f for f in detect_faces(img, backend="mediapipe") if f.landmarks68 is not None]
        if not found:
            continue
        res = rec.reconstruct(img)
        cam = tuple(res.cameras[k][0].astype(np.float64) for k in ("K", "R", "t"))
        mp68 = found[0].landmarks68
        refs = {"mp": mp68, "dlib": dl.landmarks(img, found[0].crop_box)[0]}
        preds = {"none": res.landmarks2d[0]}
        for sg in SIGMAS:
            snapped = snap_to_landmarks(res.final, [cam], [mp68], ids, sg)
            preds[f"snap {sg * 1000:.0f} mm"] = project_points(snapped[ids], *cam)
        for k, p in preds.items():
            row = out["rows"].setdefault(k, {"mp": [], "dlib": []})
            for name, ref in refs.items():
                row[name].append(nme(p, ref))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=40, help="held-out single-view renders")
    p.add_argument("--photos", type=int, default=20, help="LFW faces besides astronaut and grace_hopper")
    a, t0 = start(p, argv)
    model, _ = load_checkpoint(None)
    model.eval()
    mp = MediaPipeMesh()
    r = renders(model, a.kit, a.faces, mp)
    mp.close()
    ph = photos(Reconstructor(device="cpu"), a.photos)
    pct = lambda v: f"{np.median(v) * 100:.1f}%"  # noqa: E731
    intro = __doc__.split("Usage:")[0].split("\n", 2)[2].strip()  # the docstring less its title and usage
    lines = ["# Landmark conventions: the NME floor, and snapping to a detector", "",
             generated_by("research.landmark_conventions.landmark_conventions", argv), "", intro, "",
             "## 1. Renders: the truth's landmarks against MediaPipe's", "",
             f"{a.faces} held-out single-view renders (seed {SEED}); MediaPipe found {r['found']}; {r['frontal']} "
             f"with |yaw| <= {MAX_YAW:.0f} deg are scored. GLVD: the photo path (PnP on MediaPipe's inner 51).", "",
             "| landmarks | NME vs MediaPipe (median) | " + " | ".join(f"{k} x / y" for k in REGIONS) + " |",
             "|---|---|" + "---|" * len(REGIONS)]
    for k in ("truth", "glvd"):
        o = np.stack(r["offsets"][k])
        cells = [f"{np.median(o[:, ids, 0].mean(1)) * 100:+.1f}% / {np.median(o[:, ids, 1].mean(1)) * 100:+.1f}%"
                 for ids in REGIONS.values()]
        label = "the true face, true camera" if k == "truth" else "GLVD (photo path)"
        lines.append(f"| {label} | {pct(r['nme'][k])} | " + " | ".join(cells) + " |")
    lines += ["", "Offsets: median over faces of the mean signed offset, landmarks minus MediaPipe's, in % of "
              "MediaPipe's outer-eye-corner distance (x outwards for the jaw, y down the face), as in "
              "research/jaw_offsets/jaw_offsets.md.", "", "## 2. Real photos: snapping to MediaPipe's 68", ""]
    if not ph["rows"]:
        lines.append(f"Not measured: {ph['why']}.")
    else:
        n = len(ph["rows"]["none"]["mp"])
        lines += [f"{n} photos (astronaut, grace_hopper, LFW where MediaPipe finds the face), median NME.", "",
                  "| landmarks | vs MediaPipe | vs dlib |", "|---|---|---|"]
        for k, row in ph["rows"].items():
            lines.append(f"| {k} | {pct(row['mp'])} | {pct(row['dlib'])} |")
    lines += ["", "## 3. Renders: what snapping does to the 3D error", "",
              f"The {r['found']} renders MediaPipe found (all yaws), v2v in mm after similarity alignment.", "",
              "| landmarks | mean v2v | median v2v | faces worse than without |", "|---|---|---|---|"]
    base = np.array(r["v2v"]["none"])
    for k, v in r["v2v"].items():
        v = np.array(v)
        lines.append(f"| {k} | {v.mean():.2f} | {np.median(v):.2f} | {(v > base).mean() * 100:.0f}% |")
    snaps = [k for k in r["v2v"] if k != "none"]
    lines += ["", f"Reading: a perfect reconstruction (the true face, true camera) scores {pct(r['nme']['truth'])} "
              "against MediaPipe's 68 on renders, most of it on the jaw and chin, which MediaPipe marks higher "
              "than the kit's landmark vertices; that is a convention, not an error (the photo path's PnP allows "
              "for it: docs/mediapipe_offsets.md). Snapping the reconstruction "
              "onto MediaPipe's landmarks makes the 3D face worse on renders (mean v2v "
              f"{base.mean():.2f} -> {np.mean(r['v2v'][snaps[0]]):.2f} mm), so the runtime does not do it, "
              "whatever it would do to the photo NME.", ""]
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
