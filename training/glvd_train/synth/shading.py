"""Appearance: per-vertex albedo with regional colour, normals, and lights.

Everything is in linear RGB; the sampler gamma-encodes at the end. Shading is
differentiable w.r.t. the vertex positions (through the barycentrics and the
normals), the albedo and the light parameters.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from glvd.raster import Fragments, interpolate


_INCIDENCE: dict[tuple, torch.Tensor] = {}


def _incidence(tris: torch.Tensor, n: int) -> torch.Tensor:
    """Sparse ``(N, F)`` vertex-triangle incidence (CSR), cached per mesh."""
    key = (tris.data_ptr(), tuple(tris.shape), n, str(tris.device))
    m = _INCIDENCE.get(key)
    if m is None:
        F_ = tris.shape[0]
        rows = tris.reshape(-1)
        cols = torch.arange(F_, device=tris.device).repeat_interleave(3)
        vals = torch.ones(rows.numel(), device=tris.device)
        with warnings.catch_warnings():  # "sparse CSR is beta": the one op used here is stable
            warnings.simplefilter("ignore")
            m = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, F_), check_invariants=False)
            m = m.coalesce().to_sparse_csr()
        if len(_INCIDENCE) > 8:
            _INCIDENCE.clear()
        _INCIDENCE[key] = m
    return m


def vertex_normals(verts: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``(B, N, 3)`` of triangle meshes ``verts (B, N, 3)``, ``tris (F, 3)``."""
    B, N, _ = verts.shape
    if verts.requires_grad:
        a, b, c = (verts.index_select(1, tris[:, i]) for i in range(3))
        fn = torch.cross(b - a, c - a, dim=-1)  # (B, F, 3), outward for counter-clockwise faces
        n = torch.zeros_like(verts)
        for i in range(3):
            n = n.index_add(1, tris[:, i], fn)
        return torch.nn.functional.normalize(n, dim=-1, eps=1e-12)
    # vertex-major (N, B, 3): row gathers of B*3 floats run 6x faster than gathers along dim 1,
    # and one sparse matmul sums the face normals instead of three scatters
    vt = verts.permute(1, 0, 2).contiguous()
    a, b, c = (vt.index_select(0, tris[:, i].contiguous()) for i in range(3))  # (F, B, 3)
    fn = _cross(b - a, c - a)
    n = (_incidence(tris, N) @ fn.view(-1, B * 3)).view(N, B, 3)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12).permute(1, 0, 2)


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cross product over the last axis (size 3), a third faster than ``torch.cross`` on the CPU."""
    ux, uy, uz = u.unbind(-1)
    vx, vy, vz = v.unbind(-1)
    return torch.stack([uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx], -1)


@dataclass
class Lights:
    """Ambient + directional lights + a Blinn-Phong highlight, in the camera frame.

    ambient: ``(B, 3)`` linear RGB; directions: ``(B, L, 3)`` unit vectors from the
    surface toward each light; colors: ``(B, L, 3)``; specular: ``(B,)`` strength;
    shininess: ``(B,)`` Phong exponent.
    """

    ambient: torch.Tensor
    directions: torch.Tensor
    colors: torch.Tensor
    specular: torch.Tensor
    shininess: torch.Tensor


def shade(
    frags: Fragments,
    tris: torch.Tensor,
    albedo: torch.Tensor,
    normals: torch.Tensor,
    lights: Lights,
    verts_cam: torch.Tensor | None = None,
    spec_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shade the fragments.

    Args:
        frags: rasterised pixels, batch B, size S.
        tris: ``(F, 3)`` the triangles rasterised.
        albedo: ``(B, N, 3)`` per-vertex linear albedo.
        normals: ``(B, N, 3)`` per-vertex normals in the camera frame.
        lights: :class:`Lights` in the camera frame.
        verts_cam: ``(B, N, 3)`` camera-frame vertices, for the view direction of the highlight
            (without it the view direction is the optical axis).
        spec_mask: ``(B, N)`` or ``(N,)`` per-vertex highlight strength (skin 1, hair less, eyes more).
    Returns:
        ``(B, 3, S, S)`` linear RGB, zero on background.
    """
    B = albedo.shape[0]
    parts = [albedo, normals]
    if verts_cam is not None:
        parts.append(verts_cam)
    if spec_mask is not None:
        sm = spec_mask if spec_mask.dim() == 2 else spec_mask[None].expand(B, -1)
        parts.append(sm[..., None])
    attr = interpolate(frags, tris, torch.cat(parts, -1))  # (B, S, S, C)
    alb = attr[..., 0:3]
    n = torch.nn.functional.normalize(attr[..., 3:6], dim=-1, eps=1e-8)
    c = 6
    if verts_cam is not None:
        view = -torch.nn.functional.normalize(attr[..., c : c + 3], dim=-1, eps=1e-8)
        c += 3
    else:
        view = n.new_tensor([0.0, 0.0, -1.0]).expand_as(n)
    ks = attr[..., c] if spec_mask is not None else torch.ones_like(alb[..., 0])
    L = lights.directions[:, None, None]  # (B, 1, 1, L, 3)
    ndl = (n[..., None, :] * L).sum(-1).clamp(min=0.0)  # (B, S, S, L)
    diffuse = lights.ambient[:, None, None] + (ndl[..., None] * lights.colors[:, None, None]).sum(-2)
    h = torch.nn.functional.normalize(L + view[..., None, :], dim=-1)
    ndh = (n[..., None, :] * h).sum(-1).clamp(min=1e-6)
    shin = lights.shininess[:, None, None, None]
    spec = (ndh**shin) * (ndl > 0) * ((shin + 8) / (8 * np.pi))  # energy-normalised Blinn-Phong
    spec_rgb = (spec[..., None] * lights.colors[:, None, None]).sum(-2)
    img = alb * diffuse + (lights.specular[:, None, None, None] * ks[..., None]) * spec_rgb
    img = img * frags.mask[..., None]
    return img.permute(0, 3, 1, 2)


