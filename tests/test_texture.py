"""Texture baking (glvd.texture): accuracy on synthetic faces with a known albedo, seams, fill, bad inputs, CLI.

The synthetic face is a bumpy half-ellipsoid with a nose, left/right symmetric, whose UV layout has two
islands (left half, right half flipped upside down) so that seams and the mirror lookup through quads are
exercised. Its albedo is a known function of the surface parameters; photos are rendered with
glvd.raster through known cameras, baked back and compared texel by texel.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from glvd.errors import GLVDError
from glvd.raster import interpolate, rasterize
from glvd.texture import bake, bake_views, symmetry_map, uv_raster

N_GRID = 49  # vertices per side (odd: a centre column on the symmetry plane)


def synthetic_face() -> dict[str, np.ndarray]:
    """A face-like open surface, metres, head frame (x left, y up, z out of the face).

    Returns verts ``(N, 3)``, quads ``(F, 4)`` (counter-clockwise seen from outside), uvs ``(U, 2)``,
    quad_uvs ``(F, 4)`` and params ``(N, 2)`` (the grid coordinates in [-1, 1] the albedo is a function of).
    """
    g = np.linspace(-1.0, 1.0, N_GRID)
    gy, gx = np.meshgrid(g, g, indexing="ij")  # row i along y, column j along x
    r2 = np.clip(1.0 - 0.8 * gx**2 - 0.5 * gy**2, 0.0, None)
    z = 0.07 * np.sqrt(r2) + 0.025 * np.exp(-(gx**2 + (gy + 0.05) ** 2) / (2 * 0.12**2))  # a nose
    verts = np.stack([0.08 * gx, 0.10 * gy, z], -1).reshape(-1, 3).astype(np.float32)
    idx = np.arange(N_GRID * N_GRID).reshape(N_GRID, N_GRID)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    # two UV islands: x <= 0 in u [0.02, 0.48]; x >= 0 in u [0.52, 0.98] with v flipped (so the mirror
    # is not a plain flip of the image); the centre column has a UV on each side (a seam)
    c = N_GRID // 2
    uv_l = np.stack([0.02 + 0.46 * (gx[:, : c + 1] + 1.0), 0.02 + 0.96 * (gy[:, : c + 1] + 1.0) / 2], -1)
    uv_r = np.stack([0.52 + 0.46 * gx[:, c:], 0.98 - 0.96 * (gy[:, c:] + 1.0) / 2], -1)
    uvs = np.concatenate([uv_l.reshape(-1, 2), uv_r.reshape(-1, 2)]).astype(np.float32)
    uid_l = np.arange(N_GRID * (c + 1)).reshape(N_GRID, c + 1)
    uid_r = N_GRID * (c + 1) + np.arange(N_GRID * (N_GRID - c)).reshape(N_GRID, N_GRID - c)
    quad_uvs = np.zeros_like(quads)
    for qi, q in enumerate(quads):
        for k, vid in enumerate(q):
            i, j = divmod(int(vid), N_GRID)
            left = quads[qi, 1] % N_GRID <= c  # the quad's right edge column decides its island
            quad_uvs[qi, k] = uid_l[i, j] if left else uid_r[i, j - c]
    params = np.stack([gx, gy], -1).reshape(-1, 2).astype(np.float32)
    return {"verts": verts, "quads": quads, "uvs": uvs, "quad_uvs": quad_uvs, "params": params}


def albedo(p: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """Known albedo of the surface parameters ``(..., 2)`` -> ``(..., 3)`` in 0-255 (smooth plus a soft checker)."""
    x = np.abs(p[..., 0]) if symmetric else p[..., 0]
    y = p[..., 1]
    checker = np.sin(4 * math.pi * x) * np.sin(4 * math.pi * y)
    r = 150 + 60 * x + 30 * checker
    gch = 110 + 50 * y - 25 * checker
    b = 90 + 40 * x * y + 20 * np.cos(3 * math.pi * y)
    return np.stack([r, gch, b], -1)


def camera(yaw_deg: float, pitch_deg: float = 0.0, dist: float = 0.45, f: float = 900.0,
           w: int = 480, h: int = 480) -> dict[str, np.ndarray]:
    """OpenCV camera looking at the head-frame origin from yaw (towards +x: the subject's left) and pitch."""
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    Ry = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(b), math.sin(b)], [0, -math.sin(b), math.cos(b)]])
    R = np.diag([1.0, -1.0, -1.0]) @ Rx @ Ry  # frontal: R = diag(1, -1, -1)
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    return {"K": K.astype(np.float32), "R": R.astype(np.float32), "t": np.array([0, 0.02, dist], np.float32)}


