"""SyntheticFaces: shapes, ranges, determinism, crop cameras and ground truth vs the rendered face.

Tests marked ``kit`` need the ICT FaceKit (../shared or $GLVD_KIT) and are skipped
without it; the others run on the tiny kit the test builds itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glvd_train.synth import SynthConfig, SyntheticFaces, default_kit_path, rasterize
from glvd_train.synth.backgrounds import Backgrounds, natural_image_paths
from glvd_train.tinykit import make_tiny_kit

S = 96
HAVE_KIT = default_kit_path().is_file()
kit = pytest.mark.skipif(not HAVE_KIT, reason=f"ICT FaceKit not found at {default_kit_path()} (set GLVD_KIT)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(make_tiny_kit(tmp_path_factory.mktemp("kit") / "tiny.npz"))


@pytest.fixture(scope="module")
def ict() -> SyntheticFaces:
    return SyntheticFaces(config=SynthConfig(image_size=S), seed=0)


def _check_sample(s: dict, B: int, V: int, n_face: int, n_id: int) -> None:
    assert s["images"].shape == (B, V, 3, S, S) and s["images"].dtype == torch.float32
    assert float(s["images"].min()) >= 0.0 and float(s["images"].max()) <= 1.0
    assert s["K"].shape == (B, V, 3, 3) and s["R"].shape == (B, V, 3, 3) and s["t"].shape == (B, V, 3)
    assert all(s[k].dtype == torch.float32 for k in ("K", "R", "t", "vertices", "identity", "expression"))
    assert s["vertices"].shape == (B, n_face, 3)
    assert s["identity"].shape == (B, n_id) and s["expression"].shape == (B, 53)
    assert float(s["expression"].min()) >= 0 and float(s["expression"].max()) <= 1
    assert s["landmarks2d"].shape == (B, V, 68, 2)
    # rotations are orthonormal with det +1
    RtR = s["R"] @ s["R"].transpose(-1, -2)
    assert torch.allclose(RtR, torch.eye(3).expand_as(RtR), atol=1e-5)
    assert torch.allclose(torch.linalg.det(s["R"]), torch.ones(B, V), atol=1e-5)
    # every view shows something
    assert bool((s["masks"].flatten(2).float().mean(-1) > 0.05).all())


def test_tiny_kit_sample_shapes_and_determinism(tiny):
    cfg = SynthConfig(image_size=S)
    a = SyntheticFaces(kit_path=tiny, config=cfg, seed=3)
    s = a.sample(batch=2, views=3)
    _check_sample(s, 2, 3, a.face_count, a.head.num_identity)
    b = SyntheticFaces(kit_path=tiny, config=cfg, seed=3)
    t = b.sample(batch=2, views=3)
    for k in s:
        assert torch.equal(s[k], t[k]), k
    # reseeding the generator replays the same stream (the trainer relies on it)
    b.gen.manual_seed(3)
    b2 = b.sample(batch=2, views=3)
    assert torch.equal(b2["images"], s["images"])
    c = SyntheticFaces(kit_path=tiny, config=cfg, seed=4).sample(batch=2, views=3)
    assert not torch.equal(c["images"], s["images"])


def test_landmarks2d_match_cameras_and_crop(tiny):
    gen = SyntheticFaces(kit_path=tiny, config=SynthConfig(image_size=S), seed=1)
    s = gen.sample(batch=4, views=2)
    lm = s["vertices"][:, gen.head.landmarks68]  # (B, 68, 3): the landmarks are face-area vertices
    cam = torch.einsum("bvij,bnj->bvni", s["R"], lm) + s["t"][:, :, None]
    uv = torch.einsum("bvij,bvnj->bvni", s["K"], cam)
    uv = uv[..., :2] / uv[..., 2:3]
    assert torch.allclose(uv, s["landmarks2d"], atol=1e-3)
    # the crop is the landmark box with margin 1.6, scale jitter 0.9..1.1, shift +-5 %
    lo, hi = s["landmarks2d"].amin(2), s["landmarks2d"].amax(2)
    side = (hi - lo).amax(-1)
    assert bool((side >= S / 1.6 / 1.1 - 0.5).all() and (side <= S / 1.6 / 0.9 + 0.5).all())
    centre = (lo + hi) / 2
    assert bool(((centre - S / 2).abs() <= 0.05 * S / 0.9 * 1.0 + 0.5).all())


def test_sample_shapes_and_out_of_pca(tiny):
    gen = SyntheticFaces(kit_path=tiny, config=SynthConfig.out_of_pca(image_size=S), seed=0)
    sh = gen.sample_shapes(4)
    assert sh["vertices"].shape == (4, gen.face_count, 3)
    assert bool(sh["deformed"].all())
    off = SyntheticFaces(kit_path=tiny, config=SynthConfig(image_size=S, deform_prob=0.0), seed=0).sample_shapes(4)
    assert not bool(off["deformed"].any())


def test_backgrounds_never_use_people():
    names = [p.name.lower() for p in natural_image_paths()]
    assert not any(k in n for n in names for k in ("astronaut", "camera", "face", "lfw"))
    bg = Backgrounds(32).sample(6, torch.Generator().manual_seed(0))
    assert bg.shape == (6, 3, 32, 32) and float(bg.min()) >= 0 and float(bg.max()) <= 1


@kit
def test_ict_sample_shapes_and_ranges(ict):
    s = ict.sample(batch=2, views=2)
    _check_sample(s, 2, 2, 9409, 100)
    # metres: a head is ~15 cm wide
    width = s["vertices"][..., 0].amax(-1) - s["vertices"][..., 0].amin(-1)
    assert bool(((width > 0.10) & (width < 0.25)).all())


@kit
def test_ict_landmark_vertices_land_on_the_rendered_face():
    gen = SyntheticFaces(config=SynthConfig(image_size=128, yaw_max=30, pitch_max=15, augment=False), seed=5)
    s = gen.sample(batch=4, views=2)
    B, V = 4, 2
    h = gen.head
    # render again with the returned cameras (the ground-truth face is a prefix of the head)
    gen.gen.manual_seed(5)
    shapes_head = gen._shapes(B)["head_vertices"]
    assert torch.allclose(shapes_head[:, : gen.face_count], s["vertices"])
    rep = shapes_head.repeat_interleave(V, 0)
    fr = rasterize(rep, h.tris, s["K"].reshape(-1, 3, 3), 128, R=s["R"].reshape(-1, 3, 3), t=s["t"].reshape(-1, 3))
    face_id = h.material_id("M_Face")
    nose = h.landmarks68[30]
    cam = torch.einsum("nij,nj->ni", s["R"].reshape(-1, 3, 3), rep[:, nose]) + s["t"].reshape(-1, 3)
    uv = s["landmarks2d"].reshape(-1, 68, 2)[:, 30]
    for i in range(B * V):
        col, row = int(uv[i, 0]), int(uv[i, 1])
        tri = int(fr.tri_id[i, row, col])
        assert tri >= 0 and int(h.tri_material[tri]) == face_id
        assert float(fr.depth[i, row, col]) == pytest.approx(float(cam[i, 2]), abs=0.004)
    # the rendered image differs from the background there: the face was composited in
    assert bool(s["masks"].reshape(-1, 128, 128)[torch.arange(B * V), uv[:, 1].long(), uv[:, 0].long()].all())


@kit
def test_ict_render_covers_the_landmark_box(ict):
    s = ict.sample(batch=3, views=1)
    m = s["masks"][:, 0]
    for b in range(3):
        lo = s["landmarks2d"][b, 0].amin(0).clamp(0, S - 1).long()
        hi = s["landmarks2d"][b, 0].amax(0).clamp(0, S - 1).long()
        inner = m[b, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1].float().mean()
        assert float(inner) > 0.6  # the face fills most of the landmark box
    # different views of one head differ in pose
    s2 = ict.sample(batch=1, views=3)
    R = s2["R"][0]
    assert not torch.allclose(R[0], R[1]) and not torch.allclose(R[1], R[2])
    assert np.isfinite(s2["images"].numpy()).all()
