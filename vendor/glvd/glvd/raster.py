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
    """Per-pixel rasterisation result, stored sparsely (covered pixels only).

    tri_id: ``(B, S, S)`` long, index into the triangle list, -1 on background.
    pix: ``(P,)`` flat indices (into ``B*S*S``) of the covered pixels.
    vidx: ``(P, 3)`` flat indices (into ``B*N``) of their triangle's vertices.
    bary_p: ``(P, 3)`` perspective-correct barycentrics, differentiable w.r.t. the vertices.
    depth_p: ``(P,)`` camera-space z, differentiable.
    The dense ``bary (B, S, S, 3)`` and ``depth (B, S, S)`` (zero on background) are built on access.
    """

    tri_id: torch.Tensor
    pix: torch.Tensor
    vidx: torch.Tensor
    bary_p: torch.Tensor
    depth_p: torch.Tensor
    num_vertices: int

    @property
    def mask(self) -> torch.Tensor:
        """``(B, S, S)`` bool foreground."""
        return self.tri_id >= 0

    @property
    def bary(self) -> torch.Tensor:
        B, S, _ = self.tri_id.shape
        out = self.bary_p.new_zeros(B * S * S, 3).index_put((self.pix,), self.bary_p)
        return out.view(B, S, S, 3)

    @property
    def depth(self) -> torch.Tensor:
        B, S, _ = self.tri_id.shape
        out = self.depth_p.new_zeros(B * S * S).index_put((self.pix,), self.depth_p)
        return out.view(B, S, S)


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
    B = z.shape[0]
    dev = uv.device
    S = size
    F_ = tris.shape[0]
    # Struct-of-arrays layout throughout: every tensor has the (long) triangle or candidate axis
    # innermost, so elementwise kernels run over long contiguous rows even for 1x1 boxes.
    xs, ys, zs = uv[..., 0].contiguous(), uv[..., 1].contiguous(), z.contiguous()
    corner = [[a.index_select(1, tris[:, c]).view(-1) for c in range(3)] for a in (xs, ys, zs)]
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = corner  # each (B*F,)
    # signed double area in pixel space (y down)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    keep = torch.minimum(torch.minimum(z0, z1), z2) > near
    if cull_backfaces:
        # an outward (counter-clockwise seen from outside) face shows a negative area in y-down pixels
        keep &= area < -1e-12
    else:
        keep &= area.abs() > 1e-12
    sel = keep.nonzero().squeeze(1)  # first cut: about half the triangles are back faces
    X = torch.stack([x0.index_select(0, sel), x1.index_select(0, sel), x2.index_select(0, sel)])  # (3, T)
    Y = torch.stack([y0.index_select(0, sel), y1.index_select(0, sel), y2.index_select(0, sel)])
    # pixel centres j + 0.5 inside [umin, umax] -> j in [ceil(umin - 0.5), floor(umax - 0.5)]
    umin = torch.ceil(X.amin(0) - 0.5).clamp(min=0)
    umax = torch.floor(X.amax(0) - 0.5).clamp(max=S - 1)
    vmin = torch.ceil(Y.amin(0) - 0.5).clamp(min=0)
    vmax = torch.floor(Y.amax(0) - 0.5).clamp(max=S - 1)
    nxk = (umax - umin + 1).long()
    nyk = (vmax - vmin + 1).long()
    covers = ((nxk > 0) & (nyk > 0)).nonzero().squeeze(1)  # second cut: boxes holding a pixel centre
    if covers.numel() == 0:
        return torch.full((B, S * S), -1, dtype=torch.long, device=dev)
    sel = sel.index_select(0, covers)
    X, Y = X.index_select(1, covers), Y.index_select(1, covers)
    u0, v0 = umin.index_select(0, covers).long(), vmin.index_select(0, covers).long()
    nxk, nyk = nxk.index_select(0, covers), nyk.index_select(0, covers)
    Z = torch.stack([z0.index_select(0, sel), z1.index_select(0, sel), z2.index_select(0, sel)])
    iz = 1.0 / Z  # perspective-correct depth interpolates 1/z linearly on screen
    inv_area = 1.0 / area.index_select(0, sel)
    # Each of the three edge functions (normalised by the area) and 1/z is affine in the pixel
    # centre: e = A * cx + Bc * cy + C. Per triangle we precompute (A, Bc, C) so that a candidate
    # costs one broadcast add per function (a column term plus a row term).
    # edge i is opposite vertex i: e_i(p) = ((xj - px)(yk - py) - (xk - px)(yj - py)) / area
    xa, ya = X.roll(-1, 0), Y.roll(-1, 0)  # vertex j = i + 1
    xb, yb = X.roll(-2, 0), Y.roll(-2, 0)  # vertex k = i + 2
    A = (ya - yb) * inv_area  # (3, T); expanding the determinant: e_i = A cx + Bc cy + C
    Bc = (xb - xa) * inv_area
    C = (xa * yb - xb * ya) * inv_area
    # the e_i are the screen-space barycentrics, so 1/z = sum_i e_i / z_i is affine too
    A = torch.cat([A, (A * iz).sum(0, keepdim=True)], 0)  # (4, T): three edges and 1/z
    Bc = torch.cat([Bc, (Bc * iz).sum(0, keepdim=True)], 0)
    C = torch.cat([C, (C * iz).sum(0, keepdim=True)], 0)
    # buckets: exact box sizes up to 4 pixels (most triangles), powers of two beyond
    bx = torch.where(nxk <= 4, nxk, 1 << _ceil_pow2_log(nxk))
    by = torch.where(nyk <= 4, nyk, 1 << _ceil_pow2_log(nyk))
    bucket = bx * (4 * S) + by
    bucket, order = torch.sort(bucket)
    # one gather into bucket order; buckets are then contiguous slices
    A, Bc, C = A.index_select(1, order), Bc.index_select(1, order), C.index_select(1, order)
    u0, v0, nxk, nyk, sel = (a.index_select(0, order) for a in (u0, v0, nxk, nyk, sel))
    bi = torch.div(sel, F_, rounding_mode="floor")
    fid = sel - bi * F_
    base_pix = bi * (S * S) + v0 * S + u0  # flat index of each box's top-left pixel
    keys_u, counts = torch.unique_consecutive(bucket, return_counts=True)
    zfar = float(torch.maximum(torch.maximum(z0, z1), z2).amax()) * 1.001 + 1e-9
    zscale = float(2**_DEPTH_BITS - 1) / zfar
    keys = torch.full((B * S * S,), _NO_HIT, dtype=torch.long, device=dev)
    u0f, v0f = u0.to(uv.dtype) + 0.5, v0.to(uv.dtype) + 0.5
    start = 0
    for bk, cnt in zip(keys_u.tolist(), counts.tolist(), strict=True):
        sl = slice(start, start + cnt)
        start += cnt
        w, h = bk // (4 * S), bk % (4 * S)
        ox = torch.arange(w, device=dev)
        oy = torch.arange(h, device=dev)
        cx = u0f[None, sl] + ox[:, None].to(uv.dtype)  # (w, T) pixel-centre columns
        cy = v0f[None, sl] + oy[:, None].to(uv.dtype)  # (h, T)
        col = A[:, None, sl] * cx[None] + C[:, None, sl]  # (4, w, T)
        row = Bc[:, None, sl] * cy[None]  # (4, h, T)
        if w > 4:  # power-of-two buckets: columns / rows beyond the box can never be inside
            col[:3].masked_fill_((ox[:, None] >= nxk[None, sl])[None], -1e30)
        if h > 4:
            row[:3].masked_fill_((oy[:, None] >= nyk[None, sl])[None], -1e30)
        # inside = min of the three edge functions >= 0, in two (h, w, T) buffers instead of a (3, h, w, T)
        m = row[0, :, None] + col[0, None]
        e = torch.empty_like(m)
        for i in (1, 2):
            torch.minimum(m, torch.add(row[i, :, None], col[i, None], out=e), out=m)
        inside = m >= 0  # (h, w, T)
        idx = inside.view(-1).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        wt = w * cnt
        h_i = torch.div(idx, wt, rounding_mode="floor")
        r_i = idx - h_i * wt
        w_i = torch.div(r_i, cnt, rounding_mode="floor")
        t_i = r_i - w_i * cnt
        izp = row[3].reshape(-1).index_select(0, h_i * cnt + t_i)
        izp = izp + col[3].reshape(-1).index_select(0, w_i * cnt + t_i)
        zq = (zscale / izp).clamp(0, 2**_DEPTH_BITS - 1).long()
        t_g = t_i + sl.start
        pix = base_pix.index_select(0, t_g) + h_i * S + w_i
        key = (zq << _TRI_BITS) | fid.index_select(0, t_g)
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
    tris = tris.to(verts.device).long().contiguous()  # row gathers below are slow on column-major
    uv = project(verts, K)
    z = verts[..., 2]
    ids = _visibility(uv.detach(), z.detach(), tris, S, cull_backfaces, near)  # (B, S*S)
    tri_id = ids.view(B, S, S)
    # differentiable barycentrics of the winning triangles, only at covered pixels
    idsf = ids.view(-1)
    pix = (idsf >= 0).nonzero().squeeze(1)  # (P,) flat indices into B*S*S
    N = verts.shape[1]
    b_idx = torch.div(pix, S * S, rounding_mode="floor")
    p_idx = pix - b_idx * (S * S)
    vidx = tris.index_select(0, idsf.index_select(0, pix)) + (b_idx * N)[:, None]  # (P, 3) into B*N
    flat_v = vidx.view(-1)
    puv = uv.reshape(-1, 2).index_select(0, flat_v).view(-1, 3, 2)
    pz = z.reshape(-1).index_select(0, flat_v).view(-1, 3)
    cy = torch.div(p_idx, S, rounding_mode="floor")
    cx = (p_idx - cy * S).to(uv.dtype) + 0.5
    cy = cy.to(uv.dtype) + 0.5
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
    return Fragments(tri_id=tri_id, pix=pix, vidx=vidx, bary_p=bary_p, depth_p=depth_p, num_vertices=N)


def interpolate(frags: Fragments, tris: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at the pixels.

    Args:
        frags: from :func:`rasterize` (batch B).
        tris: ``(F, 3)`` the triangles rasterised (kept for a uniform signature; ``frags`` knows them).
        attrs: ``(B, N, C)`` per-vertex values.
    Returns:
        ``(B, S, S, C)``, zero on background.
    """
    B, S, _ = frags.tri_id.shape
    N, C = attrs.shape[1], attrs.shape[-1]
    assert N == frags.num_vertices, "attributes must be per vertex of the rasterised mesh"
    pix, vidx, w = frags.pix, frags.vidx, frags.bary_p
    a = attrs.reshape(-1, C).index_select(0, vidx.view(-1)).view(-1, 3, C)  # (P, 3, C)
    val = torch.einsum("pkc,pk->pc", a, w)
    out = attrs.new_zeros(B * S * S, C).index_put((pix,), val)
    return out.view(B, S, S, C)