def shade_vertices(
    albedo: torch.Tensor,
    normals: torch.Tensor,
    lights: Lights,
    verts_cam: torch.Tensor | None = None,
    spec_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lit colour per vertex (Gouraud): the same model as :func:`shade`, evaluated at the vertices.

    At 256^2 the head's triangles are a few pixels large, so this looks the same as per-pixel
    shading and costs a fraction (N vertices instead of S^2 pixels, one interpolation afterwards).

    Args:
        albedo: ``(B, N, 3)``; normals: ``(B, N, 3)`` camera frame; verts_cam: ``(B, N, 3)``;
        spec_mask: ``(B, N)`` or ``(N,)``.
    Returns:
        ``(B, N, 3)`` linear RGB.
    """
    n = torch.nn.functional.normalize(normals, dim=-1, eps=1e-8)
    if verts_cam is not None:
        view = -torch.nn.functional.normalize(verts_cam, dim=-1, eps=1e-8)
    else:
        view = n.new_tensor([0.0, 0.0, -1.0]).expand_as(n)
    L = lights.directions  # (B, L, 3) unit
    ndl_signed = torch.einsum("bnc,blc->bnl", n, L)  # (B, N, L)
    ndl = ndl_signed.clamp(min=0.0)
    diffuse = lights.ambient[:, None] + torch.einsum("bnl,blc->bnc", ndl, lights.colors)
    # n.h with the half vector h = (L + view) / |L + view| of unit L and view, without building the
    # (B, N, L, 3) half vectors: n.h = (n.L + n.view) / sqrt(2 + 2 L.view) (a third of the render time)
    ndv = (n * view).sum(-1, keepdim=True)  # (B, N, 1)
    ldv = torch.einsum("bnc,blc->bnl", view, L)
    ndh = ((ndl_signed + ndv) / (2 + 2 * ldv).clamp(min=1e-24).sqrt()).clamp(min=1e-6)
    shin = lights.shininess[:, None, None]
    spec = (ndh**shin) * (ndl > 0) * ((shin + 8) / (8 * np.pi))
    spec_rgb = torch.einsum("bnl,blc->bnc", spec, lights.colors)
    ks = lights.specular[:, None, None]
    if spec_mask is not None:
        ks = ks * (spec_mask if spec_mask.dim() == 2 else spec_mask[None])[..., None]
    return albedo * diffuse + ks * spec_rgb


# ---------------------------------------------------------------- appearance
def _smoothstep(e0: float | torch.Tensor, e1: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def _seg_dist(p: np.ndarray, poly: np.ndarray, closed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Distance from points ``(N, 2)`` to a polyline ``(P, 2)``, and the arc parameter (0..1) of the nearest point."""
    a = poly if closed else poly[:-1]
    b = np.roll(poly, -1, 0) if closed else poly[1:]
    ab = b - a
    t = np.clip(((p[:, None] - a[None]) * ab[None]).sum(-1) / (ab * ab).sum(-1)[None], 0, 1)
    q = a[None] + t[..., None] * ab[None]
    d = np.linalg.norm(p[:, None] - q, axis=-1)
    k = d.argmin(1)
    seglen = np.linalg.norm(ab, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seglen)])
    s = (cum[k] + t[np.arange(len(p)), k] * seglen[k]) / cum[-1]
    return d.min(1), s


