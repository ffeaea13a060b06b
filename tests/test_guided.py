"""GLVD guided by the identity code and the landmarks: widening, the runtime's inputs, the training stage."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from glvd.cameras import Cameras, default_intrinsics
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


def _inputs(views: int, S: int = 128):
    torch.manual_seed(0)
    imgs = torch.rand(2, views, 3, S, S)
    K = default_intrinsics(S, S, focal_ratio=2.0).expand(2, views, 3, 3)
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0])).expand(2, views, 3, 3)
    t = torch.tensor([0.0, 0.0, 0.6]).expand(2, views, 3)
    return imgs, Cameras(K, R, t)


def _fill_zero_layers(model: GLVD) -> GLVD:
    """Random weights where a layer starts at zero (output layers, guidance inputs), so every input moves the mesh."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 1 and float(p.abs().sum()) == 0.0:
                torch.nn.init.normal_(p, std=0.02)
    return model


def _descents(a: GLVD, b: GLVD, g: Guidance, steps: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Two models' descents on the same random one-view photo and guidance."""
    imgs, cams = _inputs(1)
    with torch.no_grad():
        f = a.encode(imgs)
        return a.descend(f, cams, steps, prep=a.prepare(f, g))[0], b.descend(f, cams, steps, prep=b.prepare(f, g))[0]


def _guidance(views: int) -> Guidance:
    g = torch.Generator().manual_seed(1)
    lm = torch.rand(2, views, 68, 2, generator=g) * 128
    lm[1, 0, :10] = float("nan")  # landmarks a detector did not find
    return Guidance(torch.randn(2, 128, generator=g), lm)


@pytest.mark.parametrize("views", [1, 2])
def test_widened_model_computes_what_it_did_until_trained(tiny, views):
    from glvd_train.guided_training import widen

    _, template = tiny
    torch.manual_seed(0)
    base = _fill_zero_layers(GLVD(ModelConfig(), template).eval())
    wide = widen(base).eval()
    assert wide.needs_guidance and not base.needs_guidance
    imgs, cams = _inputs(views)
    with torch.no_grad():
        a, _ = base.descend(base.encode(imgs), cams, 3)
        f = wide.encode(imgs)
        b, _ = wide.descend(f, cams, 3, prep=wide.prepare(f, _guidance(views)))
        assert torch.equal(a, b)
        # once the new layers carry weight, the identity code and the landmarks move the result
        torch.nn.init.normal_(wide.keypoints.guide.weight, std=0.05)
        torch.nn.init.normal_(wide.vertices.identity_proj.weight, std=0.05)
        c, _ = wide.descend(f, cams, 3, prep=wide.prepare(f, _guidance(views)))
        d, _ = wide.descend(f, cams, 3)  # no guidance given: the zero code, no landmarks
    assert torch.isfinite(c).all() and not torch.allclose(b, c) and not torch.allclose(c, d)


def test_guided_training_stage_trains_the_new_layers_and_resumes(tiny, tmp_path):
    from glvd.checkpoint import save_checkpoint
    from glvd_train import guided_training
    from glvd_train.feature_cache import build

    kit, template = tiny
    cache = tmp_path / "cache"
    build(cache, faces=8, faces_per_shard=2, views=2, seed=0, kit=kit, render_size=128, image_size=64,
          log=lambda m: None)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "start.pt", GLVD(ModelConfig(image_size=64), template).eval(),
                           {"trained": False, "note": "UNTRAINED: for tests only"})
    out = tmp_path / "run"
    args = ["--cache", str(cache), "--init-from", str(ckpt), "--out", str(out), "--batch", "2", "--subset", "64",
            "--unroll", "2", "--val-shards", "1", "--val-every", "3", "--kit", kit, "--prior-rank", "4",
            "--minutes", "0.05", "--lr-new", "0.01"]
    assert guided_training.main(args) == 0
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["it"] >= 3
    st = state["model"]
    assert float(st["keypoints.guide.weight"].abs().sum()) > 0  # the gradient reached the new inputs
    assert float(st["vertices.identity_proj.weight"].abs().sum()) > 0
    assert st["prior_basis"].shape[0] == 4 and float(st["prior_basis"].abs().sum()) > 0  # the fitted prior
    # resumes where it stopped
    assert guided_training.main([*args[:-4], "--minutes", "0.1", "--lr-new", "0.01"]) == 0
    assert torch.load(out / "state.pt", weights_only=False)["it"] > state["it"]


def test_reconstructor_reads_the_photo_for_a_guided_model(tmp_path, checkpoint, face_photo):
    import glvd
    from glvd.checkpoint import load_checkpoint, save_checkpoint
    from glvd_train.guided_training import widen

    base, prov = load_checkpoint(checkpoint, "cpu")
    wide = widen(base) if not base.needs_guidance else base  # the shipped model may already read it
    with torch.no_grad():
        wide.vertices.identity_proj.weight.add_(torch.randn_like(wide.vertices.identity_proj.weight) * 0.05)
    path = save_checkpoint(tmp_path / "wide.pt", wide.eval(), {"trained": False, "note": "test"})
    rec = glvd.Reconstructor(path, device="cpu")
    res = rec.reconstruct([str(face_photo)], steps=2)
    assert "identity_s" in res.timings and np.isfinite(res.vertices).all()
    plain = glvd.Reconstructor(checkpoint, device="cpu").reconstruct([str(face_photo)], steps=2)
    assert not np.allclose(res.vertices[-1], plain.vertices[-1])  # the identity code moved it


