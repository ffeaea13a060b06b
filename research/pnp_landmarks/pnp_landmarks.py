"""Which landmarks the photo path's PnP should fit: the inner 51 or all 68, with and without the calibration.

Decided on data the evaluation does not score: LFW faces ``--first`` to ``--last`` (default 20-99; the
evaluation uses the first 20) through ``glvd.Reconstructor`` (68-landmark NME against dlib and against
MediaPipe), and held-out renders where the true shape and camera are known (PnP of the true face's
landmarks on MediaPipe's 68: rotation and position error by yaw).

Usage: .venv/bin/python -m research.pnp_landmarks.pnp_landmarks [--first 20] [--last 100] [--renders 200]
       [--out research/pnp_landmarks/pnp_landmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch

from glvd.api import Reconstructor
from glvd.cameras import head_yaw_deg, rotation_angle_deg
from glvd.landmarks_map import mediapipe68_offsets
import glvd.pose as pose
from glvd_train.baselines import MediaPipeMesh
from glvd_train.evaluate_photos import nme
from glvd_train.landmark_calibration import observations
from research.common import finish, generated_by, lfw_with_references, start


RENDER_SEED = 52_950_001  # neither the calibration's fit nor its report
#: (label, PnP landmarks, convention)
VARIANTS = [("inner 51, kit's vertices (until session 12)", pose.INNER, "kit"),
            ("inner 51, calibrated (the photo path since session 12)", pose.INNER, "mediapipe"),
            ("all 68, calibrated", slice(0, 68), "mediapipe")]
YAW_BINS = [(0, 20), (20, 45), (45, 90)]


@contextlib.contextmanager
def photo_path(points: slice, convention: str):
    """The runtime's photo path with another PnP landmark set and convention (this tool only)."""
    saved = pose.PNP_LANDMARKS, pose.landmark_points
    original = pose.landmark_points
    pose.PNP_LANDMARKS = points
    pose.landmark_points = lambda f68, _convention="mediapipe": original(f68, convention)
    try:
        yield
    finally:
        pose.PNP_LANDMARKS, pose.landmark_points = saved


def photos(first: int, last: int) -> tuple[dict, int]:
    """Per variant, NME per photo against dlib and MediaPipe; and how many photos were scored."""
    rec = Reconstructor(device="cpu")
    out = {label: {"dlib": [], "mp": []} for label, _, _ in VARIANTS}
    n = 0
    for img, refs in lfw_with_references(first, last):
        n += 1
        for label, points, convention in VARIANTS:
            with photo_path(points, convention):
                lm2d = rec.reconstruct(img).landmarks2d[0]
            for name, ref in refs.items():
                out[label][name].append(nme(lm2d, ref))
    return out, n


def renders(kit: str | None, count: int, lm_ids: np.ndarray) -> tuple[dict, int]:
    """Per variant and yaw bin, PnP rotation (deg) and position (mm) errors with the true shape."""
    mp = MediaPipeMesh()
    obs = observations(kit, RENDER_SEED, count, mp)
    mp.close()
    out = {}
    for label, points, convention in VARIANTS:
        off = mediapipe68_offsets() if convention == "mediapipe" else 0.0
        rows = []
        for o in obs:
            K, R, t = o["cam"]
            P = o["verts"][lm_ids] + off
            sol = pose.solve_pnp(P[points], o["mp"][points], K)
            if sol is not None:
                rot = float(rotation_angle_deg(torch.as_tensor(sol[0])[None], torch.as_tensor(R)[None])[0])
                rows.append((abs(float(head_yaw_deg(torch.as_tensor(R)))), rot, np.linalg.norm(sol[1] - t) * 1000))
        out[label] = np.array(rows)
    return out, len(obs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--first", type=int, default=20)
    p.add_argument("--last", type=int, default=100)
    p.add_argument("--renders", type=int, default=200)
    a, t0 = start(p, argv)
    lm_ids = np.asarray(Reconstructor(device="cpu").template.landmarks68)
    ph, n = photos(a.first, a.last)
    rn, views = renders(a.kit, a.renders, lm_ids)
    pct = lambda v: f"{np.median(v) * 100:.2f}%"  # noqa: E731
    lines = ["# Which landmarks PnP fits", "", generated_by("research.pnp_landmarks.pnp_landmarks", argv), "",
             __doc__.split("Usage:")[0].split("\n", 2)[2].strip(), "",
             f"## LFW faces {a.first}-{a.last - 1} ({n} where MediaPipe finds the face), median NME", "",
             "| PnP on | vs dlib | vs MediaPipe |", "|---|---|---|"]
    for label, v in ph.items():
        lines.append(f"| {label} | {pct(v['dlib'])} | {pct(v['mp'])} |")
    lines += ["", f"## Renders, true shape: PnP of its landmarks on MediaPipe's ({views} views, seed {RENDER_SEED}, "
              "|yaw| <= 60 deg), median rotation error (deg) / position error (mm)", "",
              "| PnP on | all | " + " | ".join(f"yaw {lo}-{hi}" for lo, hi in YAW_BINS) + " |",
              "|---|---|" + "---|" * len(YAW_BINS)]
    for label, r in rn.items():
        cells = [f"{np.median(r[:, 1]):.2f} / {np.median(r[:, 2]):.0f}"]
        for lo, hi in YAW_BINS:
            m = (r[:, 0] >= lo) & (r[:, 0] < hi)
            cells.append(f"{np.median(r[m, 1]):.2f} / {np.median(r[m, 2]):.0f} (n={m.sum()})" if m.any() else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
