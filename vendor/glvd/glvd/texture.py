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
   occlusion, silhouette, image border), so that the blend has no visible seams.
3. **Blend**: weighted mean of the bilinearly sampled photos; the summed weight
   gives a confidence in [0, 1].
4. **Fill**: texels with low confidence borrow from their mirror texel (the
   template is left/right symmetric; the mirror is found through the mirrored
   quad, so it follows the UV layout whatever it is), then a pull-push pyramid
   (a fast diffusion) fills what is still missing and pads every UV island out to
   the whole square, so bilinear lookups and mipmaps never bleed background in.

All pixel coordinates follow :mod:`glvd.cameras`: pixel centres at integer + 0.5,
an image of width W spans ``[0, W]``; cameras are OpenCV (``X_cam = R X + t``).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .errors import GLVDError
from .topology import vertex_normals

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


@dataclass
class UVRaster:
    """Topology-only data for one texture size (no vertex positions): cached between bakes.

    texel: ``(P,)`` int64 flat indices (into ``size*size``) of the texels inside (or touching) a UV island.
    corners: ``(3, P)`` int32 vertex ids of each texel's triangle (struct-of-arrays: fast elementwise maths).
    bary: ``(3, P)`` float32 barycentrics (non-negative, sum 1).
    chart: ``(size, size)`` bool, True inside UV islands.
    mirror_xy: ``(2, P)`` float32 (col, row) of each texel's mirror image in the texture (cv2 pixel
        coordinates, i.e. centre at integer), NaN where the mesh has no mirror for it.
    """

    size: int
    texel: np.ndarray
    corners: np.ndarray
    bary: np.ndarray
    chart: np.ndarray
    mirror_xy: np.ndarray

    def interp(self, values: np.ndarray) -> np.ndarray:
        """Per-vertex scalars ``(N,)`` -> per-texel ``(P,)`` float32."""
        c, b = self.corners, self.bary
        return b[0] * values.take(c[0]) + b[1] * values.take(c[1]) + b[2] * values.take(c[2])


_CACHE: OrderedDict[str, UVRaster] = OrderedDict()
_CACHE_MAX = 4


def _triangulate(quads: np.ndarray) -> np.ndarray:
    """``(F, 4)`` -> ``(2F, 3)``: triangles (0,1,2) and (0,2,3) of each quad, same order for verts and UVs."""
    q = np.asarray(quads, np.int64)
    return np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], 0)


def symmetry_map(verts: np.ndarray, tol: float = 0.002) -> np.ndarray:
    """For each vertex, the vertex nearest to its mirror ``(-x, y, z)``; -1 where none is within ``tol`` metres.

    Args:
        verts: ``(N, 3)`` a left/right symmetric mesh (the template), head frame.
    Returns:
        ``(N,)`` int64.
    """
    from scipy.spatial import cKDTree

    v = np.asarray(verts, np.float64)
    d, idx = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    return np.where(d <= tol, idx, -1).astype(np.int64)


def _mirror_uv_ids(quads: np.ndarray, quad_uvs: np.ndarray, sym: np.ndarray) -> np.ndarray:
    """For every triangle corner, the UV id of its mirror corner (in the mirrored quad); -1 if none.

    Following the mirrored *quad* (not just the mirrored vertex) picks the right UV on UV seams.
    Returns ``(2F, 3)`` int64 in :func:`_triangulate` order.
    """
    quads = np.asarray(quads, np.int64)
    quad_uvs = np.asarray(quad_uvs, np.int64)
    F_ = len(quads)
    base = int(quads.max()) + 2

    def pack(q: np.ndarray) -> np.ndarray:  # a quad's vertex set as one int64 (ids sorted)
        qs = np.sort(q, 1)
        return ((qs[:, 0] * base + qs[:, 1]) * base + qs[:, 2]) * base + qs[:, 3]

    out = np.full(quads.shape, -1, np.int64)
    mq = np.where(quads >= 0, sym[quads], -1)
    valid = (mq >= 0).all(1)
    keys = pack(quads)
    order = np.argsort(keys)
    mk = pack(np.where(valid[:, None], mq, 0))
    pos = np.clip(np.searchsorted(keys[order], mk), 0, F_ - 1)
    j = order[pos]
    found = valid & (keys[j] == mk)
    # corner k of quad i maps to the corner of quad j holding vertex sym[quads[i, k]]
    match = quads[j][:, None, :] == mq[:, :, None]  # (F, 4, 4)
    corner = match.argmax(2)
    found &= match.any(2).all(1)
    out[found] = np.take_along_axis(quad_uvs[j], corner, 1)[found]
    return _triangulate(out)


