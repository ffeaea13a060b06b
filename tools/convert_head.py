"""Write the runtime's whole-head asset (``vendor/glvd/glvd/assets/head.npz``) from the ICT FaceKit Light.

The runtime reconstructs only the kit's face area (vertices ``[0, 9409)``); :mod:`glvd.head` builds the rest
of the head around it from this asset, so the runtime needs no data folder. What it holds (metres, the
kit's frame; derived from the MIT-licensed kit, nothing copied verbatim):

- the whole head's topology: ``polygons (P, 4)`` (-1 pads triangles), ``polygon_uvs``, ``uvs`` and
  ``polygon_material`` + ``material_names`` (the kit's 12 parts);
- ``mean`` the neutral head, int16 in units of ``MEAN_STEP_M``;
- a truncated identity basis (``COMPONENTS`` modes, int8 with one scale per mode) on the back of the head
  (``back_ids``) and on a subset of the face area (``fit_ids``) that the runtime fits to GLVD's face;
- how every other vertex follows the face: ``attach_*`` (the ``K`` nearest face-area vertices with weights
  and a fall-off with the distance, for the back of the head, the lashes and the eye overlays) and the
  rigid groups (eyeballs, mouth) with the face-area vertices that place them (``rigid_*``);
- the kit's 53 ARKit deltas on the vertices outside the face area, sparse (per expression: vertex ids,
  int8 deltas with one scale per expression; the face area's deltas are in the checkpoint).

    .venv/bin/python tools/convert_head.py [--kit PATH] [--out vendor/glvd/glvd/assets/head.npz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vendor" / "glvd"))

from glvd.topology import CM_TO_M, default_kit_path, load_kit  # noqa: E402

COMPONENTS = 32
MEAN_STEP_M = 1e-5  # 0.01 mm: int16 holds +-0.33 m
FIT_STRIDE = 8  # every 8th face-area vertex joins the fit (plus every anchor of the back of the head)
ATTACH_K = 6
#: the back of the head takes the face's residual in full at the boundary, fading to nothing this far away
BACK_FALLOFF_M = 0.05
#: eyeball / mouth groups are placed by the face-area vertices within this distance of the group
RIGID_ANCHOR_M = {"eye": 0.006, "mouth": 0.008}
EXPR_MIN_M = 2e-5  # deltas under 0.02 mm are dropped
VERSION = 1

RIGID_GROUPS = {"eye_left": ("M_ScleraLeft", "M_IrisLeft"), "eye_right": ("M_ScleraRight", "M_IrisRight"),
                "mouth": ("M_GumsTongue", "M_Teeth")}
ATTACHED = ("M_BackHead", "M_LacrimalFluid", "M_EyeBlend", "M_EyeOcclusion", "M_EyeLashes")


def quantise(a: np.ndarray, axis_keep: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and one float32 scale per index of ``axis_keep``."""
    a = np.asarray(a, np.float32)
    red = tuple(i for i in range(a.ndim) if i != axis_keep)
    scale = np.abs(a).max(axis=red) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis_keep] = -1
    return np.round(a / scale.reshape(shape)).astype(np.int8), scale


