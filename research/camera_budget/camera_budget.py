"""Where the cameras' rotation error on renders comes from: the detector's landmarks, the 3D shape, or the head.

The photo path (``glvd.pose``) places each view by PnP of the face's inner 51 landmarks on
MediaPipe's; evaluate's "multi-view cameras <= 5 deg" target scores it on renders. This report
splits its error on held-out renders of the training distribution (3 views per face):

- PnP with the *true* 3D shape and MediaPipe's 2D landmarks: what the detector alone costs;
- PnP with the *exact* 2D landmarks (the ground-truth projections) on the template or the
  reconstruction: what the 3D shape alone costs;
- PnP with MediaPipe's 468 points matched to the ICT surface through its canonical mesh (as the
  evaluation's MediaPipe rows do), outer contour left out: no 68-landmark convention in between;
- the camera head, its refiner (``glvd.camera_refine``) and the photo path itself, with and
  without the refiner.

Each error is the rotation ``R_true^T R_est`` as a rotation vector in the head frame (x: pitch,
y: yaw, z: roll): its median angle, its mean (a bias the landmark definitions would cause) and
its spread.

Usage: .venv/bin/python -m research.camera_budget.camera_budget [CKPT] [--faces 16]
       [--out research/camera_budget/camera_budget.md]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from glvd.cameras import Cameras, head_yaw_deg
from glvd.checkpoint import load_checkpoint
from glvd.landmarks_map import mediapipe_to_68
from glvd.pose import INNER, POST_DESCENT_ROUNDS, descend_with_landmark_cameras, solve_pnp
from glvd_train.baselines import (
    MediaPipeMesh,
    default_canonical_path,
    mediapipe_correspondence,
    read_obj_vertices,
)
from glvd_train.synth import SynthConfig, SyntheticFaces
from research.common import CAMERA_BUDGET_SEED as SEED
from research.common import CAMERA_BUDGET_VIEWS as VIEWS
from research.common import YAW_BINS, finish, generated_by, start




def rotation_error_vector(R_est: np.ndarray, R_true: np.ndarray) -> np.ndarray:
    """``(3,)`` degrees: ``R_true^T R_est`` as a rotation vector in the head frame (pitch, yaw, roll)."""
    from scipy.spatial.transform import Rotation

    d = np.asarray(R_true, np.float64).T @ np.asarray(R_est, np.float64)
    return Rotation.from_matrix(d).as_rotvec(degrees=True)


def face_oval_ids() -> list[int]:
    """MediaPipe's outer contour: it follows the silhouette, not fixed points of the face."""
    from glvd.detect import _mp

    return sorted({i for edge in _mp().solutions.face_mesh_connections.FACEMESH_FACE_OVAL for i in edge})


ROWS = (
    ("head", "camera head"),
    ("refined", "camera head + refiner on the template (`estimate_cameras`)"),
    ("refined_final", "... + refiner again on the reconstruction"),
    ("photo", "photo path (`glvd.pose`: landmark PnP, its rotation blended with the estimate's where they agree "
              "within 10 deg; the estimate's rotation where it puts the yaw at 45 deg or more; the refined "
              "estimate where MediaPipe found no face)"),
    ("photo_no_blend", "photo path without the blend (until session 12)"),
    ("photo_no_refiner", "photo path with the camera head alone (until session 11)"),
    ("photo_all_pnp", "photo path with PnP on every view MediaPipe found (until session 7)"),
    ("51_mp_truth", "PnP 51 landmarks, MediaPipe 2D, true shape"),
    ("51_gt_template", "PnP 51 landmarks, exact 2D, template"),
    ("51_gt_final", "PnP 51 landmarks, exact 2D, reconstruction"),
    ("468_mp_truth", "PnP MediaPipe's 468 points on the surface, true shape"),
    ("468_mp_template", "PnP MediaPipe's 468 points on the surface, template"),
    ("468_mp_final", "PnP MediaPipe's 468 points on the surface, reconstruction"),
)


