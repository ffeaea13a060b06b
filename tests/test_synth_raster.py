"""The torch rasteriser against analytic cases (no kit needed)."""

from __future__ import annotations

import math

import pytest
import torch

from glvd_train.synth import Lights, interpolate, rasterize, shade, vertex_normals


def _K(f: float, S: int, batch: int = 1) -> torch.Tensor:
    return torch.tensor([[f, 0.0, S / 2], [0.0, f, S / 2], [0.0, 0.0, 1.0]]).expand(batch, 3, 3).contiguous()


def _quad(x0: float, x1: float, y0: float, y1: float, z: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A camera-frame rectangle facing the camera (counter-clockwise seen from the camera)."""
    v = torch.tensor([[x0, y0, z], [x0, y1, z], [x1, y1, z], [x1, y0, z]])
    # seen from the camera (looking along +z, y down), the outward normal must point to -z
    t = torch.tensor([[0, 1, 2], [0, 2, 3]])
    n = torch.cross(v[t[0, 1]] - v[t[0, 0]], v[t[0, 2]] - v[t[0, 0]], dim=0)
    if n[2] > 0:
        t = t[:, [0, 2, 1]]
    return v[None], t


def _uv_sphere(r: float, centre: tuple[float, float, float], rows: int = 64, cols: int = 128):
    th = torch.linspace(0, math.pi, rows + 1)
    ph = torch.linspace(0, 2 * math.pi, cols + 1)[:-1]
    T, P = torch.meshgrid(th, ph, indexing="ij")
    v = torch.stack([torch.sin(T) * torch.cos(P), torch.cos(T), torch.sin(T) * torch.sin(P)], -1).reshape(-1, 3)
    v = v * r + torch.tensor(centre)
    idx = torch.arange((rows + 1) * cols).reshape(rows + 1, cols)
    a, b = idx[:-1], idx[1:]
    c, d = idx[1:].roll(-1, 1), idx[:-1].roll(-1, 1)
    tris = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    # orient outward
    p0, p1, p2 = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    n = torch.cross(p1 - p0, p2 - p0, dim=-1)
    flip = (n * (p0 - torch.tensor(centre))).sum(-1) < 0
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return v[None], tris


def test_plane_coverage_and_depth_are_exact():
    S, f, z = 64, 100.0, 2.0
    # pixel-space rectangle u in [10.3, 40.7], v in [5.2, 50.9] -> centres j+0.5 in it
    u0, u1, v0, v1 = 10.3, 40.7, 5.2, 50.9
    to_x = lambda u: (u - S / 2) * z / f  # noqa: E731
    verts, tris = _quad(to_x(u0), to_x(u1), to_x(v0), to_x(v1), z)
    fr = rasterize(verts, tris, _K(f, S), S)
    cols = sum(1 for j in range(S) if u0 <= j + 0.5 <= u1)
    rows = sum(1 for i in range(S) if v0 <= i + 0.5 <= v1)
    assert int(fr.mask.sum()) == cols * rows
    assert torch.allclose(fr.depth[fr.mask], torch.full((cols * rows,), z), atol=1e-5)
    ii, jj = torch.nonzero(fr.mask[0], as_tuple=True)
    assert int(jj.min()) == math.ceil(u0 - 0.5) and int(jj.max()) == math.floor(u1 - 0.5)
    assert int(ii.min()) == math.ceil(v0 - 0.5) and int(ii.max()) == math.floor(v1 - 0.5)
    # barycentrics are a partition of unity
    assert torch.allclose(fr.bary[fr.mask].sum(-1), torch.ones(cols * rows), atol=1e-5)


def test_tilted_plane_depth_matches_ray_intersection():
    S, f = 64, 80.0
    # plane z = 2 + 0.5 x (tilted about y), a big rectangle that fills the view
    xs = torch.tensor([-1.0, 1.0])
    v = torch.tensor([[x, y, 2.0 + 0.5 * x] for x in xs for y in (-1.0, 1.0)])  # (0:-1,-1) (1:-1,1) (2:1,-1) (3:1,1)
    tris = torch.tensor([[0, 1, 3], [0, 3, 2]])
    fr = rasterize(v[None], tris, _K(f, S), S, cull_backfaces=False)
    assert bool(fr.mask.all())
    j = torch.arange(S) + 0.5
    dx = ((j - S / 2) / f)[None, :].expand(S, S)  # ray direction x/z per column
    z_exact = 2.0 / (1 - 0.5 * dx)  # z = 2 + 0.5 * (dx * z)
    assert torch.allclose(fr.depth[0], z_exact, rtol=1e-4)


def test_sphere_silhouette_area_and_centre_depth():
    S, f, r, d = 128, 150.0, 0.5, 3.0
    verts, tris = _uv_sphere(r, (0.0, 0.0, d))
    fr = rasterize(verts, tris, _K(f, S), S)
    r_px = f * r / math.sqrt(d * d - r * r)  # the silhouette of a sphere is a circle of this radius
    area = float(fr.mask.sum())
    assert area == pytest.approx(math.pi * r_px**2, rel=0.02)
    c = S // 2
    assert float(fr.depth[0, c, c]) == pytest.approx(d - r, abs=2e-3)
    # no holes: the disc well inside the silhouette is fully covered
    yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    inner = ((xx - S / 2) ** 2 + (yy - S / 2) ** 2) < (r_px - 1.5) ** 2
    assert bool(fr.mask[0][inner].all())


def test_nearer_surface_wins_and_backfaces_are_culled():
    S, f = 32, 40.0
    far_v, far_t = _quad(-3, 3, -3, 3, 3.0)
    near_v, near_t = _quad(-0.2, 0.2, -0.2, 0.2, 2.0)
    verts = torch.cat([far_v, near_v], 1)
    tris = torch.cat([far_t, near_t + 4])
    fr = rasterize(verts, tris, _K(f, S), S)
    c = S // 2
    assert int(fr.tri_id[0, c, c]) >= 2 and float(fr.depth[0, c, c]) == pytest.approx(2.0, abs=1e-5)
    assert int(fr.tri_id[0, 1, 1]) in (0, 1) and float(fr.depth[0, 1, 1]) == pytest.approx(3.0, abs=1e-5)
    flipped = tris[:, [0, 2, 1]]
    assert not bool(rasterize(verts, flipped, _K(f, S), S).mask.any())
    assert bool(rasterize(verts, flipped, _K(f, S), S, cull_backfaces=False).mask.all())


def test_batch_matches_single_and_camera_arguments():
    S = 48
    v1, t = _uv_sphere(0.4, (0.1, -0.05, 2.5), rows=16, cols=32)
    v2 = v1 + torch.tensor([-0.2, 0.1, 0.5])
    K = torch.tensor([[70.0, 0.0, 25.0], [0.0, 72.0, 23.0], [0.0, 0.0, 1.0]])
    both = rasterize(torch.cat([v1, v2]), t, K.expand(2, 3, 3), S)
    one = rasterize(v2, t, K[None], S)
    assert torch.equal(both.tri_id[1], one.tri_id[0])
    # head frame + (R, t) gives the same as pre-transformed vertices
    a = 0.3
    R = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])[None]
    tt = torch.tensor([[0.05, 0.0, 0.2]])
    cam = torch.einsum("bij,bnj->bni", R, v1) + tt[:, None]
    assert torch.equal(rasterize(v1, t, K[None], S, R=R, t=tt).tri_id, rasterize(cam, t, K[None], S).tri_id)


def test_gradients_reach_vertices_albedo_and_lights():
    S = 32
    verts, tris = _uv_sphere(0.5, (0.0, 0.0, 3.0), rows=12, cols=24)
    verts = verts.clone().requires_grad_(True)
    albedo = torch.full((1, verts.shape[1], 3), 0.5, requires_grad=True)
    amb = torch.tensor([[0.2, 0.2, 0.2]], requires_grad=True)
    dirs = torch.nn.functional.normalize(torch.tensor([[[0.3, -0.5, -1.0]]]), dim=-1).requires_grad_(True)
    lights = Lights(amb, dirs, torch.ones(1, 1, 3), torch.tensor([0.1]), torch.tensor([20.0]))
    fr = rasterize(verts, tris, _K(40.0, S), S)
    img = shade(fr, tris, albedo, vertex_normals(verts, tris), lights, verts_cam=verts)
    assert img.shape == (1, 3, S, S)
    (img * torch.linspace(0, 1, S)).sum().backward()
    for g in (verts.grad, albedo.grad, amb.grad, dirs.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # interpolating vertex positions reproduces the depth (attributes and depth agree)
    pos = interpolate(fr, tris, verts.detach())
    assert torch.allclose(pos[..., 2][fr.mask], fr.depth.detach()[fr.mask], atol=1e-4)


def test_empty_and_offscreen():
    S = 16
    v, t = _quad(-1, 1, -1, 1, -2.0)  # behind the camera
    fr = rasterize(v, t, _K(20.0, S), S)
    assert not bool(fr.mask.any()) and fr.bary.shape == (1, S, S, 3)
    v, t = _quad(10, 11, 10, 11, 2.0)  # outside the image
    assert not bool(rasterize(v, t, _K(20.0, S), S).mask.any())


def test_fast_paths_match_their_plain_definitions():
    """The speed-ups of the renderer compute what the plain formulas do (session 10)."""
    from glvd_train.synth.sampler import box3
    from glvd_train.synth.shading import shade_vertices

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 7, generator=g)
    assert torch.allclose(box3(x), torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False), atol=1e-6)
    # vertex normals: the vertex-major no-grad path and the differentiable one
    verts, tris = _uv_sphere(0.5, (0.1, -0.2, 3.0), rows=8, cols=16)
    verts = torch.cat([verts, verts * 1.1])
    tris_cm = tris.t().contiguous().t()  # a column-major table, as numpy fancy indexing can give
    plain = vertex_normals(verts.clone().requires_grad_(True), tris).detach()
    assert torch.allclose(vertex_normals(verts, tris_cm), plain, atol=1e-5)
    # Blinn-Phong without half vectors against the half-vector formula
    n, vc = plain, verts
    L = torch.nn.functional.normalize(torch.randn(2, 2, 3, generator=g), dim=-1)
    lights = Lights(torch.rand(2, 3, generator=g), L, torch.rand(2, 2, 3, generator=g), torch.rand(2, generator=g),
                    torch.tensor([8.0, 40.0]))
    view = -torch.nn.functional.normalize(vc, dim=-1)
    h = torch.nn.functional.normalize(L[:, None] + view[:, :, None], dim=-1)
    ndl = torch.einsum("bnc,blc->bnl", n, L).clamp(min=0)
    ndh = (n[:, :, None] * h).sum(-1).clamp(min=1e-6)
    shin = lights.shininess[:, None, None]
    spec = ndh**shin * (ndl > 0) * ((shin + 8) / (8 * math.pi))
    albedo = torch.rand(2, n.shape[1], 3, generator=g)
    want = (albedo * (lights.ambient[:, None] + torch.einsum("bnl,blc->bnc", ndl, lights.colors))
            + lights.specular[:, None, None] * torch.einsum("bnl,blc->bnc", spec, lights.colors))
    assert torch.allclose(shade_vertices(albedo, n, lights, verts_cam=vc), want, atol=1e-4)