def convert(kit: dict) -> dict[str, np.ndarray]:
    from scipy.spatial import cKDTree

    names = [str(s) for s in kit["material_names"]]
    polys = np.asarray(kit["polygons"], np.int32)
    pmat = np.asarray(kit["polygon_material"], np.int16)
    mean = np.asarray(kit["mean"], np.float64) * CM_TO_M
    n_face = int(kit["face_area"][1])
    ident = np.asarray(kit["identity"][:COMPONENTS], np.float32) * CM_TO_M  # (C, N, 3)
    part = {}
    for i, n in enumerate(names):
        sel = polys[pmat == i]
        part[n] = np.unique(sel[sel >= 0])
    face_tree = cKDTree(mean[:n_face])

    # the back of the head outside the face area: the identity basis, and its attachment to the face
    back_ids = part["M_BackHead"][part["M_BackHead"] >= n_face]
    # attached vertices (back of head, lashes, eye overlays): the K nearest face vertices, inverse distance
    att = np.unique(np.concatenate([part[n] for n in ATTACHED]))
    att = att[att >= n_face]
    d, nb = face_tree.query(mean[att], k=ATTACH_K)
    w = 1.0 / np.maximum(d, 1e-4)
    w /= w.sum(1, keepdims=True)
    is_back = np.isin(att, back_ids)
    dmin = d[:, 0]
    x = np.clip(dmin / BACK_FALLOFF_M, 0.0, 1.0)
    fall = np.where(is_back, 1.0 - x * x * (3.0 - 2.0 * x), 1.0)
    fit_ids = np.union1d(np.arange(0, n_face, FIT_STRIDE), np.unique(nb[is_back]))

    rigid_ids, rigid_anchor, rigid_off, rigid_aoff = [], [], [0], [0]
    for g, mats in RIGID_GROUPS.items():
        ids = np.unique(np.concatenate([part[m] for m in mats]))
        r = RIGID_ANCHOR_M["mouth" if g == "mouth" else "eye"]
        near = np.unique(np.concatenate(face_tree.query_ball_point(mean[ids], r)))
        if len(near) < 8:
            raise SystemExit(f"{g}: only {len(near)} face vertices near it; the kit is not the one expected")
        rigid_ids.append(ids)
        rigid_anchor.append(near)
        rigid_off.append(rigid_off[-1] + len(ids))
        rigid_aoff.append(rigid_aoff[-1] + len(near))

    expr = np.asarray(kit["expression"], np.float32)[:, n_face:] * CM_TO_M  # (E, N - n_face, 3)
    e_ids, e_vals, e_scale, e_off = [], [], [], [0]
    for e in range(expr.shape[0]):
        keep = np.nonzero(np.abs(expr[e]).max(1) >= EXPR_MIN_M)[0]
        q, s = quantise(expr[e][keep][None], 0)
        e_ids.append(keep.astype(np.uint16))
        e_vals.append(q[0])
        e_scale.append(s[0])
        e_off.append(e_off[-1] + len(keep))
    q_back, s_back = quantise(ident[:, back_ids], 0)
    q_fit, s_fit = quantise(ident[:, fit_ids], 0)
    uvs = np.asarray(kit["uvs"], np.float32)
    return {
        "format": np.array("glvd-head"), "version": np.array(VERSION),
        "material_names": np.array(names), "face_count": np.array(n_face),
        "polygons": polys, "polygon_uvs": np.asarray(kit["polygon_uvs"], np.int32),
        "polygon_material": pmat.astype(np.int8), "uvs": uvs,
        "mean_q": np.round(mean / MEAN_STEP_M).astype(np.int16), "mean_step": np.array(MEAN_STEP_M, np.float64),
        "back_ids": back_ids.astype(np.int32), "back_basis": q_back, "back_scale": s_back,
        "fit_ids": fit_ids.astype(np.int32), "fit_basis": q_fit, "fit_scale": s_fit,
        "attach_ids": att.astype(np.int32), "attach_face": nb.astype(np.int32),
        "attach_w": (w * fall[:, None]).astype(np.float32), "attach_fit": is_back,
        "rigid_names": np.array(list(RIGID_GROUPS)), "rigid_ids": np.concatenate(rigid_ids).astype(np.int32),
        "rigid_off": np.array(rigid_off, np.int32), "rigid_anchor": np.concatenate(rigid_anchor).astype(np.int32),
        "rigid_aoff": np.array(rigid_aoff, np.int32),
        "expression_names": np.array([str(s) for s in kit["expression_names"]]),
        "expr_ids": np.concatenate(e_ids), "expr_delta": np.concatenate(e_vals),
        "expr_scale": np.array(e_scale, np.float32), "expr_off": np.array(e_off, np.int64),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kit", default=None, help="the ICT FaceKit Light npz (default: ../shared/data/...)")
    ap.add_argument("--out", default=str(REPO / "vendor" / "glvd" / "glvd" / "assets" / "head.npz"))
    a = ap.parse_args(argv)
    kit = load_kit(a.kit or default_kit_path())
    arrays = convert(kit)
    out = Path(a.out)
    tmp = out.with_name(out.stem + ".partial.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    print(f"wrote {out}: {out.stat().st_size / 1e6:.2f} MB ({COMPONENTS} identity modes on "
          f"{len(arrays['back_ids'])} back-of-head and {len(arrays['fit_ids'])} face vertices; "
          f"{len(arrays['expr_ids'])} expression entries outside the face area)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
