"""The GLVD model: shapes, view-order invariance, determinism, O(N) vertex cost, cameras."""

from __future__ import annotations

import torch
from runtime_fixtures import SMALL, frontal_cameras, small_model, tiny_kit
from torch.utils.flop_counter import FlopCounterMode

from glvd.camera_head import translation_to_uvz, uvz_to_translation
from glvd.cameras import Cameras, matrix_to_rotation_6d, rotation_6d_to_matrix


def _run(model, images, cams, steps=3):
    with torch.no_grad():
        feats = model.encode(images)
        return model.descend(feats, cams, steps)


def test_shapes_and_dtypes(tmp_path):
    model = small_model(tiny_kit(tmp_path))
    B, V, S = 2, 3, SMALL.image_size
    images = torch.rand(B, V, 3, S, S)
    xs, kps = _run(model, images, frontal_cameras(B, V, S), steps=4)
    N = model.template.num_vertices
    assert xs.shape == (B, 5, N, 3) and xs.dtype == torch.float32
    assert kps.shape == (B, 5, len(model.template.keypoint_ids), 3)
    assert torch.equal(xs[:, 0], model.template_vertices[None].expand(B, -1, -1))
    assert torch.isfinite(xs).all()
    assert (xs[:, -1] - xs[:, 0]).abs().max() > 0  # the descent moved something


def test_view_order_invariance(tmp_path):
    model = small_model(tiny_kit(tmp_path))
    S = SMALL.image_size
    images = torch.rand(1, 3, 3, S, S)
    cams = frontal_cameras(1, 3, S)
    perm = [2, 0, 1]
    xs_a, _ = _run(model, images, cams)
    xs_b, _ = _run(model, images[:, perm], cams.index_views(perm))
    torch.testing.assert_close(xs_a, xs_b, atol=1e-5, rtol=1e-4)


def test_different_images_give_different_meshes(tmp_path):
    model = small_model(tiny_kit(tmp_path))
    S = SMALL.image_size
    cams = frontal_cameras(1, 1, S)
    xs_a, _ = _run(model, torch.rand(1, 1, 3, S, S), cams)
    xs_b, _ = _run(model, torch.rand(1, 1, 3, S, S), cams)
    assert (xs_a[:, -1] - xs_b[:, -1]).abs().max() > 1e-6


def test_deterministic_on_cpu(tmp_path):
    kit = tiny_kit(tmp_path)
    S = SMALL.image_size
    images = torch.rand(1, 2, 3, S, S)
    a, _ = _run(small_model(kit, seed=3), images, frontal_cameras(1, 2, S))
    b, _ = _run(small_model(kit, seed=3), images, frontal_cameras(1, 2, S))
    assert torch.equal(a, b)


def _vertex_step_flops(tmp_path, rows):
    model = small_model(tiny_kit(tmp_path, rows=rows, cols=rows))
    S = SMALL.image_size
    with torch.no_grad():
        feats = model.encode(torch.rand(1, 1, 3, S, S))
        cams = frontal_cameras(1, 1, S)
        prep = model.prepare(feats)
        x, kp = model.initial_state(1)
        normals = torch.nn.functional.normalize(torch.randn_like(x), dim=-1)
        # the per-vertex head (the normals use a sparse O(F) matmul that the counter would count as dense)
        with FlopCounterMode(display=False) as fc:
            model.vertices(prep["v"], feats, cams, x, kp, normals, template=model.template_vertices)
    return fc.get_total_flops(), model.template.num_vertices


def test_per_vertex_cost_is_linear(tmp_path):
    f1, n1 = _vertex_step_flops(tmp_path, 20)
    f2, n2 = _vertex_step_flops(tmp_path, 40)
    assert n2 > 3.5 * n1
    # O(N): flops grow with N (x ~4) and not with N^2 (x ~16)
    ratio = f2 / f1
    assert ratio < 1.25 * n2 / n1, (ratio, n2 / n1)


def test_vertex_subset_matches_full_step(tmp_path):
    model = small_model(tiny_kit(tmp_path))
    S = SMALL.image_size
    with torch.no_grad():
        feats = model.encode(torch.rand(1, 1, 3, S, S))
        cams = frontal_cameras(1, 1, S)
        prep = model.prepare(feats)
        x, kp = model.initial_state(1)
        full, _ = model.step(prep, feats, cams, x, kp)
        idx = torch.tensor([5, 17, 100, 3])
        sub, _ = model.step(prep, feats, cams, x, kp, idx)
    torch.testing.assert_close(sub, full[:, idx])


