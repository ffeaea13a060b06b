"""Which focal length to assume for a photo without one (no EXIF): the landmark error against the distance.

Without a focal length the runtime assumes the camera stood ``distance`` metres from the head
(``glvd.cameras.focal_from_face_box``). This report runs the photo path (``glvd.Reconstructor``) on
LFW faces with several assumed distances and with the old fixed lens (1.2 x the longer side) and
gives the NME of the projected 68 landmarks against MediaPipe's (and dlib's, when installed), in %
of the outer-eye-corner distance. The distance is chosen on a calibration split (LFW faces 20-99)
that is disjoint from the photos docs/RESULTS.md is scored on (astronaut, grace_hopper, LFW 0-19);
the latter are reported too, for reference only.

Usage: .venv/bin/python -m research.focal_prior.focal_prior [--distances 0.35 0.6 0.9 1.2 1.6 2 3]
       [--out research/focal_prior/focal_prior.md]
"""

from __future__ import annotations

import argparse

import numpy as np

from glvd.api import Reconstructor
from glvd.cameras import DEFAULT_DISTANCE_M, focal_from_face_box
from glvd.detect import detect_faces
from glvd_train.evaluate_photos import OUTER_EYE, DlibReference, lfw_photos, nme, sample_photos
from research.common import finish, generated_by, start


OLD_LENS = "fixed lens (1.2 x longer side)"
JAW_SIDES = [*range(0, 6), *range(11, 17)]


def jaw_inwards(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean offset of the jaw sides along the eye line, outwards positive, in eye distances."""
    ex = ref[OUTER_EYE[1]] - ref[OUTER_EYE[0]]
    d = float(np.linalg.norm(ex))
    x = (pred - ref) @ (ex / d) / d
    sign = np.where(np.arange(68) < 8, -1.0, 1.0)  # points 0-7 are on the subject's right
    return float((x * sign)[JAW_SIDES].mean())


def score(rec: Reconstructor, photos: list[tuple[str, np.ndarray]], settings: list, dl: DlibReference) -> dict:
    """Per setting: lists of NME vs MediaPipe, vs dlib, and the jaw offset, over the photos with landmarks."""
    out = {s: {"mp": [], "dlib": [], "jaw": []} for s in settings}
    for _, img in photos:
        faces = [f for f in detect_faces(img, backend="mediapipe") if f.landmarks68 is not None]
        if not faces:
            continue
        face = faces[0]
        ref_dlib = dl.landmarks(img, face.crop_box)[0] if dl.available else None
        h, w = img.shape[:2]
        for s in settings:
            focal = 1.2 * max(w, h) if s == OLD_LENS else focal_from_face_box(face.crop_box[2], w, h, s)
            lm = rec.reconstruct(img, focal_px=[focal]).landmarks2d[0]
            out[s]["mp"].append(nme(lm, face.landmarks68))
            out[s]["jaw"].append(jaw_inwards(lm, face.landmarks68))
            if ref_dlib is not None:
                out[s]["dlib"].append(nme(lm, ref_dlib))
    return out


def table(scores: dict, dlib_why: str) -> list[str]:
    lines = ["| assumed | photos | NME vs MediaPipe: median | mean | 90th pct. | NME vs dlib: median | "
             "jaw sides, outwards (median) |", "|---|---|---|---|---|---|---|"]
    for s, r in scores.items():
        name = s if s == OLD_LENS else f"face {s:g} m away" + (" (default)" if s == DEFAULT_DISTANCE_M else "")
        mp = np.array(r["mp"]) * 100
        dl = f"{np.median(r['dlib']) * 100:.2f}%" if r["dlib"] else f"- ({dlib_why})"
        lines.append(f"| {name} | {len(mp)} | {np.median(mp):.2f}% | {mp.mean():.2f}% | "
                     f"{np.percentile(mp, 90):.2f}% | {dl} | {np.median(r['jaw']) * 100:+.1f}% |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--distances", type=float, nargs="+", default=[0.35, 0.6, 0.9, 1.2, 1.6, 2.0, 3.0])
    a, t0 = start(p, argv)
    rec = Reconstructor(device="cpu")
    dl = DlibReference()
    settings = [OLD_LENS, *a.distances]
    calib = score(rec, lfw_photos(20, 100), settings, dl)
    evals = score(rec, sample_photos(20), settings, dl)
    lines = ["# Focal length for photos without EXIF", "", generated_by("research.focal_prior.focal_prior", argv), "",
             "The photo path (`glvd.Reconstructor`: MediaPipe's landmarks, PnP, the descent, PnP again) with the "
             "focal length that puts the face at each distance (`glvd.cameras.focal_from_face_box`), or the old "
             "fixed lens. NME of the projected 68 landmarks in % of the reference's outer-eye-corner distance; "
             "'jaw sides' = mean offset of jaw points 0-5 and 11-16 along the eye line, + outwards.", "",
             "## Calibration split: LFW faces 20-99 (chooses the default)", "", *table(calib, dl.why), "",
             "## The photos docs/RESULTS.md scores (astronaut, grace_hopper, LFW 0-19), for reference", "",
             *table(evals, dl.why), "",
             "Read: a fixed lens treats a cropped face as seen from close up (for LFW's 200-pixel crops, about "
             "30 cm), so perspective shrinks the jaw against the eyes; the error falls as the assumed distance "
             "grows and flattens beyond about 1 m. The default sits on the flat part, inside the training "
             "renders' 0.35-1.6 m.", ""]
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
