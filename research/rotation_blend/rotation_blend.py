"""Where PnP's rotation and the model's own estimate agree, should the photo path blend them, and how much?

The photo path (``glvd.pose``) places a view by PnP of the face's landmarks on MediaPipe's; the model's
estimate (camera head + refiner) errs differently. A view whose PnP rotation lies within ``--max-deg`` of
the estimate's takes the rotation ``--weight`` of the way from PnP's to the estimate's
(``glvd.pose.BLEND_MAX_DEG``, ``BLEND_WEIGHT``). Scored per setting on data the evaluation does not use:

- held-out renders (research/camera_budget/camera_budget.py's faces, 3 views each, the true intrinsics): the photo
  path's median rotation error, by the head's yaw;
- LFW faces ``--first`` to ``--last`` (the evaluation scores the first 20) through ``glvd.Reconstructor``:
  the 68-landmark NME against dlib's independent landmarks and against MediaPipe's.

Usage: .venv/bin/python -m research.rotation_blend.rotation_blend [--faces 48]
       [--out research/rotation_blend/rotation_blend.md]
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch

from glvd.api import Reconstructor
from glvd.cameras import head_yaw_deg, rotation_angle_deg
from glvd.landmarks_map import mediapipe_to_68
import glvd.pose as pose
from glvd_train.baselines import MediaPipeMesh
from glvd_train.evaluate_photos import nme
from glvd_train.synth import SynthConfig, SyntheticFaces
from research.common import CAMERA_BUDGET_SEED as SEED
from research.common import CAMERA_BUDGET_VIEWS as VIEWS
from research.common import YAW_BINS, finish, generated_by, lfw_with_references, start


#: (largest angle between the two rotations, weight of the estimate's): (0, _) is PnP alone
SETTINGS = [(0.0, 0.5), (8.0, 0.5), (10.0, 0.5), (12.0, 0.5), (10.0, 0.3), (15.0, 0.3), (90.0, 0.5), (90.0, 1.0)]


@contextlib.contextmanager
def blending(max_deg: float, weight: float):
    """The runtime's photo path with another blend setting (this tool only)."""
    saved = pose.BLEND_MAX_DEG, pose.BLEND_WEIGHT
    pose.BLEND_MAX_DEG, pose.BLEND_WEIGHT = max_deg, weight
    try:
        yield
    finally:
        pose.BLEND_MAX_DEG, pose.BLEND_WEIGHT = saved


@torch.inference_mode()
def renders(model, kit: str | None, faces: int) -> tuple[dict, np.ndarray, list[float]]:
    """Per setting, each view's rotation error (deg); the views' yaw; PnP-to-estimate angles (no blend)."""
    s = SyntheticFaces(kit_path=kit, config=SynthConfig(image_size=model.cfg.image_size), seed=SEED).sample(
        faces, VIEWS)
    mp = MediaPipeMesh()
    errs: dict = {st: [] for st in SETTINGS}
    apart = []
    for f in range(faces):
        img, K, R = s["images"][f], s["K"][f], s["R"][f]
        feats = model.encode(img[None])
        prep = model.prepare(feats)
        est = model.estimate_cameras(feats, K[None], prep)
        dense = [mp(img[v]) for v in range(VIEWS)]
        lm68 = [None if d is None else mediapipe_to_68(d[:, :2]) for d in dense]
        for st in SETTINGS:
            with blending(*st):
                _, _, cams, sources = pose.descend_with_landmark_cameras(model, feats, est, lm68, prep=prep)
            errs[st] += rotation_angle_deg(cams.R[0], R).tolist()
            if st[0] == 0.0:
                apart += [float(rotation_angle_deg(cams.R[0, v], est.R[0, v]))
                          for v in range(VIEWS) if sources[v] == pose.FROM_LANDMARKS]
    mp.close()
    return errs, head_yaw_deg(s["R"].flatten(0, 1)).numpy(), apart