def test_rotation_6d_round_trip():
    R = rotation_6d_to_matrix(torch.randn(10, 6))
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand(10, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R, atol=1e-5, rtol=0)


def test_translation_parametrisation_round_trip():
    K = torch.tensor([[300.0, 0, 90], [0, 300.0, 100], [0, 0, 1]]).expand(4, 3, 3)
    t = torch.tensor([[0.01, -0.02, 0.6], [0.0, 0.0, 0.4], [0.05, 0.02, 1.0], [-0.03, 0.01, 0.3]])
    torch.testing.assert_close(uvz_to_translation(translation_to_uvz(t, K, 192), K, 192), t)


def test_projection_matches_pinhole():
    cams = frontal_cameras(1, 1, 100, distance=1.0)
    uv, depth = cams.project(torch.tensor([[[0.1, 0.2, 0.0]]]))
    # frontal: x stays right, y up becomes image up (v smaller), depth 1
    assert torch.allclose(uv[0, 0, 0], torch.tensor([50 + 200 * 0.1, 50 - 200 * 0.2]))
    assert torch.allclose(depth, torch.tensor(1.0))
    assert torch.allclose(cams.centres()[0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert isinstance(cams.index_views([0]), Cameras)


def test_an_old_model_widened_with_the_offset_input_computes_the_same(tmp_path):
    import dataclasses

    kit = tiny_kit(tmp_path)
    old = small_model(kit, dataclasses.replace(SMALL, offset_input=False), seed=1)
    new = small_model(kit, dataclasses.replace(SMALL, offset_input=True), seed=2)
    with torch.no_grad():  # an untrained last layer would hide any difference
        for m in (old, new):
            torch.nn.init.normal_(m.vertices.l3.weight, std=0.1)
    new.load_state_dict_widening(old.state_dict())
    S = SMALL.image_size
    images, cams = torch.rand(1, 1, 3, S, S), frontal_cameras(1, 1, S)
    torch.testing.assert_close(_run(new, images, cams)[0], _run(old, images, cams)[0])
    # and the new input is live: the vertex field's answer depends on where the vertex already is
    with torch.no_grad():
        new.vertices.rel.weight[:, -3:].normal_(std=1.0)
    assert not torch.allclose(_run(new, images, cams)[0], _run(old, images, cams)[0])


def test_inference_fast_path_matches_the_differentiable_one(tmp_path):
    """Without gradients the vertex module samples through one weighted embedding bag
    (glvd.pooled_sampling); with them through grid_sample. Both must give the same descent."""
    from glvd.sampling import sample_maps_channels_first
    from glvd.pooled_sampling import pooled_samples

    g = torch.Generator().manual_seed(0)
    for B, V, size in ((1, 1, 64), (2, 3, 64), (1, 2, 48)):
        maps = torch.randn(B * V, 5, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
        uv = torch.rand(B, V, 40, 2, generator=g) * (size + 20) - 10  # some outside the crop: border clamp
        w = torch.softmax(torch.randn(B, V, 40, generator=g), 1)
        feat = sample_maps_channels_first(maps, uv, size)  # (B, V, C, P)
        want = feat[:, 0] if V == 1 else (feat * w[:, :, None]).sum(1)
        got = pooled_samples(maps, uv, size, None if V == 1 else w)
        torch.testing.assert_close(got.transpose(1, 2), want, atol=1e-5, rtol=1e-5)
    model = small_model(tiny_kit(tmp_path))
    S = SMALL.image_size
    for V in (1, 3):
        images = torch.rand(2, V, 3, S, S, generator=g)
        cams = frontal_cameras(2, V, S)
        fast, _ = _run(model, images, cams)
        with torch.enable_grad():
            slow, _ = model.descend(model.encode(images), cams, 3)
        assert (fast[:, -1] - fast[:, 0]).abs().max() > 0
        torch.testing.assert_close(fast, slow.detach(), atol=1e-6, rtol=1e-5)
