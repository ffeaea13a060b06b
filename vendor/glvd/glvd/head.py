"""The whole head around GLVD's face: back of the head, ears, neck, eyeballs, teeth, gums, tongue, lashes.

GLVD reconstructs the ICT FaceKit's face area (vertices ``[0, 9409)``); :func:`build_head` builds the kit's
whole head (26,719 vertices, the kit's vertex order) around a :class:`glvd.api.Result`, for every descent
step, from the committed asset ``assets/head.npz`` (``tools/convert_head.py`` writes it from the kit):

1. A similarity (Umeyama) takes the template's face onto the step's face; in the template's frame the kit's
   identity coefficients (``COMPONENTS`` modes, ridge) are fitted to a subset of the face's vertices.
2. The back of the head is the kit's mean plus that fit, plus the face's residual to the fit carried over
   from the nearest face vertices with a fall-off (in full at the boundary, nothing 5 cm away): the face
   area's vertices are GLVD's exactly and the seam has no crack and no step.
3. Lashes and the eye overlays follow the eyelids they sit on (the face's displacement from the template at
   their nearest face vertices); each eyeball and the mouth (teeth, gums, tongue) moves rigidly with the
   mean displacement of the face vertices around it.
4. Everything goes back through the similarity; the face area is put back exactly.

:meth:`Head.expressions` carries the kit's 53 ARKit deltas onto the whole head: on the face area
:meth:`glvd.api.Result.expressions` (already smoothed: :mod:`glvd.transfer`), elsewhere the kit's (rotated and
scaled by the similarity) plus the face area's change to them, carried onto the parts that follow the face;
so lids close over the eyeballs with the lashes on them and jawOpen moves the teeth and the tongue.

:meth:`Head.posed_views` is the head as a photo shows it (its ARKit weights on those keys).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, GLVDError
from .expression import deltas_once, posed_vertices

ASSET = Path(__file__).resolve().parent / "assets" / "head.npz"
#: ridge weight of the identity fit (metres^2 against coefficients of unit variance)
FIT_RIDGE = 2e-5

#: the head's materials (what an artist sees), in slot order; the kit's parts map onto them
MATERIALS = ("Skin", "Mouth", "Teeth", "Sclera", "Iris", "Pupil", "Eye Wet", "Eyelashes")
KIT_TO_MATERIAL = {"M_Face": "Skin", "M_BackHead": "Skin", "M_GumsTongue": "Mouth", "M_Teeth": "Teeth",
                   "M_ScleraLeft": "Sclera", "M_ScleraRight": "Sclera", "M_IrisLeft": "Iris",
                   "M_IrisRight": "Iris", "M_LacrimalFluid": "Eye Wet", "M_EyeBlend": "Eye Wet",
                   "M_EyeOcclusion": "Eye Wet", "M_EyeLashes": "Eyelashes"}
#: linear RGB base colour, alpha, roughness of the materials that are not baked from the photos
MATERIAL_LOOKS = {"Skin": ((0.8, 0.62, 0.53), 1.0, 0.6), "Mouth": ((0.55, 0.16, 0.17), 1.0, 0.4),
                  "Teeth": ((0.85, 0.82, 0.72), 1.0, 0.3), "Sclera": ((0.85, 0.83, 0.8), 1.0, 0.15),
                  "Iris": ((0.16, 0.09, 0.05), 1.0, 0.3), "Pupil": ((0.005, 0.005, 0.005), 1.0, 0.3),
                  "Eye Wet": ((1.0, 1.0, 1.0), 0.0, 0.05),
                  "Eyelashes": ((0.03, 0.02, 0.015), 1.0, 0.6)}
#: the kit's skin parts lie on two UV tiles (face u in [0, 1], back of the head [1, 2]); the head packs them
#: side by side into one texture twice as wide as it is high
SKIN_TILES = 2
#: the kit's eyeballs are untextured here: the sclera's front cap (the cornea) is clear, the iris sphere
#: behind it shows the iris within IRIS_DEG of the eye's axis and the pupil within PUPIL_DEG
IRIS_DEG = 30.0
PUPIL_DEG = 11.0


@dataclass(frozen=True)
class HeadAsset:
    """The decoded asset (metres, the kit's frame); see tools/convert_head.py."""

    mean: np.ndarray  # (Nh, 3) float64
    polygons: np.ndarray  # (P, 4) int64, -1 pads triangles
    polygon_uvs: np.ndarray  # (P, 4) int64
    uvs: np.ndarray  # (U, 2) float32, the kit's tiles
    polygon_part: np.ndarray  # (P,) int64 into part_names
    part_names: list[str]
    face_count: int
    back_ids: np.ndarray
    back_basis: np.ndarray  # (C, Nb, 3) float64
    fit_ids: np.ndarray
    fit_basis: np.ndarray  # (C, M, 3)
    attach_ids: np.ndarray
    attach_face: np.ndarray  # (Na, K)
    attach_w: np.ndarray  # (Na, K), the fall-off included
    attach_fit: np.ndarray  # (Na,) bool: follows the residual to the fit (back of the head), else the face
    rigid: list[tuple[str, np.ndarray, np.ndarray]]  # (name, vertex ids, anchor face ids)
    expression_names: list[str]
    expr_ids: list[np.ndarray]  # per expression, ids relative to face_count
    expr_delta: list[np.ndarray]  # per expression, (n, 3) float32
    fit_solve: np.ndarray = field(repr=False)  # (C, 3M): the ridge solution operator
    fit_pos: np.ndarray = field(repr=False)  # (face_count,) index into fit_ids, -1 where not in the fit

    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])