def photos(first: int, last: int) -> tuple[dict, int, list[float]]:
    """Per setting, NME per photo against dlib and MediaPipe; photos scored; PnP-to-estimate angles."""
    rec = Reconstructor(device="cpu")
    out = {st: {"dlib": [], "mp": []} for st in SETTINGS}
    apart, n = [], 0
    original = pose.landmark_cameras

    def watch(cams, landmarks2d, face68, keep_rotation=None, convention="mediapipe", prior=None):
        # only installed for the setting that blends nothing: PnP's own rotation against the estimate's
        new, sources = original(cams, landmarks2d, face68, keep_rotation, convention, prior)
        if prior is not None and sources[0] == pose.FROM_LANDMARKS:
            watched.append(float(rotation_angle_deg(new.R[0, 0], prior.R[0, 0])))
        return new, sources

    for img, refs in lfw_with_references(first, last):
        n += 1
        for st in SETTINGS:
            watched: list[float] = []
            if st[0] == 0.0:
                pose.landmark_cameras = watch
            try:
                with blending(*st):
                    lm2d = rec.reconstruct(img).landmarks2d[0]
            finally:
                pose.landmark_cameras = original
            if watched:
                apart.append(watched[-1])  # the pass on the reconstruction, as the renders' figure
            for name, ref in refs.items():
                out[st][name].append(nme(lm2d, ref))
    return out, n, apart


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=48, help="held-out faces (3 views each)")
    p.add_argument("--first", type=int, default=20)
    p.add_argument("--last", type=int, default=100)
    a, t0 = start(p, argv)
    rec = Reconstructor(device="cpu")
    errs, yaw, apart_r = renders(rec.model, a.kit, a.faces)
    nmes, n, apart_p = photos(a.first, a.last)
    cur = (pose.BLEND_MAX_DEG, pose.BLEND_WEIGHT)
    lines = ["# Blending PnP's rotation with the model's estimate", "",
             generated_by("research.rotation_blend.rotation_blend", argv), "",
             f"Renders: {a.faces} held-out faces x {VIEWS} views (research/camera_budget/camera_budget.py's, "
             f"seed {SEED}), the photo "
             f"path's final cameras. Photos: LFW faces {a.first}-{a.last - 1} where MediaPipe finds the face ({n}), "
             "through `glvd.Reconstructor`; median 68-landmark NME (% of the reference's outer-eye-corner distance; "
             "MediaPipe's columns favour PnP on its own landmarks, dlib is independent). Setting (0, -): PnP alone, "
             "the photo path until session 13. Shipped: "
             f"`glvd.pose.BLEND_MAX_DEG = {cur[0]:g}`, `BLEND_WEIGHT = {cur[1]:g}`.", "",
             "Angle between PnP's rotation (on the reconstruction) and the estimate's, where PnP placed the view: "
             f"renders median {np.median(apart_r):.1f} deg (n={len(apart_r)}), "
             f"{100 * np.mean(np.asarray(apart_r) < cur[0]):.0f}% within {cur[0]:g}; LFW median "
             f"{np.median(apart_p):.1f} deg (n={len(apart_p)}), {100 * np.mean(np.asarray(apart_p) < cur[0]):.0f}% "
             f"within {cur[0]:g}.", "",
             "| blend within (deg) | estimate's weight | renders: median rotation error | mean | "
             + " | ".join(f"yaw {lo}-{hi}" for lo, hi in YAW_BINS) + " | LFW NME vs dlib | vs MediaPipe |",
             "|---|---|---|---|" + "---|" * len(YAW_BINS) + "---|---|"]
    for st in SETTINGS:
        e = np.asarray(errs[st])
        bins = [np.median(e[(yaw >= lo) & (yaw < hi)]) for lo, hi in YAW_BINS]
        mark = " (shipped)" if st == cur else ""
        lines.append(f"| {st[0]:g}{mark} | {'-' if st[0] == 0 else f'{st[1]:g}'} | {np.median(e):.1f} | "
                     f"{e.mean():.1f} | " + " | ".join(f"{b:.1f}" for b in bins)
                     + f" | {100 * np.median(nmes[st]['dlib']):.2f}% | {100 * np.median(nmes[st]['mp']):.2f}% |")
    lines += ["", "Read: the blend gains on renders wherever the estimate's weight is large, but at 90 deg (blend "
              "always) it moves the LFW photos, where the estimate (trained on renders) is often farther from "
              "PnP; within 10 deg it touches few of them.", ""]
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
