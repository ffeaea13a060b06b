"""A vectorised triangle rasteriser in plain torch (CPU or GPU).

Design (why it is fast on a 2-core CPU): the head's triangles are about one
pixel large at 256^2, so instead of looping over triangles or tiles we
enumerate, for every triangle at once, the pixel centres inside its bounding
box. Triangles are bucketed by their (power-of-two) bounding-box size so that
each bucket is one dense ``(T, h, w)`` tensor of candidates. Each candidate that
passes the edge test writes an int64 key ``(quantised depth << 22) | triangle``
into its pixel with ``scatter_reduce(amin)``: the nearest triangle wins without
any sort. Finally the barycentrics of the winning triangle are recomputed per
pixel from the (differentiable) vertex positions, so gradients reach the
vertices through the interpolated attributes (not through the silhouette).

Conventions: OpenCV cameras (x right, y down, z forward); pixel ``(row i,
col j)`` has its centre at ``(u, v) = (j + 0.5, i + 0.5)``, the image spans
``[0, S]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_TRI_BITS = 22  # up to 4M triangles per view
_DEPTH_BITS = 40
_NO_HIT = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    """Per-pixel rasterisation result.

    tri_id: ``(B, S, S)`` long, index into the triangle list, -1 on background.
    bary: ``(B, S, S, 3)`` perspective-correct barycentrics (zero on background),
        differentiable w.r.t. the vertex positions.
    depth: ``(B, S, S)`` camera-space z (0 on background), differentiable.
    """

    tri_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``(B, S, S)`` bool foreground."""
        return self.tri_id >= 0