def _topology_key(quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray, sym: np.ndarray, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in (np.asarray(quads, np.int64), np.asarray(uvs, np.float32), np.asarray(quad_uvs, np.int64), sym):
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(str(a.shape).encode())
    h.update(str(size).encode())
    return h.hexdigest()


def uv_raster(quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray, size: int,
              symmetry: np.ndarray | None = None) -> UVRaster:
    """Rasterise the UV layout (cached per topology, UVs, symmetry and size).

    Args:
        quads: ``(F, 4)`` vertex ids; uvs ``(U, 2)``; quad_uvs ``(F, 4)`` UV ids.
        size: texture side S.
        symmetry: ``(N,)`` mirror vertex per vertex (-1: none), e.g. :func:`symmetry_map` of the template.
    """
    n_vert = int(np.asarray(quads).max()) + 1
    sym = np.full(n_vert, -1, np.int64) if symmetry is None else np.asarray(symmetry, np.int64)
    key = _topology_key(quads, uvs, quad_uvs, sym, size)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    S = int(size)
    uv = np.asarray(uvs, np.float32)
    tri_uv = _triangulate(quad_uvs)
    tri_v = _triangulate(quads)
    # UV -> texture pixels: x = u S, y = (1 - v) S (row 0 at v = 1); cv2 puts pixel centres at integers
    px = np.stack([uv[:, 0] * S - 0.5, (1.0 - uv[:, 1]) * S - 0.5], 1)
    # triangle ids painted by cv2 (a C loop per triangle: ~4x faster than the torch rasteriser for ~60-texel
    # triangles); its fill includes boundary pixels, so island borders are covered conservatively
    ids = np.zeros((S, S), np.int32)
    fixed = np.round(px * 16.0).astype(np.int32)  # 4 fractional bits
    for i, tr in enumerate(tri_uv):
        cv2.fillConvexPoly(ids, fixed[tr], i + 1, lineType=cv2.LINE_8, shift=4)
    flat = ids.reshape(-1)
    texel = np.flatnonzero(flat)
    tri = flat[texel] - 1
    # Per triangle, the barycentrics (and the mirror texel, which is a fixed mix of the mirrored corners' UVs)
    # are affine in the texel centre: precompute the coefficients once per triangle, then each texel costs
    # a few 1D gathers and multiply-adds (struct-of-arrays: 5x faster than (P, 3, 2) fancy indexing).
    cx = (texel % S).astype(np.float32)
    cy = (texel // S).astype(np.float32)
    a, b, c = (px[tri_uv[:, k]].astype(np.float64) for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    degenerate = np.abs(area) <= 1e-9
    inv = 1.0 / np.where(degenerate, 1.0, area)
    # l1 = ((x - ax)(cy - ay) - (cx - ax)(y - ay)) / area ; l2 = ((bx - ax)(y - ay) - (x - ax)(by - ay)) / area
    coef = np.stack([
        (c[:, 1] - a[:, 1]) * inv, -(c[:, 0] - a[:, 0]) * inv,
        (-a[:, 0] * (c[:, 1] - a[:, 1]) + a[:, 1] * (c[:, 0] - a[:, 0])) * inv,
        -(b[:, 1] - a[:, 1]) * inv, (b[:, 0] - a[:, 0]) * inv,
        (a[:, 0] * (b[:, 1] - a[:, 1]) - a[:, 1] * (b[:, 0] - a[:, 0])) * inv,
    ]).astype(np.float32)
    coef[:, degenerate] = np.array([0, 0, 1 / 3, 0, 0, 1 / 3], np.float32)[:, None]  # its centroid
    k = [row.take(tri) for row in coef]
    l1 = k[0] * cx + k[1] * cy + k[2]
    l2 = k[3] * cx + k[4] * cy + k[5]
    bary = np.clip(np.stack([1.0 - l1 - l2, l1, l2]), 0.0, None)  # border texels: clamp onto the triangle
    bary /= bary.sum(0, keepdims=True)
    chart = flat > 0
    m_ids = _mirror_uv_ids(quads, quad_uvs, sym)  # (2F, 3)
    ok = (m_ids >= 0).all(1)
    mpx = px[np.where(m_ids >= 0, m_ids, 0)]  # (2F, 3, 2) the mirror corners in texture pixels
    mirror_xy = np.empty((2, len(texel)), np.float32)
    for d in range(2):
        m0, m1, m2 = (mpx[:, j, d].astype(np.float32).take(tri) for j in range(3))
        mirror_xy[d] = bary[0] * m0 + bary[1] * m1 + bary[2] * m2
    mirror_xy[:, ~ok.take(tri)] = np.nan
    corners = np.stack([tri_v[:, j].astype(np.int32).take(tri) for j in range(3)])
    out = UVRaster(S, texel, corners, bary, chart.reshape(S, S), mirror_xy)
    _CACHE[key] = out
    while len(_CACHE) > _CACHE_MAX:
        _CACHE.popitem(last=False)
    return out


def _zbuffer(verts: np.ndarray, tris: torch.Tensor, K: np.ndarray, R: np.ndarray, t: np.ndarray,
             width: int, height: int, zsize: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Depth map of the mesh seen by one camera, on a square crop around the mesh's image.

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
    with torch.no_grad():
        fr = rasterize(torch.from_numpy(verts)[None], tris, Kd, D, torch.from_numpy(R)[None],
                       torch.from_numpy(t)[None], cull_backfaces=False)
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


class _Clock:
    """Accumulates wall time per stage: ``clock("name")`` charges the time since the previous call."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.totals[stage] = self.totals.get(stage, 0.0) + now - self._t
        self._t = now


def _check_inputs(verts: np.ndarray, quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray,
                  images: Sequence[np.ndarray], cameras: dict, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(size, (int, np.integer)) or not 16 <= int(size) <= 8192:
        raise GLVDError(f"texture size must be an integer between 16 and 8192 (got {size!r})")
    v = np.asarray(verts, np.float32)
    if v.ndim != 2 or v.shape[1] != 3:
        raise GLVDError(f"vertices must be (N, 3), got {v.shape}")
    q, qu = np.asarray(quads), np.asarray(quad_uvs)
    if q.ndim != 2 or q.shape[1] != 4 or qu.shape != q.shape:
        raise GLVDError(f"quads and quad_uvs must both be (F, 4), got {q.shape} and {qu.shape}")
    if q.min() < 0 or q.max() >= len(v) or qu.min() < 0 or qu.max() >= len(uvs):
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
    return K, R, t


def _pull_push(color: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Fill a whole image from weighted samples (Gortler et al. 1996 pull-push, a fast smooth diffusion).

    Args:
        color: ``(S, S, 3)`` float32 colours (any value where weight is 0).
        weight: ``(S, S)`` float32 in [0, 1].
    Returns:
        ``(S, S, 3)`` float32: the colours where weight is 1, a smooth fill where it is 0.
    """
    w = np.clip(weight, 0.0, 1.0).astype(np.float32)
    c = color.astype(np.float32) * w[..., None]  # premultiplied
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    while True:
        levels.append((c, w))
        h, wd = w.shape
        if h <= 1 and wd <= 1:
            break
        nh, nw = max(1, (h + 1) // 2), max(1, (wd + 1) // 2)
        # pull: sums over 2x2 children (area mean * 4); weights saturate at 1
        c2 = cv2.resize(c, (nw, nh), interpolation=cv2.INTER_AREA) * 4.0
        w2 = cv2.resize(w, (nw, nh), interpolation=cv2.INTER_AREA) * 4.0
        scale = np.minimum(w2, 1.0) / np.maximum(w2, 1e-12)
        c, w = c2 * scale[..., None], np.minimum(w2, 1.0)
    # push: from the coarsest level down, fill each level's missing weight with the upsampled coarser result
    c, w = levels[-1]
    out = c / np.maximum(w, 1e-12)[..., None]
    for c, w in reversed(levels[:-1]):
        up = cv2.resize(out, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR)
        if up.ndim == 2:
            up = up[..., None]
        out = c + (1.0 - w)[..., None] * up
    return out


def bake(verts: np.ndarray, quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray,
         images: Sequence[np.ndarray], cameras: dict, size: int = 1024, symmetry: np.ndarray | None = None,
         mode: str = "blend", zbuf_size: int = ZBUF_SIZE) -> Bake:
    """:func:`bake_views` with every intermediate (see :class:`Bake`).

    ``mode="best"`` (winner takes all, no feathering) exists only to show what the blend buys.
    """
    K, R, t = _check_inputs(verts, quads, uvs, quad_uvs, images, cameras, size)
    if mode not in ("blend", "best"):
        raise GLVDError(f"unknown bake mode {mode!r}")
    S = int(size)
    v = np.ascontiguousarray(verts, np.float32)
    clock = _Clock()
    ras = uv_raster(quads, uvs, quad_uvs, S, symmetry)
    clock("uv_raster")
    # texel points and smooth normals on the reconstructed surface, as separate x/y/z rows: every
    # per-texel operation below is then a contiguous elementwise kernel (3-10x faster than (P, 3) arrays)
    P = [ras.interp(np.ascontiguousarray(v[:, k])) for k in range(3)]
    vn = vertex_normals(torch.from_numpy(v)[None], torch.from_numpy(np.asarray(quads, np.int64)))[0].numpy()
    nrm = [ras.interp(np.ascontiguousarray(vn[:, k])) for k in range(3)]
    inv_len = 1.0 / np.maximum(np.sqrt(nrm[0] ** 2 + nrm[1] ** 2 + nrm[2] ** 2), 1e-12)
    tris = torch.from_numpy(_triangulate(quads))
    centres = -np.einsum("vji,vj->vi", R, t)  # camera centres in the head frame
    # a mesh wound the other way sees every camera from behind: flip its normals (one camera behind is normal)
    if all(float(((c - v) * vn).sum()) < 0 for c in centres):
        inv_len = -inv_len
    nrm = [n * inv_len for n in nrm]
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
        zb = _zbuffer(v, tris, K[i], R[i], t[i], w, h, zbuf_size)
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
    out = _pull_push(col_img.reshape(S, S, 3), g_img.reshape(S, S)).reshape(S * S, 3)
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
    return Bake(texture, coverage, blended, conf_all, weights.reshape(-1, S, S), clock.totals)


def bake_views(verts: np.ndarray, quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray,
               images: Sequence[np.ndarray], cameras: dict, size: int = 1024,
               symmetry: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bake photos onto a mesh's UV layout.

    Args:
        verts: ``(N, 3)`` the mesh, metres, head frame.
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


def bake_texture(result: Any, images: Sequence[Any], out_png: str | os.PathLike, size: int = 1024) -> str:
    """Bake a reconstruction's photos into a PNG texture for its UVs; returns the path written.

    Args:
        result: a :class:`glvd.api.Result` (final vertices, cameras in input-image pixels, quads, UVs).
        images: the photos given to ``reconstruct`` (paths, arrays or PIL images), in the same order.
        out_png: where to write the ``size x size`` RGB PNG.
    """
    from PIL import Image

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
    tpl = getattr(result, "_template_vertices", None)
    if tpl is None:
        tpl = result.vertices[0]
    sym = symmetry_map(np.asarray(tpl, np.float32))
    tex, _ = bake_views(result.vertices[-1], result.quads, result.uvs, result.quad_uvs, imgs, result.cameras,
                        size, symmetry=sym)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tex).save(out, format="PNG")
    return str(out)