def _decode(path: Path) -> HeadAsset:
    if not path.is_file():
        raise CheckpointError(f"the head asset is missing ({path}); tools/convert_head.py writes it from the kit")
    try:
        with np.load(path) as d:
            z = {k: d[k] for k in d.files}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the head asset {path}: {exc}") from exc
    if str(z.get("format")) != "glvd-head" or int(z.get("version", 0)) != 1:
        raise CheckpointError(f"{path} is not a version-1 GLVD head asset")
    nf = int(z["face_count"])
    back_basis = z["back_basis"].astype(np.float64) * z["back_scale"].astype(np.float64)[:, None, None]
    fit_basis = z["fit_basis"].astype(np.float64) * z["fit_scale"].astype(np.float64)[:, None, None]
    A = fit_basis.reshape(len(fit_basis), -1).T  # (3M, C)
    solve = np.linalg.solve(A.T @ A + FIT_RIDGE * np.eye(A.shape[1]), A.T)
    fit_pos = np.full(nf, -1, np.int64)
    fit_pos[z["fit_ids"]] = np.arange(len(z["fit_ids"]))
    ro, ao = z["rigid_off"], z["rigid_aoff"]
    rigid = [(str(n), z["rigid_ids"][ro[i]:ro[i + 1]].astype(np.int64),
              z["rigid_anchor"][ao[i]:ao[i + 1]].astype(np.int64)) for i, n in enumerate(z["rigid_names"])]
    eo = z["expr_off"]
    ids = [z["expr_ids"][eo[e]:eo[e + 1]].astype(np.int64) for e in range(len(eo) - 1)]
    deltas = [z["expr_delta"][eo[e]:eo[e + 1]].astype(np.float32) * z["expr_scale"][e] for e in range(len(eo) - 1)]
    return HeadAsset(
        mean=z["mean_q"].astype(np.float64) * float(z["mean_step"]), polygons=z["polygons"].astype(np.int64),
        polygon_uvs=z["polygon_uvs"].astype(np.int64), uvs=z["uvs"].astype(np.float32),
        polygon_part=z["polygon_material"].astype(np.int64), part_names=[str(s) for s in z["material_names"]],
        face_count=nf, back_ids=z["back_ids"].astype(np.int64), back_basis=back_basis,
        fit_ids=z["fit_ids"].astype(np.int64), fit_basis=fit_basis, attach_ids=z["attach_ids"].astype(np.int64),
        attach_face=z["attach_face"].astype(np.int64), attach_w=z["attach_w"].astype(np.float64),
        attach_fit=z["attach_fit"].astype(bool), rigid=rigid,
        expression_names=[str(s) for s in z["expression_names"]], expr_ids=ids, expr_delta=deltas,
        fit_solve=solve, fit_pos=fit_pos)


@lru_cache(maxsize=2)
def _load_cached(path: str, mtime: float) -> HeadAsset:
    return _decode(Path(path))


def load_asset(path: str | os.PathLike | None = None) -> HeadAsset:
    """The head asset (cached per file and modification time)."""
    p = Path(path) if path is not None else ASSET
    try:
        mtime = p.stat().st_mtime
    except OSError:
        mtime = -1.0
    return _load_cached(str(p), mtime)


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: ``s, R, t`` with ``dst ~ s * src @ R.T + t`` (least squares, a proper rotation)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / max((a * a).sum() / len(src), 1e-18))
    return s, R, md - s * ms @ R.T