def transform(verts: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Head frame -> camera frame: ``(B, N, 3)``, ``(B, 3, 3)``, ``(B, 3)`` -> ``(B, N, 3)``."""
    return torch.einsum("bij,bnj->bni", R, verts) + t[:, None, :]


def project(verts_cam: torch.Tensor, K: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Camera-frame points to pixels: ``(B, N, 3)``, ``K (B, 3, 3)`` -> ``(B, N, 2)``."""
    p = torch.einsum("bij,bnj->bni", K, verts_cam)
    return p[..., :2] / p[..., 2:3].clamp(min=eps)


def _ceil_pow2_log(n: torch.Tensor) -> torch.Tensor:
    """``ceil(log2(n))`` for ints >= 1."""
    return torch.ceil(torch.log2(n.float())).long()


@torch.no_grad()
def _visibility(
    uv: torch.Tensor, z: torch.Tensor, tris: torch.Tensor, size: int, cull_backfaces: bool, near: float
) -> torch.Tensor:
    """Winning triangle per pixel (no gradients).

    Args:
        uv: ``(B, N, 2)`` pixel coordinates; z: ``(B, N)`` camera depth.
        tris: ``(F, 3)`` long.
    Returns:
        ``(B, S*S)`` long triangle ids, -1 where nothing is drawn.
    """
    B = uv.shape[0]
    dev = uv.device
    S = size
    tu = uv[:, tris]  # (B, F, 3, 2)
    tz = z[:, tris]  # (B, F, 3)
    x0, y0 = tu[..., 0, 0], tu[..., 0, 1]
    x1, y1 = tu[..., 1, 0], tu[..., 1, 1]
    x2, y2 = tu[..., 2, 0], tu[..., 2, 1]
    # signed double area in pixel space (y down): > 0 means clockwise on screen
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    keep = (tz > near).all(-1) & (area.abs() > 1e-12)
    if cull_backfaces:
        # an outward (counter-clockwise in a y-up view) face appears with area < 0 in y-down pixels
        keep &= area < 0
    # pixel centres j + 0.5 inside [umin, umax] -> j in [ceil(umin - 0.5), floor(umax - 0.5)]
    umin = torch.ceil(tu[..., 0].amin(-1) - 0.5).clamp(min=0)
    umax = torch.floor(tu[..., 0].amax(-1) - 0.5).clamp(max=S - 1)
    vmin = torch.ceil(tu[..., 1].amin(-1) - 0.5).clamp(min=0)
    vmax = torch.floor(tu[..., 1].amax(-1) - 0.5).clamp(max=S - 1)
    nx = umax - umin + 1
    ny = vmax - vmin + 1
    keep &= (nx > 0) & (ny > 0)
    bi, fi = keep.nonzero(as_tuple=True)
    if bi.numel() == 0:
        return torch.full((B, S * S), -1, dtype=torch.long, device=dev)
    # per-kept-triangle quantities
    x0, y0, x1, y1, x2, y2 = (a[bi, fi] for a in (x0, y0, x1, y1, x2, y2))
    area_k = area[bi, fi]
    iz = 1.0 / tz[bi, fi]  # (T, 3) perspective-correct depth interpolates 1/z linearly
    u0, v0 = umin[bi, fi].long(), vmin[bi, fi].long()
    nxk, nyk = nx[bi, fi].long(), ny[bi, fi].long()
    zfar = float(tz.amax()) * 1.001 + 1e-9
    zscale = float(2**_DEPTH_BITS - 1) / zfar
    keys = torch.full((B * S * S,), _NO_HIT, dtype=torch.long, device=dev)
    lx = _ceil_pow2_log(nxk)
    ly = _ceil_pow2_log(nyk)
    bucket = lx * 16 + ly
    for bk in torch.unique(bucket).tolist():
        sel = (bucket == bk).nonzero(as_tuple=True)[0]
        w = 1 << (bk // 16)
        h = 1 << (bk % 16)
        ox = torch.arange(w, device=dev)
        oy = torch.arange(h, device=dev)
        px = u0[sel, None, None] + ox[None, None, :]  # (T, 1, w)
        py = v0[sel, None, None] + oy[None, :, None]  # (T, h, 1)
        inb = (px < (u0[sel] + nxk[sel])[:, None, None]) & (py < (v0[sel] + nyk[sel])[:, None, None])
        cx = px.float() + 0.5
        cy = py.float() + 0.5
        X0, Y0, X1, Y1, X2, Y2 = (a[sel, None, None] for a in (x0, y0, x1, y1, x2, y2))
        inv = 1.0 / area_k[sel, None, None]
        # barycentric weights from edge functions (normalised by the signed area)
        w0 = ((X1 - cx) * (Y2 - cy) - (X2 - cx) * (Y1 - cy)) * inv
        w1 = ((X2 - cx) * (Y0 - cy) - (X0 - cx) * (Y2 - cy)) * inv
        w2 = 1.0 - w0 - w1
        inside = inb & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        izs = iz[sel]
        izp = w0 * izs[:, 0, None, None] + w1 * izs[:, 1, None, None] + w2 * izs[:, 2, None, None]
        t_i, h_i, w_i = inside.nonzero(as_tuple=True)
        if t_i.numel() == 0:
            continue
        zq = (zscale / izp[t_i, h_i, w_i]).clamp(0, 2**_DEPTH_BITS - 1).long()
        gsel = sel[t_i]
        pix = bi[gsel] * (S * S) + py[t_i, h_i, 0] * S + px[t_i, 0, w_i]
        key = (zq << _TRI_BITS) | fi[gsel]
        keys.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
    hit = keys != _NO_HIT
    ids = torch.where(hit, keys & ((1 << _TRI_BITS) - 1), torch.full_like(keys, -1))
    return ids.view(B, S * S)


def rasterize(
    verts: torch.Tensor,
    tris: torch.Tensor,
    K: torch.Tensor,
    size: int,
    R: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    cull_backfaces: bool = True,
    near: float = 1e-3,
) -> Fragments:
    """Rasterise triangle meshes seen by pinhole cameras into ``size x size`` images.

    Args:
        verts: ``(B, N, 3)`` camera-frame vertices, or head-frame ones when ``R, t`` are given.
        tris: ``(F, 3)`` long; outward faces wind counter-clockwise seen from outside.
        K: ``(B, 3, 3)`` intrinsics in pixels of the ``size x size`` image.
        size: output resolution S.
        R, t: optional ``(B, 3, 3)``, ``(B, 3)`` with ``X_cam = R @ X + t``.
        cull_backfaces: drop faces seen from behind (closed meshes only need front faces).
        near: triangles with any vertex at ``z <= near`` are dropped.
    Returns:
        :class:`Fragments`; ``bary`` and ``depth`` carry gradients w.r.t. ``verts`` (and ``K, R, t``).
    """
    if R is not None:
        assert t is not None
        verts = transform(verts, R, t)
    B = verts.shape[0]
    S = int(size)
    tris = tris.to(verts.device).long()
    uv = project(verts, K)
    z = verts[..., 2]
    ids = _visibility(uv.detach(), z.detach(), tris, S, cull_backfaces, near)  # (B, S*S)
    tri_id = ids.view(B, S, S)
    # differentiable barycentrics of the winning triangles, only at covered pixels
    b_idx, p_idx = (ids >= 0).nonzero(as_tuple=True)
    f = ids[b_idx, p_idx]
    vid = tris[f]  # (P, 3)
    puv = uv[b_idx[:, None], vid]  # (P, 3, 2)
    pz = z[b_idx[:, None], vid]  # (P, 3)
    cx = (p_idx % S).to(uv.dtype) + 0.5
    cy = torch.div(p_idx, S, rounding_mode="floor").to(uv.dtype) + 0.5
    x0, y0 = puv[:, 0, 0], puv[:, 0, 1]
    x1, y1 = puv[:, 1, 0], puv[:, 1, 1]
    x2, y2 = puv[:, 2, 0], puv[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    l0 = ((x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)) / area
    l1 = ((x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)) / area
    l2 = 1.0 - l0 - l1
    lam = torch.stack([l0, l1, l2], -1)
    wz = lam / pz  # perspective correction: interpolate attribute/z and 1/z linearly on screen
    inv_depth = wz.sum(-1, keepdim=True)
    bary_p = wz / inv_depth
    depth_p = 1.0 / inv_depth[:, 0]
    bary = verts.new_zeros(B, S * S, 3).index_put((b_idx, p_idx), bary_p)
    depth = verts.new_zeros(B, S * S).index_put((b_idx, p_idx), depth_p)
    return Fragments(tri_id=tri_id, bary=bary.view(B, S, S, 3), depth=depth.view(B, S, S))


def interpolate(frags: Fragments, tris: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at the pixels.

    Args:
        frags: from :func:`rasterize` (batch B).
        tris: ``(F, 3)`` long, the triangles rasterised.
        attrs: ``(B, N, C)`` per-vertex values.
    Returns:
        ``(B, S, S, C)``, zero on background.
    """
    B, S, _ = frags.tri_id.shape
    C = attrs.shape[-1]
    ids = frags.tri_id.view(B, -1)
    b_idx, p_idx = (ids >= 0).nonzero(as_tuple=True)
    vid = tris.to(attrs.device)[ids[b_idx, p_idx]]  # (P, 3)
    a = attrs[b_idx[:, None], vid]  # (P, 3, C)
    w = frags.bary.view(B, -1, 3)[b_idx, p_idx]  # (P, 3)
    val = (a * w[..., None]).sum(1)
    out = attrs.new_zeros(B, S * S, C).index_put((b_idx, p_idx), val)
    return out.view(B, S, S, C)
