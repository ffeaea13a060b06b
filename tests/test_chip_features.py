"""The identity backbone's pixel features in the fields (ModelConfig.chip_features): the chip's geometry, the
maps, the model's two sampling paths, the training stage and the runtime's inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from glvd.cameras import Cameras, default_intrinsics
from glvd.face_chip import face_chip, image_to_chip
from glvd.facenet import CHIP_MAP_CHANNELS, CHIP_MAP_SIZE, CHIP_SIZE, describe, load_facenet
from glvd.model import GLVD, Guidance, ModelConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from glvd.topology import load_kit, template_from_kit
    from glvd_train.tinykit import make_tiny_kit

    kit = make_tiny_kit(tmp_path_factory.mktemp("kit") / "tiny_kit.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        template = template_from_kit(load_kit(kit))
    return str(kit), template


def _bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """``img`` at glvd pixel ``(x, y)`` (pixel centres at +0.5)."""
    x, y = x - 0.5, y - 0.5
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    p = img.astype(np.float64)
    return ((1 - fx) * (1 - fy) * p[y0, x0] + fx * (1 - fy) * p[y0, x0 + 1] + (1 - fx) * fy * p[y0 + 1, x0]
            + fx * fy * p[y0 + 1, x0 + 1])


def test_image_to_chip_maps_image_points_onto_the_chip_pixels_that_show_them():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:300]
    # a smooth image, so that bilinear reads of it compare
    img = np.stack([127 + 120 * np.sin(xx / 23.0 + c) * np.cos(yy / 31.0 - c) for c in range(3)], -1).astype(np.uint8)
    five = np.array([[190.0, 120.0], [160.0, 122.0], [95.0, 118.0], [125.0, 121.0], [143.0, 170.0]])
    five += rng.normal(0, 2, five.shape)
    chip = face_chip(img, five)
    A = image_to_chip(five)
    errs, shifted = [], []
    for cy in range(20, 130, 12):
        for cx in range(20, 130, 12):
            # the chip pixel (cx, cy)'s centre, back in the image
            p = np.linalg.solve(A[:, :2], np.array([cx + 0.5, cy + 0.5]) - A[:, 2])
            errs.append(np.abs(_bilinear(img, *p) - chip[cy, cx]).mean())
            shifted.append(np.abs(_bilinear(img, *p) - chip[cy, cx + 2]).mean())
    assert np.mean(errs) < 1.5 and np.mean(shifted) > 3 * np.mean(errs)


def test_forward_with_maps_gives_the_descriptor_and_the_stage_maps():
    net = load_facenet()
    chips = torch.randint(0, 255, (2, 150, 150, 3), dtype=torch.uint8)
    desc, maps = net.forward_with_maps(chips.permute(0, 3, 1, 2).float())
    assert maps.shape == (2, CHIP_MAP_CHANNELS, CHIP_MAP_SIZE, CHIP_MAP_SIZE)
    torch.testing.assert_close(desc, describe(net, chips), rtol=0, atol=1e-5)


def _inputs(views: int, S: int = 128):
    torch.manual_seed(0)
    imgs = torch.rand(2, views, 3, S, S)
    K = default_intrinsics(S, S, focal_ratio=2.0).expand(2, views, 3, 3)
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0])).expand(2, views, 3, 3)
    t = torch.tensor([0.0, 0.0, 0.6]).expand(2, views, 3)
    return imgs, Cameras(K, R, t)


def _guidance(views: int, seed: int = 1) -> Guidance:
    g = torch.Generator().manual_seed(seed)
    lm = torch.rand(2, views, 68, 2, generator=g) * 128
    maps = torch.rand(2, views, CHIP_MAP_CHANNELS, CHIP_MAP_SIZE, CHIP_MAP_SIZE, generator=g)
    # crop pixels -> chip pixels: about what a face crop's chip is (scale ~1.6, a small rotation)
    affine = torch.tensor([[1.6, -0.1, -25.0], [0.1, 1.6, -40.0]]).expand(2, views, 2, 3).clone()
    return Guidance(torch.randn(2, 128, generator=g), lm, maps, affine)


def _chip_model(template) -> GLVD:
    from glvd_train.guided_training import widen, with_chip_features

    torch.manual_seed(0)
    base = widen(GLVD(ModelConfig(), template))
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() >= 1 and float(p.abs().sum()) == 0.0:
                torch.nn.init.normal_(p, std=0.02)
    return base.eval(), with_chip_features(base).eval()


@pytest.mark.parametrize("views", [1, 2])
def test_chip_features_start_as_the_model_they_widen_then_move_it(tiny, views):
    _, template = tiny
    base, chip = _chip_model(template)
    assert chip.needs_guidance and chip.cfg.chip_features
    imgs, cams = _inputs(views)
    g = _guidance(views)
    with torch.no_grad():
        f = chip.encode(imgs)
        a = base.descend(f, cams, 2, prep=base.prepare(f, g))[0]
        b = chip.descend(f, cams, 2, prep=chip.prepare(f, g))[0]
        assert torch.equal(a, b)  # zero-initialised projections
        torch.nn.init.normal_(chip.keypoints.chip_proj.weight, std=0.02)
        torch.nn.init.normal_(chip.vertices.chip_proj.weight, std=0.02)
        c = chip.descend(f, cams, 2, prep=chip.prepare(f, g))[0]
        other = _guidance(views, seed=2)
        d = chip.descend(f, cams, 2, prep=chip.prepare(f, Guidance(g.identity, g.landmarks, other.chip_maps,
                                                                    g.chip_affine)))[0]
        no_maps = chip.descend(f, cams, 2, prep=chip.prepare(f, Guidance(g.identity, g.landmarks)))[0]
    assert torch.isfinite(c).all() and not torch.allclose(b, c) and not torch.allclose(c, d)
    assert torch.equal(no_maps, a)  # without maps (none given) it is the model without them


def test_chip_features_inference_path_equals_the_training_path(tiny):
    """The vertex module samples the chip maps by the pooled bag without gradients, by grid_sample with them."""
    _, template = tiny
    _, chip = _chip_model(template)
    torch.nn.init.normal_(chip.vertices.chip_proj.weight, std=0.05)
    imgs, cams = _inputs(2)
    g = _guidance(2)
    with torch.no_grad():
        f = chip.encode(imgs)
        prep = chip.prepare(f, g)
        x = chip.template_vertices[None].expand(2, -1, -1) * 1.01
        kp = x[:, chip.keypoint_ids]
        fast = chip.move_vertices(prep, f, cams, x, kp, chip.normals(x))
    with torch.enable_grad():
        slow = chip.move_vertices(prep, f, cams, x, kp, chip.normals(x))
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=1e-6)


def test_guided_stage_trains_the_chip_projections(tiny, tmp_path):
    from glvd.checkpoint import load_checkpoint, save_checkpoint
    from glvd_train import guided_training
    from glvd_train.feature_cache import build

    kit, template = tiny
    cache = tmp_path / "cache"
    build(cache, faces=6, faces_per_shard=2, views=2, seed=0, kit=kit, render_size=128, image_size=64,
          log=lambda m: None)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "start.pt", GLVD(ModelConfig(image_size=64), template).eval(),
                           {"trained": False, "note": "UNTRAINED: for tests only"})
    out = tmp_path / "run"
    assert guided_training.main(["--cache", str(cache), "--init-from", str(ckpt), "--out", str(out), "--batch", "2",
                                 "--subset", "64", "--unroll", "2", "--val-shards", "1", "--val-every", "2",
                                 "--kit", kit, "--prior-rank", "0", "--minutes", "0.05", "--lr-new", "0.01",
                                 "--chip-features"]) == 0
    st = torch.load(out / "state.pt", weights_only=False)["model"]
    assert float(st["keypoints.chip_proj.weight"].abs().sum()) > 0
    assert float(st["vertices.chip_proj.weight"].abs().sum()) > 0
    if (out / "model.pt").is_file():
        model, prov = load_checkpoint(out / "model.pt", "cpu")
        assert model.cfg.chip_features and prov["guided_stages"][-1]["chip_features"]


def test_reconstructor_gives_a_chip_model_the_photo_chip(tmp_path, checkpoint, face_photo):
    import glvd
    from glvd.checkpoint import load_checkpoint, save_checkpoint
    from glvd.preprocess import load_image
    from glvd_train.guided_training import widen, with_chip_features

    base, _ = load_checkpoint(checkpoint, "cpu")
    chip = with_chip_features(widen(base) if not base.needs_guidance else base)
    with torch.no_grad():
        chip.vertices.chip_proj.weight.normal_(std=0.05)
    path = save_checkpoint(tmp_path / "chip.pt", chip.eval(), {"trained": False, "note": "test"})
    rec = glvd.Reconstructor(path, device="cpu")
    seen = {}
    original = rec.guidance

    def spy(views, images):
        seen["g"], seen["views"], seen["images"] = original(views, images), views, images
        return seen["g"]

    rec.guidance = spy
    res = rec.reconstruct([str(face_photo)], steps=2)
    g, view = seen["g"], seen["views"][0]
    assert g.chip_maps.shape == (1, 1, CHIP_MAP_CHANNELS, CHIP_MAP_SIZE, CHIP_MAP_SIZE)
    assert float(g.chip_maps.abs().sum()) > 0
    # the crop's landmarks land where the full photo's land on the chip
    img = load_image(str(face_photo))
    from glvd.identity import IdentityEncoder

    A_img = IdentityEncoder().describe_with_maps([img], [view.landmarks_dense])[2][0]
    on_chip = g.to_chip(torch.from_numpy(view.landmarks68_crop)[None, None].float())[0, 0].numpy()
    expect = view.landmarks68 @ A_img[:, :2].T + A_img[:, 2]
    np.testing.assert_allclose(on_chip, expect, atol=1e-3)
    assert (on_chip > 0).all() and (on_chip < CHIP_SIZE).all()
    plain = glvd.Reconstructor(checkpoint, device="cpu").reconstruct([str(face_photo)], steps=2)
    assert np.isfinite(res.vertices).all() and not np.allclose(res.vertices[-1], plain.vertices[-1])