@dataclass
class HeadFit:
    """One step's fit: the similarity from the template's frame and the identity coefficients."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    coefficients: np.ndarray  # (C,)


def fit_step(face: np.ndarray, asset: HeadAsset | None = None) -> tuple[np.ndarray, HeadFit]:
    """The whole head ``(Nh, 3)`` float32 around one step's face-area vertices ``(face_count, 3)``."""
    A = asset or load_asset()
    nf = A.face_count
    x = np.asarray(face, np.float64)
    if x.shape != (nf, 3) or not np.isfinite(x).all():
        raise GLVDError(f"the head needs the face area's {nf} finite vertices (got {x.shape})")
    mean = A.mean
    s, R, t = similarity(mean[A.fit_ids], x[A.fit_ids])
    y = (x - t) @ R / s  # the face in the template's frame
    c = A.fit_solve @ (y[A.fit_ids] - mean[A.fit_ids]).reshape(-1)
    head = mean.copy()
    head[:nf] = y
    head[A.back_ids] += np.tensordot(c, A.back_basis, 1)
    r0 = y - mean[:nf]  # the face's displacement from the template
    r_fit = np.zeros_like(r0)
    r_fit[A.fit_ids] = r0[A.fit_ids] - np.tensordot(c, A.fit_basis, 1)  # and from the fit
    src = np.where(A.attach_fit[:, None, None], r_fit[A.attach_face], r0[A.attach_face])  # (Na, K, 3)
    head[A.attach_ids] += np.einsum("ak,akd->ad", A.attach_w, src)
    for _name, ids, anchors in A.rigid:
        head[ids] += r0[anchors].mean(0)
    out = s * head @ R.T + t
    out[:nf] = x
    return out.astype(np.float32), HeadFit(s, R, t, c.astype(np.float32))


@dataclass
class Head:
    """A whole head: the kit's topology, GLVD's face area. Arrays numpy, metres, head frame."""

    vertices: np.ndarray  # (T+1, Nh, 3) float32, one per descent step ([0]: around the template)
    polygons: np.ndarray  # (P, 4) int64, -1 pads triangles
    uvs: np.ndarray  # (U, 2) float32; the skin's two tiles packed into [0, 1] (texture 2:1)
    polygon_uvs: np.ndarray  # (P, 4) int64 (-1 where the polygon is a triangle)
    polygon_material: np.ndarray  # (P,) int64 into MATERIALS
    material_names: list[str]
    face_count: int  # vertices [0, face_count) are GLVD's face area, unchanged
    expression_names: list[str]
    fits: list[HeadFit]
    _result: Any = field(repr=False, default=None)
    _asset: HeadAsset | None = field(repr=False, default=None)

    @property
    def final(self) -> np.ndarray:
        return self.vertices[-1]

    @property
    def steps(self) -> int:
        return int(self.vertices.shape[0] - 1)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[1])

    def expressions(self) -> np.ndarray:
        """``(53, Nh, 3)`` float32 ARKit deltas on the whole head, for the final step; computed once (read-only:
        :func:`glvd.expression.deltas_once`)."""
        return deltas_once(self, self.final, lambda: head_expressions(self._result, self.fits[-1], self._asset))

    def posed_views(self, expressions: np.ndarray | None = None) -> np.ndarray | None:
        """``(V, Nh, 3)`` the head as each photo shows it: the final step plus the photo's ARKit weights times
        :meth:`expressions` (pass them when already computed); its face area is ``Result.posed_views()``. None
        when the result carries no weights (a checkpoint without an expression head: the final step is the
        face as the photos show it)."""
        weights = getattr(self._result, "expression_weights", None)
        if weights is None:
            return None
        return posed_vertices(self.final, weights, self.expressions() if expressions is None else expressions)


