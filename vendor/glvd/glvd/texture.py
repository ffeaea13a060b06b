"""Bake the photos onto the face's UV map: one ``size x size`` RGB texture.

Method (docs/texture.md has the figures):

1. **UV raster** (per topology and size, cached): the mesh is rasterised in UV
   space, so every texel inside a UV island knows its triangle and barycentrics,
   hence a 3D point and a smooth normal on the reconstructed surface. Image row 0
   is ``v = 1`` (the PNG convention OBJ, glTF-after-flip and Blender expect).
2. **Per view**: the texel points are projected through the view's camera; a
   z-buffer of the mesh rendered from that camera (:mod:`glvd.raster`,
   on a square crop around the face so non-square photos of any size work)
   decides visibility with a depth tolerance. The weight is a smooth function of
   the cosine between the normal and the direction to the camera, times a
   feathering ramp (distance in texels to where this view stops being usable:
   occlusion, silhouette, image border), so that the blend has no visible seams. Near the mesh's
   outline in the view and at grazing angles a colour like the background right behind the outline
   (the photo outside the mesh, diffused in under it) is not taken.
3. **Blend**: weighted mean of the bilinearly sampled photos; the summed weight
   gives a confidence in [0, 1].
4. **Fill**: texels with low confidence borrow from their mirror texel (the
   template is left/right symmetric; the mirror is found through the mirrored
   quad, so it follows the UV layout whatever it is), then a pull-push pyramid
   (a fast diffusion) fills what is still missing and pads every UV island out to
   the whole square, so bilinear lookups and mipmaps never bleed background in; what nothing saw
   fades into the person's skin tone (:mod:`glvd.texture_fill`).

All pixel coordinates follow :mod:`glvd.cameras`: pixel centres at integer + 0.5,
an image of width W spans ``[0, W]``; cameras are OpenCV (``X_cam = R X + t``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .errors import GLVDError
from .topology import vertex_normals
from .texture_fill import background_behind, hole_share, likeness, pull_push, skin_tone  # noqa: F401 (the API)
from .uv_layout import UVRaster, _triangulate, symmetry_map, uv_raster  # noqa: F401 (symmetry_map: the API)

#: Weight ramp start: a view contributes nothing where the surface is seen more obliquely than this cosine.
COS_MIN = 0.15
#: Feathering width as a fraction of the texture side (about 20 texels at 1024).
FEATHER_FRAC = 0.02
#: Summed weight at which a texel counts as fully covered by the photos.
FULL_WEIGHT = 0.25
#: Below this confidence (photos + mirror) a texel blends into the diffused fill.
FILL_CONF = 0.15
#: Depth tolerance of the visibility test, metres (plus the depth map's pixel footprint).
DEPTH_TOL_M = 0.004
#: Side of the z-buffer rendered per view (pixels across the face's bounding box).
ZBUF_SIZE = 512
#: Below this facing weight a view sees the surface at a grazing angle (and may see past it).
GRAZING_WEIGHT = 0.35
#: Colour distance (0-255 RGB) under which a sample near an outline counts as the background behind it.
BACKGROUND_SIGMA = 18.0
#: Views fade in over this fraction of the z-buffer's side from the mesh's outline in the view.
SILHOUETTE_FRAC = 0.02
#: Unseen texels fade from the diffused colour to the skin tone over this fraction of the side (1/e).
TONE_FADE_FRAC = 0.03



def _zbuffer(verts: np.ndarray, tris: torch.Tensor, K: np.ndarray, R: np.ndarray, t: np.ndarray,
             width: int, height: int, zsize: int,
             occluder: tuple[np.ndarray, torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Depth map of the mesh (or of ``occluder``, a mesh around it) seen by one camera, on a square crop
    around the mesh's image.

    Returns ``(depth (D, D) float32 with +inf on background, A (3, 3))`` where ``A`` maps image pixels to
    depth-map pixels, or None when the mesh is not in front of the camera / not inside the image.
    """
    from .raster import rasterize

    Xc = verts @ R.T + t
    front = Xc[:, 2] > 1e-3
    if not front.any():
        return None
    p = Xc[front] @ K.T
    uv = p[:, :2] / p[:, 2:3]
    x0, y0 = np.maximum(uv.min(0), 0.0)
    x1, y1 = np.minimum(uv.max(0), [width, height])
    if x1 <= x0 or y1 <= y0:
        return None
    side = float(max(x1 - x0, y1 - y0))
    D = int(min(zsize, max(16, np.ceil(side))))
    s = D / side
    A = np.array([[s, 0, -s * x0], [0, s, -s * y0], [0, 0, 1]], np.float32)
    Kd = torch.from_numpy((A @ K).astype(np.float32))[None]
    if occluder is not None:
        verts, tris = occluder
    with torch.no_grad():
        fr = rasterize(torch.from_numpy(np.ascontiguousarray(verts, np.float32))[None], tris, Kd, D,
                       torch.from_numpy(R)[None], torch.from_numpy(t)[None], cull_backfaces=False)
    depth = np.full(D * D, np.inf, np.float32)
    depth[fr.pix.numpy()] = fr.depth_p.numpy()
    return depth.reshape(D, D), A