def test_identity_prior_moves_the_start_and_the_reference(tiny):
    from glvd_train.guided_training import widen, with_prior

    _, template = tiny
    torch.manual_seed(0)
    wide = widen(GLVD(ModelConfig(), template)).eval()
    N = template.num_vertices
    zero = with_prior(wide, torch.zeros(129, 4), torch.zeros(4, N, 3)).eval()
    imgs, cams = _inputs(1)
    g = _guidance(1)
    a, b = _descents(wide, zero, g)
    assert torch.equal(a, b)  # a zero prior is the template
    with torch.no_grad():
        f = wide.encode(imgs)
        pm = torch.zeros(129, 4)
        pm[:128, 0] = 0.01  # the code moves the face along the first basis shape
        pb = torch.zeros(4, N, 3)
        pb[0, :, 2] = 1.0
        prior = with_prior(wide, pm, pb).eval()
        xs, _ = prior.descend(f, cams, 2, prep=prior.prepare(f, g))
    expected = template.vertices[None, :, 2] + 0.01 * g.identity.sum(1, keepdim=True).numpy()
    np.testing.assert_allclose(xs[:, 0, :, 2].numpy(), expected, atol=1e-5)  # step 0: the prior's face


def test_a_model_whose_fields_read_no_image_follows_only_the_guidance(tiny):
    from glvd_train.guided_training import widen

    _, template = tiny
    torch.manual_seed(0)
    wide = _fill_zero_layers(widen(GLVD(ModelConfig(camera_refiner=True), template)).eval())
    blind = GLVD(ModelConfig.from_dict({**wide.cfg.to_dict(), "field_image": False}), template).eval()
    blind.load_state_dict(wide.state_dict())
    assert ModelConfig.from_dict({k: v for k, v in wide.cfg.to_dict().items() if k != "field_image"}).field_image
    imgs, cams = _inputs(1)
    other = torch.rand_like(imgs)
    g = _guidance(1)
    with torch.no_grad():
        runs = {}
        for name, m in (("seeing", wide), ("blind", blind)):
            fa, fb = m.encode(imgs), m.encode(other)
            runs[name] = [m.descend(f, cams, 2, prep=m.prepare(f, g))[0] for f in (fa, fb)]
            # the camera refiner still reads the image
            ra = m.refine_cameras(m.prepare(fa, g), fa, cams).R
            rb = m.refine_cameras(m.prepare(fb, g), fb, cams).R
            assert not torch.allclose(ra, rb)
        assert torch.equal(*runs["blind"]) and not torch.allclose(*runs["seeing"])
        moved = blind.descend(blind.encode(imgs), cams, 2, prep=blind.prepare(blind.encode(imgs), _guidance(1)))[0]
        g2 = Guidance(g.identity + 1.0, g.landmarks)
        moved2 = blind.descend(blind.encode(imgs), cams, 2, prep=blind.prepare(blind.encode(imgs), g2))[0]
    assert not torch.allclose(moved, moved2)  # the identity code still moves it


def test_training_landmarks_are_the_truth_with_per_face_noise(tiny, tmp_path):
    from glvd_train.feature_cache import build
    from glvd_train.guided_training import CachedFaces, noisy_true_landmarks, training_landmarks

    kit, template = tiny
    cache = tmp_path / "cache"
    build(cache, faces=4, faces_per_shard=2, views=2, seed=0, kit=kit, render_size=128, image_size=64,
          log=lambda m: None)
    deltas = torch.from_numpy(template.expressions.astype(np.float32))
    data = CachedFaces(cache, 1, "neutral", deltas)
    faces = torch.arange(4)
    gen = torch.Generator().manual_seed(0)
    exact = noisy_true_landmarks(data, faces, 2, gen, 0.0)
    assert torch.equal(exact, data.true_landmarks[faces, :2])
    noisy = noisy_true_landmarks(data, faces, 2, gen, 3.0)
    err = (noisy - exact).norm(dim=-1)
    assert 0 < float(err.mean()) < 3.0 * 2.5 and float(err.mean(dim=(1, 2)).std()) > 0  # sigma differs by face
    assert training_landmarks("mediapipe", data, faces, 2, gen, 3.0, 0.3) is None
    picks = [training_landmarks("mixed", data, faces, 2, gen, 3.0, 0.5) is None for _ in range(40)]
    assert 5 < sum(picks) < 35
    b = data.batch(faces, 2, noisy)
    assert torch.equal(b["guidance"].landmarks, noisy)


def test_rescaling_the_landmark_input_keeps_the_model_and_then_trains_faster(tiny):
    from glvd_train.guided_training import widen, with_landmark_scale

    _, template = tiny
    torch.manual_seed(0)
    wide = _fill_zero_layers(widen(GLVD(ModelConfig(), template)).eval())
    mm = with_landmark_scale(wide, 1000.0).eval()
    assert mm.cfg.landmark_input_scale == 1000.0 and wide.cfg.landmark_input_scale == 10.0
    torch.testing.assert_close(*_descents(wide, mm, _guidance(1)), rtol=0, atol=1e-6)
