"""Where the reconstruction's 68 landmarks sit against the detectors' on the sample photos, by region.

The real-photo NME (docs/RESULTS.md) is dominated by the 17 jaw points. Two explanations differ
in what to do next: (1) a landmark convention: the kit's jaw landmarks are fixed vertices while
the detectors trace the visible contour, so a silhouette-following ("marching") jaw would fix it;
(2) the shape: the reconstructed lower face is not the person's. This report gives the median
signed offset per region (in units of the reference's outer-eye-corner distance; x along the eye
line towards the subject's left, y down the face) and the NME of the jaw when each jaw point
slides along a band of the mesh to the contour seen from the photo's camera (the last vertex
facing the camera before the surface turns away).

Usage: .venv/bin/python -m research.jaw_offsets.jaw_offsets [--photos 20] [--out research/jaw_offsets/jaw_offsets.md]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from glvd.api import Reconstructor
from glvd.detect import detect_faces
from glvd.pose import project_points
from glvd.topology import vertex_normals
from glvd_train.evaluate_photos import OUTER_EYE, DlibReference, nme, sample_photos
from research.common import REGIONS, finish, generated_by, signed_offsets, start


JAW = slice(0, 17)
def jaw_bands(tpl, width: float = 0.003, reach: float = 0.03, inward: float = 0.02):
    """Per jaw landmark: template vertex ids in a thin radial slice through it (from the eye line's
    centre outwards, within ``inward``/``reach`` m of it) and their signed outward distance."""
    V, lm = tpl.vertices, tpl.landmarks68
    c = np.array([0.0, V[lm[OUTER_EYE[0]], 1]])
    bands = []
    for j in range(17):
        p = V[lm[j]]
        o = (p[:2] - c) / np.linalg.norm(p[:2] - c)
        across = (V[:, :2] - p[:2]) @ np.array([-o[1], o[0]])
        s = (V[:, :2] - c) @ o - (p[:2] - c) @ o
        ids = np.nonzero((np.abs(across) < width) & (s > -inward) & (s < reach) & (V[:, 2] > -0.005))[0]
        bands.append((ids, s[ids]))
    return bands


def marched_jaw(verts: np.ndarray, quads: np.ndarray, lm: np.ndarray, R: np.ndarray, t: np.ndarray, bands,
                bin_m: float = 0.002) -> np.ndarray:
    """The 68 vertex ids with each jaw point moved along its band to the contour seen from camera ``R, t``."""
    n = vertex_normals(torch.as_tensor(verts)[None], torch.as_tensor(quads))[0].numpy()
    eye = -R.T @ t  # camera centre, head frame
    ids = lm.copy()
    for j, (cand, s) in enumerate(bands):
        if len(cand) == 0:
            continue
        to_cam = eye - verts[cand]
        facing = np.einsum("ij,ij->i", n[cand], to_cam) / np.linalg.norm(to_cam, axis=1)
        bins = np.floor(s / bin_m).astype(int)
        ub = np.unique(bins)
        fb = np.array([facing[bins == b].mean() for b in ub])
        k = min(int(np.searchsorted(ub, 0)), len(ub) - 1)
        if fb[k] >= 0:  # facing: walk outwards to the last bin before the surface turns away
            while k + 1 < len(ub) and fb[k + 1] >= 0:
                k += 1
        else:  # already turned away (far side): walk inwards to the first facing bin
            while k > 0 and fb[k] < 0:
                k -= 1
        in_bin = bins == ub[k]
        ids[j] = cand[in_bin][np.argmin(np.abs(facing[in_bin]))]
    return ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=20, help="LFW faces besides astronaut and grace_hopper")
    a, t0 = start(p, argv)
    rec = Reconstructor()
    tpl = rec.template
    lm = tpl.landmarks68
    bands = jaw_bands(tpl)
    dl = DlibReference()
    offsets: dict[str, list[np.ndarray]] = {"mp": [], "dlib": []}
    jaw_nme: dict[str, dict[str, list[float]]] = {r: {"fixed": [], "marched": []} for r in offsets}
    n = 0
    for _, img in sample_photos(a.photos):
        faces = [f for f in detect_faces(img, backend="mediapipe") if f.landmarks68 is not None]
        if not faces:
            continue
        res = rec.reconstruct(img)
        n += 1
        K, R, t = (res.cameras[k][0] for k in ("K", "R", "t"))
        marched = project_points(res.final[marched_jaw(res.final, tpl.quads, lm, R, t, bands)], K, R, t)
        refs = {"mp": faces[0].landmarks68}
        if dl.available:
            refs["dlib"] = dl.landmarks(img, faces[0].crop_box)[0]
        for name, ref in refs.items():
            offsets[name].append(signed_offsets(res.landmarks2d[0], ref))
            jaw_nme[name]["fixed"].append(nme(res.landmarks2d[0], ref, JAW))
            jaw_nme[name]["marched"].append(nme(marched, ref, JAW))
    lines = ["# Landmark offsets on the sample photos", "", generated_by("research.jaw_offsets.jaw_offsets", argv), "",
             f"{n} photos (astronaut, grace_hopper and LFW faces where MediaPipe finds the face), the shipped "
             "model through `glvd.Reconstructor` (camera: PnP on MediaPipe's inner 51 landmarks). Median over "
             "photos of the mean signed offset, reconstruction minus reference, in % of the reference's "
             "outer-eye-corner distance: x along the eye line towards the subject's left (the jaw's left "
             "half, points 0-7, is mirrored so + is outwards on both sides), y down the face.", "",
             "| reference | region | x (outwards for the jaw) | y (down) | mean distance |", "|---|---|---|---|---|"]
    for name, offs in offsets.items():
        if not offs:
            lines.append(f"| {name} | (not installed: {dl.why}) | | | |")
            continue
        o = np.stack(offs)  # (P, 68, 2)
        for region, ids in REGIONS.items():
            x, y = (np.median(o[:, ids, k].mean(1)) * 100 for k in (0, 1))
            dist = np.median(np.linalg.norm(o[:, ids], axis=2).mean(1)) * 100
            lines.append(f"| {name} | {region} | {x:+.1f}% | {y:+.1f}% | {dist:.1f}% |")
    lines += ["", "Jaw NME (the 17 jaw points only), fixed kit landmarks vs the jaw marched to the contour:", "",
              "| reference | fixed | marched to the contour |", "|---|---|---|"]
    for name, v in jaw_nme.items():
        if v["fixed"]:
            lines.append(f"| {name} | {np.median(v['fixed']) * 100:.1f}% | {np.median(v['marched']) * 100:.1f}% |")
    lines += ["", "Negative x on the jaw: the reconstruction's jaw is inside the detector's; negative y: above it.",
              ""]
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