def render(face: dict, cam: dict, w: int = 480, h: int = 480, gain: float = 1.0, symmetric: bool = False,
           seed: int = 0) -> np.ndarray:
    """A photo ``(h, w, 3)`` uint8 of the face with its known albedo over a noisy background."""
    S = max(w, h)
    tris = np.concatenate([face["quads"][:, [0, 1, 2]], face["quads"][:, [0, 2, 3]]])
    fr = rasterize(torch.from_numpy(face["verts"])[None], torch.from_numpy(tris), torch.from_numpy(cam["K"])[None],
                   S, torch.from_numpy(cam["R"])[None], torch.from_numpy(cam["t"])[None], cull_backfaces=False)
    p = interpolate(fr, torch.from_numpy(tris), torch.from_numpy(face["params"])[None])[0].numpy()
    col = albedo(p, symmetric) * gain
    bg = np.random.default_rng(seed).uniform(0, 255, (S, S, 3))
    img = np.where(fr.mask[0].numpy()[..., None], col, bg)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)[:h, :w]


def truth_texture(face: dict, size: int, symmetric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The exact albedo at every texel centre ``(S, S, 3)`` float and the island mask ``(S, S)``."""
    ras = uv_raster(face["quads"], face["uvs"], face["quad_uvs"], size)
    p = np.stack([ras.interp(np.ascontiguousarray(face["params"][:, k])) for k in range(2)], 1)
    out = np.zeros((size * size, 3), np.float32)
    out[ras.texel] = albedo(p, symmetric)
    return out.reshape(size, size, 3), ras.chart


def stack(cams: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([c[k] for c in cams]) for k in ("K", "R", "t")}


def seam_ratio(baked: np.ndarray, truth: np.ndarray, weights: np.ndarray, valid: np.ndarray,
               band: int = 3) -> tuple[float, float]:
    """Seam metric: mean |gradient of the error| on the view-switch boundaries / elsewhere (1 = invisible seams).

    Boundaries are where the dominant view (argmax weight) changes. Returns (ratio, max jump on the band).
    """
    import cv2

    err = baked.astype(np.float32) - truth
    gx = np.abs(np.diff(err, axis=1, append=err[:, -1:])).sum(-1)
    gy = np.abs(np.diff(err, axis=0, append=err[-1:])).sum(-1)
    grad = np.maximum(gx, gy)
    lab = weights.argmax(0).astype(np.uint8)
    edge = (cv2.dilate(lab, np.ones((3, 3), np.uint8)) != cv2.erode(lab, np.ones((3, 3), np.uint8)))
    bandm = cv2.dilate(edge.astype(np.uint8), np.ones((2 * band + 1, 2 * band + 1), np.uint8)).astype(bool)
    inner = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # away from island borders
    on, off = bandm & inner, ~bandm & inner
    return float(grad[on].mean() / grad[off].mean()), float(grad[on].max())


@pytest.fixture(scope="module")
def face() -> dict:
    return synthetic_face()


@pytest.fixture(scope="module")
def sym(face: dict) -> np.ndarray:
    return symmetry_map(face["verts"])


def test_synthetic_face_is_well_formed(face: dict, sym: np.ndarray) -> None:
    v = face["verts"]
    assert (sym >= 0).all() and np.allclose(v[sym] * [-1, 1, 1], v, atol=1e-6)
    ras = uv_raster(face["quads"], face["uvs"], face["quad_uvs"], 128, sym)
    assert np.isfinite(ras.mirror_xy).all()
    # the mirror of a mirror is the texel itself (to within bilinear lookups across triangle kinks)
    import cv2

    mx, my = ras.mirror_xy[0][None], ras.mirror_xy[1][None]
    mimg = np.zeros((128 * 128, 2), np.float32)
    mimg[ras.texel] = ras.mirror_xy.T
    back = cv2.remap(mimg.reshape(128, 128, 2), mx, my, cv2.INTER_LINEAR)[0]
    own = np.stack([ras.texel % 128, ras.texel // 128], 1)
    mint = cv2.erode(ras.chart.astype(np.uint8), np.ones((5, 5), np.uint8))
    ok = (mint.reshape(-1)[ras.texel] > 0) & (mint[my[0].round().astype(int), mx[0].round().astype(int)] > 0)
    assert np.abs(back[ok] - own[ok]).max() < 1.5


def test_accuracy_three_views(face: dict, sym: np.ndarray, record_property) -> None:
    """Three photos (front, +-35 deg yaw, one non-square): low error where seen, no holes."""
    S = 256
    cams = [camera(0), camera(35, 5, w=400, h=480), camera(-35, -5)]
    sizes = [(480, 480), (400, 480), (480, 480)]
    imgs = [render(face, c, w, h, seed=i) for i, (c, (w, h)) in enumerate(zip(cams, sizes, strict=True))]
    b = bake(face["verts"], face["quads"], face["uvs"], face["quad_uvs"], imgs, stack(cams), S, sym)
    truth, chart = truth_texture(face, S)
    err = np.abs(b.texture.astype(np.float32) - truth).mean(-1)
    seen = b.coverage > 0.5
    mae_seen = float(err[seen].mean())
    mae_all = float(err[chart].mean())
    record_property("mae_seen", mae_seen)
    record_property("mae_chart", mae_all)
    print(f"3 views: MAE seen {mae_seen:.2f}/255 over {seen.mean():.0%} of the square, "
          f"all islands {mae_all:.2f}/255")
    assert seen[chart].mean() > 0.85
    assert mae_seen < 3.0
    assert mae_all < 6.0
    assert b.texture.shape == (S, S, 3) and b.texture.dtype == np.uint8


def test_seams_are_invisible_with_exposure_mismatch(face: dict, sym: np.ndarray, record_property) -> None:
    """Views 20% apart in exposure: the feathered blend spreads the step, winner-takes-all shows it."""
    S = 256
    cams = [camera(0), camera(40), camera(-40)]
    gains = [1.0, 1.2, 0.85]
    imgs = [render(face, c, gain=g, seed=i) for i, (c, g) in enumerate(zip(cams, gains, strict=True))]
    args = (face["verts"], face["quads"], face["uvs"], face["quad_uvs"], imgs, stack(cams), S, sym)
    smooth = bake(*args)
    hard = bake(*args, mode="best")
    truth, _ = truth_texture(face, S)
    valid = smooth.coverage > 0.5
    r_s, j_s = seam_ratio(smooth.texture, truth, smooth.weights, valid)
    r_h, j_h = seam_ratio(hard.texture, truth, smooth.weights, valid)
    record_property("seam_ratio_blend", r_s)
    record_property("seam_ratio_best", r_h)
    print(f"seam ratio (|grad err| on view boundaries / elsewhere): blend {r_s:.2f} (max {j_s:.0f}), "
          f"winner-takes-all {r_h:.2f} (max {j_h:.0f})")
    assert r_s < 1.6
    assert r_h > 1.5 * r_s


def test_unseen_regions_are_filled_from_the_mirror(face: dict, sym: np.ndarray, record_property) -> None:
    """One photo from the subject's left: the right cheek comes from the mirror, the rest from diffusion."""
    S = 128
    cam = camera(55)
    img = render(face, cam, symmetric=True)
    b = bake(face["verts"], face["quads"], face["uvs"], face["quad_uvs"], [img], stack([cam]), S, sym)
    truth, chart = truth_texture(face, S, symmetric=True)
    unseen = chart & (b.coverage == 0)
    mirrored = unseen & (b.confidence > 0.5)
    assert unseen.mean() > 0.15 and mirrored.sum() > 0.5 * unseen.sum()
    err = np.abs(b.texture.astype(np.float32) - truth).mean(-1)
    record_property("mae_mirrored", float(err[mirrored].mean()))
    print(f"mirror fill: MAE {err[mirrored].mean():.2f}/255 on {mirrored.sum()} texels no photo saw")
    assert err[mirrored].mean() < 6.0
    # no holes: every texel, islands and padding, is a plausible skin-like colour (not black, not background noise)
    assert b.texture.min() > 20
    tex = b.texture.astype(np.float32)
    assert np.abs(tex[~chart] - tex[chart].mean(0)).max() < 120
    # without a symmetry map the same texels are filled by diffusion only
    tex2, cov2 = bake_views(face["verts"], face["quads"], face["uvs"], face["quad_uvs"], [img], stack([cam]), S)
    assert tex2.min() > 20 and np.array_equal(cov2, b.coverage)


def test_a_view_that_sees_nothing_adds_nothing(face: dict, sym: np.ndarray) -> None:
    S = 128
    front = camera(0)
    img = render(face, front)
    base, _ = bake_views(face["verts"], face["quads"], face["uvs"], face["quad_uvs"], [img], stack([front]), S, sym)
    rng = np.random.default_rng(1)
    behind = camera(180)  # sees only the back of the open surface
    away = camera(0)
    away["K"] = away["K"].copy()
    away["K"][0, 2] = 5000.0  # the face projects far outside this photo
    noise = [rng.integers(0, 255, (300, 200, 3), dtype=np.uint8) for _ in range(2)]
    for extra in (behind, away):
        tex, cov = bake_views(face["verts"], face["quads"], face["uvs"], face["quad_uvs"], [img, noise[0]],
                              stack([front, extra]), S, sym)
        assert np.array_equal(tex, base)


LIP, TEETH, SKIN = (170.0, 40.0, 50.0), (235.0, 235.0, 225.0), (200.0, 150.0, 130.0)


def mouth_scene(face: dict) -> dict:
    """The synthetic face with a mouth: a slit between grid rows 15 and 16 (|gx| < 0.5, y = -35 mm), the three
    rows either side of it lips, and a "jawOpen" pose that moves the jaw (rows <= 15) 12.5 mm down, so the posed
    mouth opens 17 mm wide on the teeth (a plane behind the lips). Returns the neutral and posed vertices, the
    quads (and quad_uvs) without the slit and a render of a pose through a camera (the teeth included)."""
    g = np.linspace(-1.0, 1.0, N_GRID)
    row, col = np.divmod(np.arange(N_GRID * N_GRID), N_GRID)
    gx = g[col]
    q = face["quads"]
    slit = (q[:, 0] // N_GRID == 15) & (np.abs(g[q[:, 0] % N_GRID]) < 0.5) & (np.abs(g[q[:, 1] % N_GRID]) < 0.5)
    mouth = np.clip((0.6 - np.abs(gx)) / 0.2, 0.0, 1.0)  # the jaw's drop fades out past the mouth corners
    posed = face["verts"].copy()
    posed[:, 1] -= np.where(row <= 15, 0.0125 * mouth, 0.0)
    lips = (np.abs(row - 15.5) < 3) & (np.abs(gx) < 0.45)
    colour = np.where(lips[:, None], LIP, SKIN).astype(np.float32)
    teeth_v = np.array([[-0.03, -0.065, 0.052], [0.03, -0.065, 0.052], [0.03, -0.015, 0.052], [-0.03, -0.015, 0.052]],
                       np.float32)
    n = len(posed)

    def photo(verts: np.ndarray, cam: dict, S: int = 480) -> np.ndarray:
        tris = np.concatenate([q[~slit][:, [0, 1, 2]], q[~slit][:, [0, 2, 3]], [[n, n + 1, n + 2], [n, n + 2, n + 3]]])
        v = np.concatenate([verts, teeth_v])
        c = np.concatenate([colour, np.tile(np.float32(TEETH), (4, 1))])
        fr = rasterize(torch.from_numpy(v)[None], torch.from_numpy(tris), torch.from_numpy(cam["K"])[None], S,
                       torch.from_numpy(cam["R"])[None], torch.from_numpy(cam["t"])[None], cull_backfaces=False)
        img = interpolate(fr, torch.from_numpy(tris), torch.from_numpy(c)[None])[0].numpy()
        img = np.where(fr.mask[0].numpy()[..., None], img, np.float32((40, 60, 90)))
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    return {"neutral": face["verts"], "posed": posed, "quads": q[~slit], "quad_uvs": face["quad_uvs"][~slit],
            "photo": photo}


def test_each_photo_bakes_through_its_own_pose(face: dict, sym: np.ndarray, record_property) -> None:
    """A photo of the posed face (the mouth open on the teeth) baked through the neutral face paints the teeth on
    the neutral lips (the defect of issue 23); baked through the face as that photo shows it ((V, N, 3): one mesh
    per view), the lips take the lips' colour. A second, neutral photo through its own (neutral) mesh agrees."""
    S = 256
    m = mouth_scene(face)
    quads, quad_uvs = m["quads"], m["quad_uvs"]
    front, side = camera(0), camera(25)
    smile = m["photo"](m["posed"], front)
    ras = uv_raster(quads, face["uvs"], quad_uvs, S)
    p = np.stack([ras.interp(np.ascontiguousarray(face["params"][:, k])) for k in range(2)], 1)
    g = np.linspace(-1.0, 1.0, N_GRID)
    lower_lip = ras.texel[(p[:, 1] > g[13] + 0.01) & (p[:, 1] < g[15] - 0.01) & (np.abs(p[:, 0]) < 0.3)]
    assert len(lower_lip) > 100

    def lip_colour(verts: np.ndarray, photos: list, cams: list) -> np.ndarray:
        b = bake(verts, quads, face["uvs"], quad_uvs, photos, stack(cams), S, sym)
        return b.texture.reshape(-1, 3)[lower_lip].astype(np.float32).mean(0)

    neutral = lip_colour(m["neutral"], [smile], [front])
    posed = lip_colour(m["posed"][None], [smile], [front])
    both = lip_colour(np.stack([m["posed"], m["neutral"]]), [smile, m["photo"](m["neutral"], side)], [front, side])
    d = {k: (float(np.linalg.norm(c - LIP)), float(np.linalg.norm(c - TEETH)))
         for k, c in (("neutral mesh", neutral), ("posed mesh", posed), ("two views, each its own", both))}
    for k, (dl, dt) in d.items():
        record_property(f"lower lip vs lip / teeth colour, {k}", (round(dl, 1), round(dt, 1)))
    print("the lower lip's mean colour, distance to the lip colour / the teeth colour:", d)
    assert d["neutral mesh"][1] < d["neutral mesh"][0]  # before: the teeth on the neutral lips
    assert d["posed mesh"][0] < 25 and d["two views, each its own"][0] < 25
    with pytest.raises(GLVDError, match="one mesh per view"):
        bake(np.stack([m["posed"]] * 2), quads, face["uvs"], quad_uvs, [smile], stack([front]), 64)
    with pytest.raises(GLVDError, match="occluder"):
        bake(m["neutral"], quads, face["uvs"], quad_uvs, [smile], stack([front]), 64,
             occluder=(np.stack([m["posed"]] * 2), np.zeros((1, 3), np.int64)))


def test_png_orientation_v_up(face: dict) -> None:
    """Row 0 of the texture is v = 1: a texel's UV (u, v) lands at (col, row) = (u S, (1 - v) S)."""
    S = 64
    ras = uv_raster(face["quads"], face["uvs"], face["quad_uvs"], S)
    # the left island (u < 0.5) keeps v up: its top rows hold the top of the face (gy ~ +1)
    p = np.stack([ras.interp(np.ascontiguousarray(face["params"][:, k])) for k in range(2)], 1)
    row, col = ras.texel // S, ras.texel % S
    left = col < S // 2
    top = left & (row < S // 4)
    bottom = left & (row > 3 * S // 4)
    assert p[top, 1].mean() > 0.5 and p[bottom, 1].mean() < -0.5


def test_bad_inputs_raise(face: dict) -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    cams = stack([camera(0), camera(20)])
    args = (face["verts"], face["quads"], face["uvs"], face["quad_uvs"])
    with pytest.raises(GLVDError, match="cameras"):
        bake_views(*args, [img], cams, 64)
    with pytest.raises(GLVDError):
        bake_views(*args, [img, img[..., 0]], cams, 64)
    with pytest.raises(GLVDError):
        bake_views(*args, [img, img.astype(np.float32)], cams, 64)
    with pytest.raises(GLVDError, match="size"):
        bake_views(*args, [img, img], cams, 8)
    with pytest.raises(GLVDError):
        bake_views(*args, [img, img], {"K": cams["K"]}, 64)
    with pytest.raises(GLVDError):
        bake_views(*args, [], {"K": np.zeros((0, 3, 3)), "R": np.zeros((0, 3, 3)), "t": np.zeros((0, 3))}, 64)


def test_bake_texture_checks_the_result(face: dict, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from glvd.texture import bake_texture

    cam = camera(0)
    img = render(face, cam)
    res = SimpleNamespace(vertices=face["verts"][None], cameras=stack([cam]), quads=face["quads"], uvs=face["uvs"],
                          quad_uvs=face["quad_uvs"], image_sizes=[(480, 480)], _template_vertices=face["verts"])
    out = bake_texture(res, [img], tmp_path / "sub" / "t.png", size=64)
    from PIL import Image

    assert Image.open(out).size == (64, 64) and Image.open(out).mode == "RGB"
    with pytest.raises(GLVDError, match="views"):
        bake_texture(res, [img, img], tmp_path / "t2.png", size=64)
    with pytest.raises(GLVDError, match="480x480"):
        bake_texture(res, [img[:400]], tmp_path / "t3.png", size=64)


def test_cli_reconstruct_writes_texture(face_photo: Path, checkpoint: Path, tmp_path: Path) -> None:
    """``glvd reconstruct photo -o face.obj --texture face.png``: the PNG exists and the OBJ uses it via an .mtl.

    Uses the shipped checkpoint, else an untrained one on the ICT kit (or the tiny kit): plumbing, not quality.
    """
    from glvd.cli import main

    obj, png, glb = tmp_path / "face.obj", tmp_path / "face.png", tmp_path / "face.glb"
    from PIL import Image

    from glvd.api import Reconstructor

    head = Reconstructor(checkpoint=checkpoint, device="cpu").template.num_vertices == 9409
    mode = "head" if head else "face"  # the whole head needs the kit's face area (not the tiny kit's)
    rc = main(["reconstruct", str(face_photo), "-o", str(obj), "--texture", str(png), "--texture-size", "256",
               "--checkpoint", str(checkpoint), "--device", "cpu", "--steps", "2", "-q", "--mode", mode])
    assert rc == 0
    im = np.asarray(Image.open(png))
    # the head's skin: the face tile and the back of the head's, side by side
    assert im.shape == ((256, 512, 3) if head else (256, 256, 3)) and im.std() > 5  # a photo, not a flat fill
    text = obj.read_text()
    material = "glvd_skin" if head else "glvd_face"
    assert "mtllib face.mtl" in text and f"usemtl {material}" in text
    assert "map_Kd face.png" in (tmp_path / "face.mtl").read_text()
    if head:
        assert "usemtl glvd_teeth" in text and "usemtl glvd_iris" in text
    rc = main(["reconstruct", str(face_photo), "-o", str(glb), "--texture", str(png), "--texture-size", "128",
               "--checkpoint", str(checkpoint), "--device", "cpu", "--steps", "1", "-q", "--mode", mode])
    assert rc == 0
    data = glb.read_bytes()
    assert b'"image/png"' in data and b"\x89PNG" in data