@torch.no_grad()
def measure(model, s: dict, corr, use: np.ndarray, mp) -> tuple[dict[str, list], dict[str, list], int]:
    """Per row: rotation-error vectors and the views' yaw; and how many views MediaPipe missed."""
    tpl = np.asarray(model.template.vertices, np.float64)
    lm_ids = np.asarray(model.template.landmarks68)
    errs: dict[str, list] = {k: [] for k, _ in ROWS}
    yaws: dict[str, list] = {k: [] for k, _ in ROWS}
    missed = 0
    for f in range(s["images"].shape[0]):
        img, K, R = s["images"][f], s["K"][f], s["R"][f]
        feats = model.encode(img[None])
        prep = model.prepare(feats)
        R_h, t_h, _ = model.camera_head(feats, K[None])
        head = Cameras(K[None], R_h, t_h)
        est = model.estimate_cameras(feats, K[None], prep)
        refined_final = model.refine_cameras(prep, feats, est, model.descend(feats, est, prep=prep)[0][:, -1],
                                             rounds=POST_DESCENT_ROUNDS)
        dense = [mp(img[v]) for v in range(VIEWS)]
        lm68 = [None if d is None else mediapipe_to_68(d[:, :2]) for d in dense]
        xs, _, cams, _ = descend_with_landmark_cameras(model, feats, est, lm68)
        cams_unblended = descend_with_landmark_cameras(model, feats, est, lm68, blend=False)[2]
        cams_plain = descend_with_landmark_cameras(model, feats, head, lm68, refine=False, blend=False)[2]
        # the photo path as it was until session 7: PnP on every view with landmarks, whatever its yaw
        cams_all = descend_with_landmark_cameras(model, feats, head, lm68, keep_rotation=[False] * VIEWS,
                                                 refine=False, blend=False)[2]
        shapes = {"truth": s["vertices"][f].numpy().astype(np.float64), "template": tpl,
                  "final": xs[0, -1].numpy().astype(np.float64)}
        yaw = head_yaw_deg(R).tolist()
        for v in range(VIEWS):
            Kv, Rt = K[v].numpy(), R[v].numpy()
            guess = (head.R[0, v].numpy(), head.t[0, v].numpy())
            found = {"head": head.R[0, v].numpy(), "photo": cams.R[0, v].numpy(),
                     "photo_no_blend": cams_unblended.R[0, v].numpy(),
                     "photo_no_refiner": cams_plain.R[0, v].numpy(), "photo_all_pnp": cams_all.R[0, v].numpy()}
            if model.camera_refiner is not None:
                found.update(refined=est.R[0, v].numpy(), refined_final=refined_final.R[0, v].numpy())
            exact = s["landmarks2d"][f, v].numpy().astype(np.float64)
            for name in ("template", "final"):
                sol = solve_pnp(shapes[name][lm_ids][INNER], exact[INNER], Kv, guess)
                if sol is not None:
                    found[f"51_gt_{name}"] = sol[0]
            if dense[v] is None:
                missed += 1
            else:
                sol = solve_pnp(shapes["truth"][lm_ids][INNER], lm68[v][INNER], Kv, guess)
                if sol is not None:
                    found["51_mp_truth"] = sol[0]
                for name, verts in shapes.items():
                    sol = solve_pnp(corr.points(verts)[use], dense[v][use, :2], Kv, guess)
                    if sol is not None:
                        found[f"468_mp_{name}"] = sol[0]
            for k, Re in found.items():
                errs[k].append(rotation_error_vector(Re, Rt))
                yaws[k].append(yaw[v])
    return errs, yaws, missed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default=None, help="default: the shipped one")
    p.add_argument("--faces", type=int, default=16)
    p.add_argument("--canonical", default=None, help="MediaPipe's canonical_face_model.obj (default: ../shared)")
    a, t0 = start(p, argv)
    model, prov = load_checkpoint(a.checkpoint)
    model.eval()
    tpl = model.template
    corr = mediapipe_correspondence(np.asarray(tpl.vertices, np.float64), tpl.triangles(),
                                    np.asarray(tpl.landmarks68),
                                    read_obj_vertices(a.canonical or default_canonical_path()))
    use = corr.keep.copy()
    use[face_oval_ids()] = False
    size = model.cfg.image_size
    s = SyntheticFaces(kit_path=a.kit, config=SynthConfig(image_size=size), seed=SEED).sample(a.faces, VIEWS)
    mp = MediaPipeMesh()
    errs, yaws, missed = measure(model, s, corr, use, mp)
    mp.close()
    views = a.faces * VIEWS
    lines = ["# Camera budget", "", generated_by("research.camera_budget.camera_budget", argv), "",
             f"Checkpoint `{a.checkpoint or 'shipped'}` ({prov.get('iterations', '?')} iterations). {a.faces} held-out "
             f"faces (seed {SEED}, the training distribution) x {VIEWS} views = {views} views, {size} px crops with "
             f"the true intrinsics; MediaPipe Face Mesh found {views - missed} of them (the 'MediaPipe 2D' and "
             f"'468 points' rows use those; the others all {views}, the photo paths the camera head where "
             f"MediaPipe found none). MediaPipe's 468 points: {int(use.sum())} used (the {int(corr.keep.sum())} "
             "within 10 mm of the ICT surface, less the outer contour).", "",
             "Error: `R_true^T R_est` as a rotation vector in the head frame, degrees (x pitch, y yaw, z roll).", "",
             "| cameras | views | median angle | mean angle | bias x | bias y | bias z | spread x | spread y "
             "| spread z |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, label in ROWS:
        e = np.asarray(errs[key]).reshape(-1, 3)
        if not len(e):
            continue
        ang = np.linalg.norm(e, axis=1)
        m, sd = e.mean(0), e.std(0)
        lines.append(f"| {label} | {len(e)} | {np.median(ang):.1f} | {ang.mean():.1f} | " + " | ".join(
            f"{x:+.1f}" for x in m) + " | " + " | ".join(f"{x:.1f}" for x in sd) + " |")
    lines += ["", "Median angle by the head's yaw from the camera (views in the bin):", "",
              "| cameras | " + " | ".join(f"yaw {lo}-{hi} deg" for lo, hi in YAW_BINS) + " |",
              "|---|" + "---|" * len(YAW_BINS)]
    for key, label in ROWS:
        if key not in ("head", "refined", "refined_final", "photo", "photo_no_blend", "photo_no_refiner",
                       "photo_all_pnp", "51_mp_truth", "468_mp_truth"):
            continue
        e, y = np.asarray(errs[key]).reshape(-1, 3), np.asarray(yaws[key])
        ang = np.linalg.norm(e, axis=1)
        cells = []
        for lo, hi in YAW_BINS:
            k = (y >= lo) & (y < hi)
            cells.append(f"{np.median(ang[k]):.1f} (n={int(k.sum())})" if k.any() else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Read: the 'true shape' rows are what the 2D landmarks cost with a perfect 3D face; the "
              "'exact 2D' rows what the 3D shape costs with perfect landmarks.", ""]
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