def head_expressions(result: Any, fit: HeadFit, asset: HeadAsset | None = None) -> np.ndarray:
    """The kit's ARKit deltas on the whole head around ``result``'s final face (see the module's text)."""
    A = asset or load_asset()
    nf = A.face_count
    face = np.asarray(result.expressions(), np.float32)  # (E, nf, 3) on this face
    kit_face = getattr(result, "_template_expressions", None)
    if kit_face is None or face.shape[1] != nf:
        raise GLVDError("the result carries no face-area expression deltas of the kit's face area")
    names = list(result.expression_names)
    if names != A.expression_names:
        raise GLVDError("the checkpoint's expression names differ from the head asset's")
    sR = fit.scale * fit.rotation.T  # row vectors: d @ (s R)^T
    out = np.zeros((len(names), A.num_vertices, 3), np.float32)
    for e in range(len(names)):
        out[e, nf + A.expr_ids[e]] = A.expr_delta[e] @ sR
    kit_moved = np.asarray(kit_face, np.float32) @ sR.astype(np.float32)
    # what the transfer changed (smooth over the face: glvd.transfer), carried onto the parts that follow it
    corr = face - kit_moved
    out[:, :nf] = face
    out[:, A.attach_ids] += np.einsum("ak,eakd->ead", A.attach_w.astype(np.float32), corr[:, A.attach_face])
    return out


def _eye_materials(A: HeadAsset, pmat: np.ndarray) -> None:
    """Cornea, iris and pupil by the angle of each eye polygon from the eye's axis (in place)."""
    for side in ("Left", "Right"):
        sclera = A.polygon_part == A.part_names.index(f"M_Sclera{side}")
        iris = A.polygon_part == A.part_names.index(f"M_Iris{side}")
        iv = np.unique(A.polygons[iris][A.polygons[iris] >= 0])
        centre = A.mean[iv].mean(0)
        apex = A.mean[iv[np.argmax(A.mean[iv, 2])]]
        axis = (apex - centre) / np.linalg.norm(apex - centre)
        for sel, cuts in ((sclera, ((IRIS_DEG, "Eye Wet"),)), (iris, ((PUPIL_DEG, "Pupil"), (IRIS_DEG, "Iris")))):
            ids = np.nonzero(sel)[0]
            P = A.polygons[ids]
            c = np.where((P >= 0)[..., None], A.mean[np.maximum(P, 0)], 0).sum(1) / (P >= 0).sum(1, keepdims=True)
            d = c - centre
            ang = np.degrees(np.arccos(np.clip(d @ axis / np.linalg.norm(d, axis=1), -1, 1)))
            done = np.zeros(len(ids), bool)
            for deg, name in cuts:
                hit = (ang < deg) & ~done
                pmat[ids[hit]] = MATERIALS.index(name)
                done |= hit


def head_topology(asset: HeadAsset | None = None) -> dict[str, Any]:
    """Polygons, UVs (skin tiles packed into [0, 1]), per-polygon material ids and names: the same for every
    head."""
    A = asset or load_asset()
    mat_of_part = np.array([MATERIALS.index(KIT_TO_MATERIAL[n]) for n in A.part_names], np.int64)
    pmat = mat_of_part[A.polygon_part]
    _eye_materials(A, pmat)
    skin = pmat == MATERIALS.index("Skin")
    uvs = A.uvs.copy()
    used = np.unique(A.polygon_uvs[skin][A.polygon_uvs[skin] >= 0])
    uvs[used, 0] /= SKIN_TILES
    puv = np.where(A.polygons >= 0, A.polygon_uvs, -1)
    return {"polygons": A.polygons, "uvs": uvs, "polygon_uvs": puv, "polygon_material": pmat,
            "material_names": list(MATERIALS)}


def build_head(result: Any, asset: HeadAsset | None = None) -> Head:
    """The whole head around every descent step of ``result`` (a :class:`glvd.api.Result`)."""
    A = asset or load_asset()
    verts = np.asarray(result.vertices)
    if verts.ndim != 3 or verts.shape[1] != A.face_count:
        raise GLVDError(f"the head is built around the kit's face area ({A.face_count} vertices); this result "
                        f"has {verts.shape[1] if verts.ndim == 3 else verts.shape} (another template?)")
    steps, fits = [], []
    for x in verts:
        v, f = fit_step(x, A)
        steps.append(v)
        fits.append(f)
    topo = head_topology(A)
    return Head(vertices=np.stack(steps), polygons=topo["polygons"], uvs=topo["uvs"],
                polygon_uvs=topo["polygon_uvs"], polygon_material=topo["polygon_material"],
                material_names=topo["material_names"], face_count=A.face_count,
                expression_names=list(A.expression_names), fits=fits, _result=result, _asset=A)


def export_materials() -> list:
    """The head's materials for :mod:`glvd.export` (the skin takes the baked texture)."""
    from .export import Material

    return [Material(f"GLVD {n}", MATERIAL_LOOKS[n][0], MATERIAL_LOOKS[n][1], MATERIAL_LOOKS[n][2], n == "Skin")
            for n in MATERIALS]
