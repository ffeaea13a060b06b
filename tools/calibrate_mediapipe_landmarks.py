"""Where MediaPipe's 68 landmarks sit on the kit's face: a 3D offset per landmark, fitted on renders.

The photo path solves each camera by PnP between MediaPipe's 68 landmarks (mapped from its 468) and the
face's 68 landmark *vertices*. The two disagree by convention
(research/landmark_conventions/landmark_conventions.md: the true face's landmarks are 6.5% NME from
MediaPipe's even with the true camera), and PnP turns that into a
camera error (on renders the reconstruction's jaw projects 4-5% of the eye distance too high with the
PnP camera, 0.5% with the true one). This fits, per landmark, the 3D offset (head frame, metres) from
the kit's landmark vertex to the point MediaPipe marks: on renders of the training distribution with
the true shape and camera, Gauss-Newton on the reprojection error over all views (their spread of poses
makes the depth observable), trimmed of outliers. It writes them for the runtime
(glvd/assets/mediapipe68_offsets.json) and reports, on held-out renders, the reprojection error and the
PnP rotation error (true shape, MediaPipe's 2D) without and with them.

Usage: .venv/bin/python tools/calibrate_mediapipe_landmarks.py [--faces 400] [--held-out 100]
       [--write vendor/glvd/glvd/assets/mediapipe68_offsets.json] [--out docs/mediapipe_offsets.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from glvd.cameras import head_yaw_deg, rotation_angle_deg
from glvd.checkpoint import load_checkpoint
from glvd.pose import INNER, project_points, solve_pnp
from glvd_train.baselines import MediaPipeMesh
from glvd_train.landmark_calibration import IMAGE_SIZE, MAX_YAW, observations, reprojection_jacobian
from glvd_train.report import finish, generated_by, start
from glvd_train.train import git_commit

FIT_SEED, HELD_OUT_SEED = 52_000_001, 52_900_001


def fit_offsets(obs: list[dict], lm_ids: np.ndarray, iterations: int = 5, trim: float = 3.0) -> np.ndarray:
    """``(68, 3)`` offsets minimising the reprojection of ``vertex + offset`` onto MediaPipe's points, per
    landmark, over every view; views whose residual exceeds ``trim`` times the landmark's median are left
    out after the first iteration (mis-detections)."""
    n = len(lm_ids)
    d = np.zeros((n, 3))
    keep = np.ones((len(obs), n), bool)
    for it in range(iterations):
        H, g = np.zeros((n, 3, 3)), np.zeros((n, 3))
        res = np.zeros((len(obs), n))
        for i, o in enumerate(obs):
            K, R, t = o["cam"]
            J, r = reprojection_jacobian(o["verts"][lm_ids] + d, K, R, t, o["mp"])
            res[i] = np.linalg.norm(r, axis=1)
            w = keep[i].astype(float)[:, None, None]
            H += w * np.einsum("kai,kaj->kij", J, J)
            g += w[..., 0] * np.einsum("kai,ka->ki", J, r)
        d += np.linalg.solve(H + 1e-6 * np.trace(H, axis1=1, axis2=2)[:, None, None] * np.eye(3), g[..., None])[..., 0]
        if it == 0:
            keep = res <= trim * np.median(res, axis=0, keepdims=True)
    return d


def evaluate(obs: list[dict], lm_ids: np.ndarray, offsets: np.ndarray) -> dict:
    """Median reprojection error (% of the outer-eye distance) of the true 68 and PnP rotation error (deg)."""
    out: dict = {"reproj": [], "reproj_inner": [], "rot": [], "rot_by_yaw": {}}
    for o in obs:
        K, R, t = o["cam"]
        P = o["verts"][lm_ids] + offsets
        eye = np.linalg.norm(o["mp"][45] - o["mp"][36])
        e = np.linalg.norm(project_points(P, K, R, t) - o["mp"], axis=1) / eye
        out["reproj"].append(e.mean())
        out["reproj_inner"].append(e[INNER].mean())
        sol = solve_pnp(P[INNER], o["mp"][INNER], K)
        if sol is not None:
            ang = float(rotation_angle_deg(torch.as_tensor(sol[0])[None], torch.as_tensor(R)[None])[0])
            out["rot"].append(ang)
            yaw = abs(float(head_yaw_deg(torch.as_tensor(R))))
            out["rot_by_yaw"].setdefault("0-20" if yaw < 20 else "20-45" if yaw < 45 else "45-60", []).append(ang)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=400, help="single-view renders to fit on")
    p.add_argument("--held-out", type=int, default=100, help="single-view renders to report on")
    p.add_argument("--write", default=None, help="write the offsets (JSON) here")
    p.add_argument("--max-yaw", type=float, default=MAX_YAW, help="fit on views up to this yaw (deg)")
    a, t0 = start(p, argv)
    lm_ids = np.asarray(load_checkpoint(None)[0].template.landmarks68)  # the runtime's landmark vertices
    mp = MediaPipeMesh()
    fit_obs = observations(a.kit, FIT_SEED, a.faces, mp, max_yaw=a.max_yaw)
    test_obs = observations(a.kit, HELD_OUT_SEED, a.held_out, mp)
    mp.close()
    offsets = fit_offsets(fit_obs, lm_ids)
    before, after = evaluate(test_obs, lm_ids, np.zeros_like(offsets)), evaluate(test_obs, lm_ids, offsets)
    if a.write:
        Path(a.write).parent.mkdir(parents=True, exist_ok=True)
        Path(a.write).write_text(json.dumps({
            "what": "per 68-landmark offset (head frame, metres) from the ICT kit's landmark vertex to the point "
                    "MediaPipe Face Mesh 0.10.21 (mapped by glvd.landmarks_map) marks; fitted on renders by "
                    "tools/calibrate_mediapipe_landmarks.py",
            "provenance": {"commit": git_commit(), "fit_seed": FIT_SEED, "fit_views": len(fit_obs),
                           "max_yaw_deg": a.max_yaw, "image_size": IMAGE_SIZE,
                           "command": generated_by("tools/calibrate_mediapipe_landmarks.py", argv)},
            "offsets_m": np.round(offsets, 6).tolist()}, indent=1))
    med = lambda v: f"{np.median(v):.2f}"  # noqa: E731
    pc = lambda v: f"{np.median(v) * 100:.1f}%"  # noqa: E731
    mm = np.linalg.norm(offsets, axis=1) * 1000
    regions = {"jaw (0-16)": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48),
               "mouth": slice(48, 68)}
    lines = ["# MediaPipe's landmarks on the kit's face", "",
             generated_by("tools/calibrate_mediapipe_landmarks.py", argv),
             "", __doc__.split("Usage:")[0].split("\n", 2)[2].strip(), "",
             f"Fitted on {len(fit_obs)} views ({a.faces} renders, seed {FIT_SEED}, |yaw| <= {a.max_yaw:.0f} deg, "
             f"MediaPipe found); reported on {len(test_obs)} held-out views (seed {HELD_OUT_SEED}).", "",
             "Offset length per region (mm): " + ", ".join(
                 f"{k} {np.median(mm[s]):.1f} (max {mm[s].max():.1f})" for k, s in regions.items()), "",
             "| held-out views, true shape and camera | without offsets | with offsets |", "|---|---|---|",
             f"| reprojection onto MediaPipe's 68, median of the mean, % of the eye distance | "
             f"{pc(before['reproj'])} | {pc(after['reproj'])} |",
             f"| same, inner 51 | {pc(before['reproj_inner'])} | {pc(after['reproj_inner'])} |",
             f"| PnP on the inner 51 (true shape, MediaPipe's 2D): median rotation error, deg | {med(before['rot'])} "
             f"| {med(after['rot'])} |"]
    for b in ("0-20", "20-45", "45-60"):
        if b in before["rot_by_yaw"]:
            lines.append(f"| ... yaw {b} deg (n={len(before['rot_by_yaw'][b])}) | {med(before['rot_by_yaw'][b])} | "
                         f"{med(after['rot_by_yaw'][b])} |")
    lines.append("")
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