def _prefilter(img: np.ndarray, K: np.ndarray, face_px: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Downscale a photo whose face is much larger than the texture (bilinear lookups would alias)."""
    f = 1.5 * size / max(face_px, 1.0)
    if f >= 1.0:
        return img, K
    h, w = img.shape[:2]
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    S = np.diag([nw / w, nh / h, 1.0]).astype(np.float32)
    return small, S @ K


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Bilinear lookups of ``img (H, W, C)`` at ``(P,)`` cv2 pixel coordinates -> ``(P, C)`` float32.

    cv2.remap maps must stay below 32767 on a side, so the points go in as a ``(rows, 4096)`` block.
    """
    n = len(x)
    cols = 4096
    rows = max(1, -(-n // cols))
    mx = np.full(rows * cols, -1e4, np.float32)
    my = np.full(rows * cols, -1e4, np.float32)
    mx[:n], my[:n] = x, y
    out = cv2.remap(img, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR, borderMode=border,
                    borderValue=0)
    out = out.reshape(rows * cols, -1)[:n]
    return out.astype(np.float32, copy=False)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _surface(ras: UVRaster, v: np.ndarray, quads: np.ndarray) -> tuple[list, list, np.ndarray]:
    """Texel points and unit smooth normals on the mesh ``v (N, 3)``, as separate x/y/z rows (every per-texel
    operation is then a contiguous elementwise kernel, 3-10x faster than ``(P, 3)`` arrays), and the vertex
    normals ``(N, 3)``."""
    P = [ras.interp(np.ascontiguousarray(v[:, k])) for k in range(3)]
    vn = vertex_normals(torch.from_numpy(v)[None], torch.from_numpy(np.asarray(quads, np.int64)))[0].numpy()
    nrm = [ras.interp(np.ascontiguousarray(vn[:, k])) for k in range(3)]
    inv_len = 1.0 / np.maximum(np.sqrt(nrm[0] ** 2 + nrm[1] ** 2 + nrm[2] ** 2), 1e-12)
    return P, [n * inv_len for n in nrm], vn


@dataclass
class Bake:
    """Everything :func:`bake_views` computes (for tests and figures).

    texture: ``(S, S, 3)`` uint8 final texture; coverage: ``(S, S)`` photo confidence in [0, 1];
    blended: ``(S, S, 3)`` float32 photo blend (0-255, meaningful where coverage > 0);
    confidence: ``(S, S)`` photos + mirror; weights: ``(V, S, S)`` float32 per-view weights;
    timings: seconds per stage (``uv_raster``, ``surface``, ``zbuffer``, ``weights``, ``sample``, ``fill``).
    """

    texture: np.ndarray
    coverage: np.ndarray
    blended: np.ndarray
    confidence: np.ndarray
    weights: np.ndarray
    timings: dict[str, float]
    tone: np.ndarray  # (3,) float32 0-255: the skin tone the fill uses (:func:`skin_tone`)


class _Clock:
    """Accumulates wall time per stage: ``clock("name")`` charges the time since the previous call."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.totals[stage] = self.totals.get(stage, 0.0) + now - self._t
        self._t = now


def _per_view(verts: Any, views: int, what: str) -> np.ndarray:
    """``(N, 3)`` (one mesh for every view) or ``(V, N, 3)`` (each view's own: the face as that photo shows
    it) -> ``(1 or V, N, 3)`` float32, contiguous."""
    v = np.asarray(verts, np.float32)
    if not ((v.ndim == 2 and v.shape[1] == 3) or (v.ndim == 3 and v.shape[0] == views and v.shape[2] == 3)):
        raise GLVDError(f"{what} must be (N, 3), or (V, N, 3) with one mesh per view ({views} views), got "
                        f"{v.shape}")
    return np.ascontiguousarray(v if v.ndim == 3 else v[None])


def _check_inputs(verts: np.ndarray, quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray,
                  images: Sequence[np.ndarray], cameras: dict,
                  size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(size, (int, np.integer)) or not 16 <= int(size) <= 8192:
        raise GLVDError(f"texture size must be an integer between 16 and 8192 (got {size!r})")
    v = _per_view(verts, len(images), "vertices")
    q, qu = np.asarray(quads), np.asarray(quad_uvs)
    if q.ndim != 2 or q.shape[1] != 4 or qu.shape != q.shape:
        raise GLVDError(f"quads and quad_uvs must both be (F, 4), got {q.shape} and {qu.shape}")
    if q.min() < 0 or q.max() >= v.shape[1] or qu.min() < 0 or qu.max() >= len(uvs):
        raise GLVDError("quads or quad_uvs index out of range")
    try:
        K = np.asarray(cameras["K"], np.float32).reshape(-1, 3, 3)
        R = np.asarray(cameras["R"], np.float32).reshape(-1, 3, 3)
        t = np.asarray(cameras["t"], np.float32).reshape(-1, 3)
    except (KeyError, TypeError, ValueError) as exc:
        raise GLVDError(f"cameras must be a dict of K (V,3,3), R (V,3,3), t (V,3): {exc}") from exc
    if not (len(K) == len(R) == len(t) == len(images)):
        raise GLVDError(f"{len(images)} images but cameras for {len(K)}/{len(R)}/{len(t)} views")
    if len(images) == 0:
        raise GLVDError("no images to bake")
    for i, im in enumerate(images):
        a = np.asarray(im)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or a.shape[0] < 1 or a.shape[1] < 1:
            raise GLVDError(f"image {i + 1}: expected an HxWx3 uint8 array, got {a.dtype} {a.shape}")
    if not (np.isfinite(K).all() and np.isfinite(R).all() and np.isfinite(t).all() and np.isfinite(v).all()):
        raise GLVDError("cameras or vertices contain NaN or inf")
    return K, R, t, v


def bake(verts: np.ndarray, quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray,
         images: Sequence[np.ndarray], cameras: dict, size: int = 1024, symmetry: np.ndarray | None = None,
         mode: str = "blend", zbuf_size: int = ZBUF_SIZE, skin_only: np.ndarray | None = None,
         occluder: tuple[np.ndarray, np.ndarray] | None = None) -> Bake:
    """:func:`bake_views` with every intermediate (see :class:`Bake`).

    ``verts``: ``(N, 3)``, one mesh for every view, or ``(V, N, 3)``, each view's own (the face as that photo
    shows it: its expression on the neutral face, :meth:`glvd.api.Result.posed_views`): a texel is then looked
    up where that photo shows its point of the surface, so a smiling photo paints its lips on the lips.
    ``mode="best"`` (winner takes all, no feathering) exists only to show what the blend buys.
    ``skin_only``: optional ``(N,)`` per vertex in [0, 1]: how far only skin-like colours of the photos are
    taken there (1: a colour far from the skin tone counts as unseen, e.g. a collar on the lower neck).
    ``occluder``: optional ``(vertices (M, 3) or (V, M, 3), triangles (T, 3))``, a mesh that holds this one (the
    whole head): visibility and outlines are then its (the skull hides the far ear).
    """
    K, R, t, vs = _check_inputs(verts, quads, uvs, quad_uvs, images, cameras, size)
    if mode not in ("blend", "best"):
        raise GLVDError(f"unknown bake mode {mode!r}")
    S = int(size)
    clock = _Clock()
    ras = uv_raster(quads, uvs, quad_uvs, S, symmetry)
    clock("uv_raster")
    surfaces = [_surface(ras, v, quads) for v in vs]  # one, or one per view
    tris = torch.from_numpy(_triangulate(quads))
    occ_v = None
    if occluder is not None:
        occ_v = _per_view(occluder[0], len(images), "the occluder's vertices")
        occ_tris = torch.as_tensor(np.asarray(occluder[1], np.int64))
    centres = -np.einsum("vji,vj->vi", R, t)  # camera centres in the head frame
    # a mesh wound the other way sees every camera from behind: flip its normals (one camera behind is normal)
    if all(float(((c - vs[i % len(vs)]) * surfaces[i % len(vs)][2]).sum()) < 0 for i, c in enumerate(centres)):
        for _P, nrm, _vn in surfaces:
            nrm[:] = [-n for n in nrm]
    clock("surface")
    feather = max(1.0, FEATHER_FRAC * S)
    n_tex = len(ras.texel)
    num = np.zeros((n_tex, 3), np.float32)
    den = np.zeros(n_tex, np.float32)
    weights = np.zeros((len(images), S * S), np.float32)
    best_w = np.zeros(n_tex, np.float32)
    for i, img in enumerate(images):
        img = np.asarray(img)
        h, w = img.shape[:2]
        v, (P, nrm, _vn) = vs[i % len(vs)], surfaces[i % len(vs)]
        occ = None if occ_v is None else (occ_v[i % len(occ_v)], occ_tris)
        zb = _zbuffer(v, tris, K[i], R[i], t[i], w, h, zbuf_size, occ)
        clock("zbuffer")
        if zb is None:
            continue  # the face is behind this camera or outside its photo: the view adds nothing
        depth, A = zb
        Rm, tv, Km = R[i], t[i], K[i]
        X, Y, Z = (Rm[r, 0] * P[0] + Rm[r, 1] * P[1] + Rm[r, 2] * P[2] + tv[r] for r in range(3))
        iz = 1.0 / np.maximum(Z, 1e-6)
        pu = (Km[0, 0] * X + Km[0, 1] * Y) * iz + Km[0, 2]
        pv = Km[1, 1] * Y * iz + Km[1, 2]
        # facing term: cosine between the normal and the direction to the camera
        dx, dy, dz = (centres[i][k] - P[k] for k in range(3))
        cos = (nrm[0] * dx + nrm[1] * dy + nrm[2] * dz) / np.maximum(np.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
        w_ang = np.clip((cos - COS_MIN) * (1.0 / (1.0 - COS_MIN)), 0.0, 1.0)
        w_ang *= w_ang
        usable = (w_ang > 0) & (Z > 1e-3) & (pu >= 0.5) & (pu <= w - 0.5) & (pv >= 0.5) & (pv <= h - 0.5)
        # visibility: the texel's depth against the nearest of the 2x2 z-buffer samples around it (one lookup
        # in a 2x2-min-filtered map; a one-pixel +inf border takes the lookups that fall off the map)
        D = depth.shape[0]
        zmin = np.full((D + 2, D + 2), np.inf, np.float32)
        zmin[1:-1, 1:-1] = depth
        zmin = cv2.erode(zmin, np.ones((2, 2), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
        ix = np.clip(np.floor(A[0, 0] * pu + (A[0, 2] + 0.5)), 0, D).astype(np.int32)
        iy = np.clip(np.floor(A[1, 1] * pv + (A[1, 2] + 0.5)), 0, D).astype(np.int32)
        zb_t = zmin.reshape(-1).take(iy * (D + 2) + ix)
        # tolerance: a few mm plus the depth change across two z-buffer pixels on a sloped surface
        tan = np.sqrt(np.maximum(1.0 - cos * cos, 0.0)) / np.maximum(cos, 0.1)
        tol = DEPTH_TOL_M + (2.0 / (Km[0, 0] * A[0, 0])) * Z * tan
        usable &= Z <= zb_t + tol
        if not usable.any():
            continue
        wv = np.where(usable, w_ang, np.float32(0.0))
        if mode == "blend":
            # feathering: ramp up over `feather` texels from where this view stops being usable
            mask = np.ones(S * S, np.uint8)  # outside the islands counts as usable (no ramp at island borders)
            mask[ras.texel] = usable
            dist = cv2.distanceTransform(mask.reshape(S, S), cv2.DIST_L2, 3).reshape(-1).take(ras.texel)
            wv *= _smoothstep(dist * (1.0 / feather))
        clock("weights")
        img_f, K_f = _prefilter(img, Km, float(np.ptp(pu[usable])), S)
        sx, sy = K_f[0, 0] / Km[0, 0], K_f[1, 1] / Km[1, 1]
        col = _sample(img_f, pu * sx - 0.5, pv * sy - 0.5)
        if mode == "blend":
            # near the mesh's outline in this view (within SILHOUETTE_FRAC of the depth map), and where it is seen
            # at grazing angles, the photo may show what lies behind the face (the reconstruction's silhouette is
            # never exactly the person's): there a colour like the background right behind it is not taken
            inside = np.zeros((D + 2, D + 2), np.uint8)
            inside[1:-1, 1:-1] = np.isfinite(depth)
            sil = cv2.distanceTransform(inside, cv2.DIST_L2, 3).reshape(-1).take(iy * (D + 2) + ix)
            risk = np.maximum(1.0 - _smoothstep(sil * (1.0 / max(SILHOUETTE_FRAC * D, 1.0))),
                              1.0 - _smoothstep(w_ang * (1.0 / GRAZING_WEIGHT)))
            behind = background_behind(img, A, depth)  # (D * D, 3) the background diffused under the face
            bg = behind[np.clip(iy - 1, 0, D - 1) * D + np.clip(ix - 1, 0, D - 1)]
            wv *= 1.0 - risk * likeness(col, bg, BACKGROUND_SIGMA)
        if mode == "best":
            take = wv > best_w
            num[take], den[take], best_w[take] = col[take] * wv[take, None], wv[take], wv[take]
        else:
            num += col * wv[:, None]
            den += wv
        weights[i, ras.texel] = wv
        clock("sample")
    seen = den > 0
    a = np.zeros((n_tex, 3), np.float32)  # the photo blend per texel
    a[seen] = num[seen] / den[seen, None]
    c = np.clip(den * (1.0 / FULL_WEIGHT), 0.0, 1.0) if mode == "blend" else seen.astype(np.float32)
    tone = skin_tone(a, c)
    # texels the photos saw only faintly (near a silhouette) and that look nothing like the skin are the
    # background or hair behind the silhouette: trust them less, so they do not streak into the fill
    faint = c < 1.0
    c[faint] *= likeness(a[faint], tone)
    if skin_only is not None:
        so = np.clip(ras.interp(np.ascontiguousarray(skin_only, np.float32)), 0.0, 1.0)
        c *= 1.0 - so + so * likeness(a, tone)
    # mirror: premultiplied bilinear lookups at each texel's mirror image (BGR-free: 4 channels = c*rgb, c)
    ca = np.zeros((S * S, 4), np.float32)
    ca[ras.texel, :3] = a * c[:, None]
    ca[ras.texel, 3] = c
    m = _sample(ca.reshape(S, S, 4), np.nan_to_num(ras.mirror_xy[0], nan=-1e4),
                np.nan_to_num(ras.mirror_xy[1], nan=-1e4), cv2.BORDER_CONSTANT)
    extra = (1.0 - c) * m[:, 3]  # the mirror only fills what the photos left open
    tot = c + extra
    mixed = (c[:, None] * a + (1.0 - c)[:, None] * m[:, :3]) / np.maximum(tot, 1e-12)[:, None]
    # diffusion fill + padding over the whole square; then keep what was confidently seen
    g = _smoothstep(tot * (1.0 / FILL_CONF))
    col_img = np.zeros((S * S, 3), np.float32)
    col_img[ras.texel] = mixed
    g_img = np.zeros(S * S, np.float32)
    g_img[ras.texel] = g
    out = pull_push(col_img.reshape(S, S, 3), g_img.reshape(S, S)).reshape(S * S, 3)
    # what nothing saw becomes the person's skin tone: the diffused colour keeps its variation near what was
    # seen, fades to the tone further away, and never carries a colour far from the skin (black, background)
    far = cv2.distanceTransform((g_img.reshape(S, S) < 0.5).astype(np.uint8), cv2.DIST_L2, 3).reshape(-1)
    keep = np.exp(-far * (1.0 / (TONE_FADE_FRAC * S)))[:, None] * likeness(out, tone)[:, None]
    out = tone + keep * (out - tone)
    out[ras.texel] = g[:, None] * mixed + (1.0 - g)[:, None] * out[ras.texel]
    if not seen.any():
        out[:] = 128.0  # nothing was seen at all: a neutral grey, not black
    texture = np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(S, S, 3)
    coverage = np.zeros(S * S, np.float32)
    coverage[ras.texel] = c
    blended = np.zeros((S * S, 3), np.float32)
    blended[ras.texel] = a
    conf_all = np.zeros(S * S, np.float32)
    conf_all[ras.texel] = tot
    coverage, blended, conf_all = coverage.reshape(S, S), blended.reshape(S, S, 3), conf_all.reshape(S, S)
    clock("fill")
    return Bake(texture, coverage, blended, conf_all, weights.reshape(-1, S, S), clock.totals,
                tone if seen.any() else np.full(3, 128.0, np.float32))


def bake_views(verts: np.ndarray, quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray,
               images: Sequence[np.ndarray], cameras: dict, size: int = 1024,
               symmetry: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bake photos onto a mesh's UV layout.

    Args:
        verts: ``(N, 3)`` the mesh, metres, head frame; or ``(V, N, 3)``, each view's own (the face as that
            photo shows it, see :func:`bake`).
        quads: ``(F, 4)`` vertex ids, counter-clockwise seen from outside.
        uvs: ``(U, 2)`` in [0, 1], v up; quad_uvs: ``(F, 4)`` ids into ``uvs``.
        images: V photos, ``(H, W, 3)`` uint8 RGB (any sizes).
        cameras: ``K (V, 3, 3)`` in each photo's pixels, ``R (V, 3, 3)``, ``t (V, 3)`` (OpenCV, ``X_cam = R X + t``).
        size: texture side S (16-8192).
        symmetry: ``(N,)`` mirror vertex of each vertex (-1: none), from the *symmetric template*
            (:func:`symmetry_map`); None = no mirror fill (diffusion only).
    Returns:
        ``texture (S, S, 3)`` uint8, row 0 at ``v = 1``; ``coverage (S, S)`` float32 in [0, 1]: how well the
        photos themselves saw each texel (0 outside UV islands and where only mirror/diffusion filled in).
    Raises:
        GLVDError: inconsistent cameras / images / mesh, or a bad size.
    """
    b = bake(verts, quads, uvs, quad_uvs, images, cameras, size, symmetry)
    return b.texture, b.coverage


def load_photos(result: Any, images: Sequence[Any]) -> list[np.ndarray]:
    """The photos given to ``reconstruct`` as ``(H, W, 3)`` uint8 arrays, checked against the result's views."""
    from .preprocess import load_image

    if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "getpixel"):
        images = [images]
    imgs = [load_image(src) for src in images]
    sizes = getattr(result, "image_sizes", None)
    if sizes is not None:
        if len(sizes) != len(imgs):
            raise GLVDError(f"the reconstruction has {len(sizes)} views but {len(imgs)} images were given")
        for i, (im, (w, h)) in enumerate(zip(imgs, sizes, strict=True)):
            if (im.shape[1], im.shape[0]) != (int(w), int(h)):
                raise GLVDError(f"image {i + 1} is {im.shape[1]}x{im.shape[0]} but the reconstruction saw {w}x{h}")
    return imgs


def photo_faces(result: Any) -> np.ndarray:
    """What a result's texture bakes through: each photo's face as it shows it, ``(V, N, 3)``
    (:meth:`glvd.api.Result.posed_views`: the neutral face with the photo's expression), or the final step
    ``(N, 3)`` when the result carries no expression weights (it is then the face as the photos show it)."""
    if getattr(result, "expression_weights", None) is None:
        return result.vertices[-1]
    return result.posed_views()


def bake_texture(result: Any, images: Sequence[Any], out_png: str | os.PathLike, size: int = 1024) -> str:
    """Bake a reconstruction's photos into a PNG texture for its UVs; returns the path written.

    Args:
        result: a :class:`glvd.api.Result` (final vertices, cameras in input-image pixels, quads, UVs); baked
            through each photo's own face (:func:`photo_faces`), the texture is the neutral face's.
        images: the photos given to ``reconstruct`` (paths, arrays or PIL images), in the same order.
        out_png: where to write the ``size x size`` RGB PNG.
    """
    from PIL import Image

    imgs = load_photos(result, images)
    tpl = getattr(result, "_template_vertices", None)
    if tpl is None:
        tpl = result.vertices[0]
    sym = symmetry_map(np.asarray(tpl, np.float32))
    tex, _ = bake_views(photo_faces(result), result.quads, result.uvs, result.quad_uvs, imgs, result.cameras,
                        size, symmetry=sym)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tex).save(out, format="PNG")
    return str(out)