def _inside(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon for ``(N, 2)`` points."""
    x, y = p[:, 0:1], p[:, 1:2]
    a, b = poly, np.roll(poly, -1, 0)
    cond = (a[None, :, 1] > y) != (b[None, :, 1] > y)
    xint = a[None, :, 0] + (y - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / (
        b[None, :, 1] - a[None, :, 1] + 1e-12
    )
    return ((cond & (x < xint)).sum(1) % 2) == 1


# linear-RGB skin albedos from very light to very dark (roughly the Fitzpatrick range)
_SKIN = np.array(
    [
        [0.78, 0.58, 0.48],
        [0.68, 0.47, 0.37],
        [0.55, 0.36, 0.26],
        [0.38, 0.23, 0.15],
        [0.22, 0.12, 0.08],
        [0.10, 0.06, 0.04],
    ],
    np.float32,
)
_IRIS = np.array(
    [
        [0.10, 0.05, 0.02],
        [0.18, 0.09, 0.03],
        [0.25, 0.17, 0.07],
        [0.12, 0.16, 0.10],
        [0.15, 0.25, 0.35],
        [0.25, 0.32, 0.40],
    ],
    np.float32,
)
_HAIR = np.array(
    [
        [0.015, 0.012, 0.010],
        [0.04, 0.025, 0.015],
        [0.10, 0.06, 0.03],
        [0.25, 0.16, 0.08],
        [0.45, 0.33, 0.18],
        [0.35, 0.33, 0.32],
        [0.20, 0.06, 0.03],
    ],
    np.float32,
)


class HeadAppearance:
    """Random per-vertex albedo for the ICT head, from region fields precomputed on the mean head.

    Regions come from landmark neighbourhoods and the kit's materials: lips
    (inside the outer-lip landmark polygon), brows (around the brow landmark
    polylines), a lash line and lids (around the eye contours), cheek and nose
    redness, hair on the scalp (above a random hairline), eyes (pupil and iris
    by distance from the cornea apex), teeth and gums (darkened with depth into
    the mouth), clothes on the lower neck.
    """

    def __init__(self, head, device: str | torch.device = "cpu") -> None:
        m = head.mean.cpu().numpy().astype(np.float64)
        vm = head.vert_material.cpu().numpy()
        lm = m[head.landmarks68.cpu().numpy()]
        N = m.shape[0]
        mid = head.material_id
        face_like = (vm == mid("M_Face")) | (vm == mid("M_BackHead"))
        front = face_like & (m[:, 2] > lm[:, 2].min() - 0.02)
        xy = m[:, :2]
        f = {}
        # lips: signed distance to the outer lip contour (inside > 0)
        d_lip, _ = _seg_dist(xy, lm[48:60, :2], True)
        inside = _inside(xy, lm[48:60, :2])
        near_mouth = front & (m[:, 2] > lm[48:60, 2].min() - 0.025)
        f["lip"] = np.where(near_mouth, np.where(inside, d_lip, -d_lip), -1.0)
        # brows: distance to each brow polyline, and the position along it (0 inner, 1 outer)
        bd, bs = np.full(N, 1.0), np.zeros(N)
        for ids in ([21, 20, 19, 18, 17], [22, 23, 24, 25, 26]):
            poly = lm[ids, :2] + np.array([0.0, 0.002])
            d, s = _seg_dist(xy, poly, False)
            d = np.where(front & (m[:, 2] > lm[ids, 2].min() - 0.02), d, 1.0)
            better = d < bd
            bd, bs = np.where(better, d, bd), np.where(better, s, bs)
        f["brow"], f["brow_s"] = bd, bs
        # eyes: distance to the eye contours (lash line, lids)
        ed = np.full(N, 1.0)
        ey = np.zeros(N)
        for ids in (list(range(36, 42)), list(range(42, 48))):
            d, _ = _seg_dist(xy, lm[ids, :2], True)
            d = np.where(front & ~_inside(xy, lm[ids, :2]) & (m[:, 2] > lm[ids, 2].min() - 0.015), d, 1.0)
            c = lm[ids, :2].mean(0)
            better = d < ed
            ed = np.where(better, d, ed)
            ey = np.where(better, xy[:, 1] - c[1], ey)
        f["eye"], f["eye_dy"] = ed, ey
        # cheeks and nose tip (redness blobs)
        cl = (lm[3] + lm[31] + lm[41]) / 3
        cr = (lm[13] + lm[35] + lm[46]) / 3
        dc = np.minimum(np.linalg.norm(m - cl, axis=1), np.linalg.norm(m - cr, axis=1))
        f["cheek"] = np.where(face_like, dc, 1.0)
        f["nose"] = np.where(face_like, np.linalg.norm(m - lm[30], axis=1), 1.0)
        # hair: height above a hairline that is high at the forehead and low at the nape
        centre_z = m[face_like, 2].mean() - 0.02
        phi = np.arctan2(m[:, 0], m[:, 2] - centre_z)  # 0 front, +-pi back
        f["phi"], f["y"] = np.abs(phi), m[:, 1]
        f["hair_ok"] = face_like.astype(np.float64)
        f["brow_y"] = np.full(N, lm[17:27, 1].max())
        # beard area: below the nose base, above the jaw line
        f["beard"] = np.where(front & (m[:, 1] < lm[33, 1] - 0.003), 1.0, 0.0) * (m[:, 1] > lm[8, 1] - 0.025)
        # eyes: distance from the cornea apex of each eyeball
        eyed = np.full(N, 1.0)
        eyeball = np.zeros(N, bool)
        for s in ("Left", "Right"):
            sel = (vm == mid("M_Sclera" + s)) | (vm == mid("M_Iris" + s))
            if sel.any():
                sc = m[vm == mid("M_Sclera" + s)] if (vm == mid("M_Sclera" + s)).any() else m[sel]
                apex = sc[np.argmax(sc[:, 2])]
                eyed = np.where(sel, np.linalg.norm(m - apex, axis=1), eyed)
                eyeball |= sel
        f["eyeball_d"] = eyed
        mouth = (vm == mid("M_Teeth")) | (vm == mid("M_GumsTongue"))
        zf = lm[48:60, 2].mean()
        f["mouth_depth"] = np.where(mouth, np.clip((zf - m[:, 2]) / 0.05, 0, 1), 0.0)
        f["neck_y"] = m[:, 1] - lm[8, 1]
        self.is_eye = torch.as_tensor(eyeball, device=device)
        self.is_teeth = torch.as_tensor(vm == mid("M_Teeth"), device=device)
        self.is_gums = torch.as_tensor(vm == mid("M_GumsTongue"), device=device)
        self.is_skin = torch.as_tensor(face_like, device=device)
        self.feat = {k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in f.items()}
        self.num_vertices = N

    def spec_mask(self, hair: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` highlight strength: skin 1, hair dull, wet eyes shiny, mouth little."""
        s = torch.ones_like(hair)
        s = s * (1 - 0.7 * hair)
        s = torch.where(self.is_eye, torch.full_like(s, 3.0), s)
        s = torch.where(self.is_teeth | self.is_gums, 0.3 * s, s)
        return s

    def sample(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random albedos.

        Returns:
            albedo ``(B, N, 3)`` linear RGB and hair weight ``(B, N)``.
        """
        dev = self.feat["y"].device
        r = lambda *s: torch.rand(*s, generator=gen).to(dev)  # noqa: E731
        f = self.feat
        B = batch
        # skin tone: a point on the light..dark curve, with hue and saturation jitter
        tone = r(B) ** 1.2 * (len(_SKIN) - 1)
        lo = tone.floor().long().clamp(max=len(_SKIN) - 2)
        fr = (tone - lo)[:, None]
        skin_tab = torch.as_tensor(_SKIN, device=dev)
        skin = skin_tab[lo] * (1 - fr) + skin_tab[lo + 1] * fr
        skin = skin * (1 + 0.08 * (r(B, 3) - 0.5)) * (0.9 + 0.2 * r(B, 1))
        sk = skin[:, None, :].expand(B, self.num_vertices, 3)
        redden = torch.tensor([1.0, 0.0, 0.0], device=dev)
        alb = sk.clone()
        # low-frequency blotchiness (smooth over the head)
        w = torch.randn(B, 3, 3, generator=gen).to(dev) * 40
        ph = r(B, 3) * 6.283
        pos = torch.stack([f["phi"], f["y"], f["brow_y"] * 0 + f["y"] * 0.5], -1)
        blot = torch.sin(torch.einsum("nc,bkc->bnk", pos, w) + ph[:, None, :]).mean(-1)
        alb = alb * (1 + 0.06 * blot[..., None])
        # cheeks and nose: a bit redder
        cheek = torch.exp(-((f["cheek"] / 0.022) ** 2))[None] * (0.05 + 0.15 * r(B, 1))
        nose = torch.exp(-((f["nose"] / 0.012) ** 2))[None] * (0.1 * r(B, 1))
        red = (cheek + nose)[..., None]
        alb = alb * (1 - red * 0.5) + red * 0.5 * alb * (1 + 1.2 * redden) * 0.9
        # lips: redder and darker, random strength (lipstick sometimes); blends are one lerp each
        lipw = _smoothstep(-0.0015, 0.0015, f["lip"])[None].expand(B, -1)[..., None]
        lip_col = skin * torch.tensor([0.85, 0.5, 0.5], device=dev) * (0.6 + 0.4 * r(B, 1))
        lipstick = (r(B, 1) < 0.12).float()
        lip_col = lip_col * (1 - lipstick) + lipstick * torch.tensor([0.35, 0.03, 0.05], device=dev) * (0.5 + r(B, 1))
        alb = torch.lerp(alb, lip_col[:, None], lipw)
        # hair colour (also brows and lash line)
        htab = torch.as_tensor(_HAIR, device=dev)
        hidx = torch.randint(0, len(_HAIR), (B,), generator=gen).to(dev)
        dark_bias = (r(B) < 0.6) & (tone > 2.5)  # darker skin: usually darker hair
        hidx = torch.where(dark_bias, torch.zeros_like(hidx), hidx)
        hair_col = htab[hidx] * (0.7 + 0.6 * r(B, 1))
        # brows: thickness tapering outward
        th = (0.003 + 0.004 * r(B, 1)) * (1 - 0.5 * f["brow_s"][None])
        brow = _smoothstep(0.0, 0.0015, th - f["brow"][None]) * (0.5 + 0.5 * r(B, 1))
        alb = torch.lerp(alb, hair_col[:, None], brow[..., None])
        # eyelids: a dark lash line and slightly darker lids
        lash = _smoothstep(0.0025, 0.0005, f["eye"][None]) * (0.6 + 0.4 * r(B, 1))
        lid = _smoothstep(0.012, 0.002, f["eye"][None]) * (0.1 + 0.15 * r(B, 1))
        alb = alb * (1 - lid[..., None])
        dark = torch.tensor([0.02, 0.015, 0.012], device=dev)
        alb = torch.lerp(alb, dark.expand(B, 1, 3), lash[..., None])
        # beard shadow on some faces
        beard = f["beard"][None] * (r(B, 1) < 0.25).float() * (0.2 + 0.5 * r(B, 1))
        alb = torch.lerp(alb, hair_col[:, None], beard[..., None])
        # scalp hair above a random hairline (falls from the forehead to the nape); some are bald
        front_h = f["brow_y"][None] + 0.035 + 0.04 * r(B, 1)
        side_h = f["brow_y"][None] - 0.005 + 0.02 * r(B, 1)
        back_h = f["brow_y"][None] - 0.09 + 0.06 * r(B, 1)
        ph_ = f["phi"][None]
        line = torch.where(
            ph_ < 1.4,
            front_h + (side_h - front_h) * _smoothstep(0.5, 1.4, ph_),
            side_h + (back_h - side_h) * _smoothstep(1.6, 2.6, ph_),
        )
        has_hair = (r(B, 1) > 0.12).float()
        hair = _smoothstep(-0.004, 0.004, f["y"][None] - line) * f["hair_ok"][None] * has_hair
        alb = torch.lerp(alb, hair_col[:, None], hair[..., None])
        # clothes below the neck
        collar = -0.06 - 0.05 * r(B, 1)
        cloth = _smoothstep(0.003, -0.003, f["neck_y"][None] - collar) * self.is_skin[None]
        ccol = r(B, 3) ** 1.8
        alb = torch.lerp(alb, ccol[:, None], cloth[..., None])
        # eyes: sclera, iris (with a darker limbal ring), pupil
        itab = torch.as_tensor(_IRIS, device=dev)
        iris_col = itab[torch.randint(0, len(_IRIS), (B,), generator=gen).to(dev)] * (0.7 + 0.6 * r(B, 1))
        d = f["eyeball_d"][None]
        ri = 0.0055 + 0.0008 * r(B, 1)
        rp = 0.0015 + 0.001 * r(B, 1)
        sclera = torch.tensor([0.72, 0.62, 0.58], device=dev) * (0.75 + 0.25 * r(B, 1))
        iw = _smoothstep(ri + 0.0004, ri - 0.0004, d)
        pw = _smoothstep(rp + 0.0003, rp - 0.0003, d)
        ring = _smoothstep(ri - 0.0015, ri, d) * iw
        eye = sclera[:, None] * (1 - iw[..., None]) + iris_col[:, None] * iw[..., None] * (1 - 0.6 * ring[..., None])
        eye = eye * (1 - pw[..., None]) + 0.01 * pw[..., None]
        alb = torch.where(self.is_eye[None, :, None], eye, alb)
        # teeth and gums, darker deeper in the mouth (a cheap stand-in for occlusion)
        teeth = torch.tensor([0.75, 0.68, 0.55], device=dev) * (0.7 + 0.3 * r(B, 1))
        gums = torch.tensor([0.55, 0.18, 0.18], device=dev) * (0.6 + 0.4 * r(B, 1))
        occl = (1 - f["mouth_depth"][None, :, None]) ** 2
        alb = torch.where(self.is_teeth[None, :, None], teeth[:, None] * occl, alb)
        alb = torch.where(self.is_gums[None, :, None], gums[:, None] * occl, alb)
        return alb.clamp(0.0, 1.0), hair
