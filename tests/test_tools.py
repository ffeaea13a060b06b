"""Helpers of the research/ experiments and the fine-tuning stages of the training package."""

import itertools

import pytest
import torch

from research.keypoint_budget.keypoint_budget import thin_plate_operator


def test_thin_plate_operator_hits_the_controls_and_keeps_affine_motion():
    g = torch.Generator().manual_seed(0)
    controls = torch.rand(20, 3, generator=g, dtype=torch.float64)
    points = torch.rand(200, 3, generator=g, dtype=torch.float64)
    W = thin_plate_operator(controls, torch.cat([controls, points]))
    # an arbitrary motion of the controls is reproduced at the controls themselves
    moved = controls + 0.1 * torch.randn(20, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(controls + W[:20] @ (moved - controls), moved, atol=1e-4)
    # an affine motion of the controls moves every point by the same affine map
    A = torch.eye(3, dtype=torch.float64) + 0.2 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    b = torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64)
    bent = points + W[20:] @ (controls @ A.T + b - controls)
    assert torch.allclose(bent, points @ A.T + b, atol=1e-6)


def test_rotation_error_vector_is_in_the_head_frame():
    import numpy as np
    from scipy.spatial.transform import Rotation

    from research.camera_budget.camera_budget import rotation_error_vector

    R_true = Rotation.from_euler("yxz", [40, -10, 5], degrees=True).as_matrix() @ np.diag([1.0, -1.0, -1.0])
    # the estimate nods the head 6 degrees further about its own x axis (pitch)
    R_est = R_true @ Rotation.from_rotvec([6.0, 0.0, 0.0], degrees=True).as_matrix()
    assert np.allclose(rotation_error_vector(R_est, R_true), [6.0, 0.0, 0.0], atol=1e-9)
    assert np.allclose(rotation_error_vector(R_true, R_true), 0.0, atol=1e-9)


def test_finetune_heads_on_cached_features_lowers_the_loss(tmp_path):
    """glvd-train finetune-heads: frozen features cached once; the field modules' loss on them falls."""

    import torch
    from runtime_fixtures import small_model, tiny_kit

    from glvd_train.finetune_heads import build_cache, step_loss

    model = small_model(tiny_kit(tmp_path))
    cache = build_cache(model, str(tiny_kit(tmp_path)), faces=8, chunk=4, max_views=2, seed=3, log=lambda m: None)
    assert len(cache) == 2 and all(c["kp_map"].shape[0] == 4 * c["views"] for c in cache)
    enc_before = [p.clone() for p in model.encoder.parameters()]
    params = [*model.keypoints.mlp.parameters(), *model.vertices.l2.parameters(), *model.vertices.l3.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    model.train()

    @torch.no_grad()
    def loss() -> float:
        return float(step_loss(model, cache[0], torch.Generator().manual_seed(0), 64, 1.0, 0.0, 0.1)["total"])

    first = loss()
    for i in range(40):
        out = step_loss(model, cache[0], torch.Generator().manual_seed(i), 64, 1.0, 0.0, 0.1)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    assert loss() < 0.8 * first
    # own starts from a damped descent (--damping) give a loss too
    damped = step_loss(model, cache[1], torch.Generator().manual_seed(0), 64, 1.0, 1.0, 0.1, damping=0.5)
    assert torch.isfinite(damped["total"]) and damped["total"].requires_grad
    assert all(torch.equal(a, b) for a, b in zip(enc_before, model.encoder.parameters(), strict=True))


def test_finetune_heads_unrolled_loss_follows_the_models_own_descent(tmp_path):
    """--unroll: the subset's trajectory equals the full descent's (one and several views), and the
    gradient of the last step's error reaches the modules through the earlier steps."""

    import torch
    from runtime_fixtures import small_model, tiny_kit

    from glvd_train.finetune_heads import _chunk_inputs, build_cache, unrolled_loss

    from glvd_train.train import shape_error_cm

    model = small_model(tiny_kit(tmp_path))
    # the output layers start at zero (a descent that stays put); give them weights so the descent moves
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in (model.keypoints.mlp[-1], model.vertices.l3):
            layer.weight.copy_(0.05 * torch.randn(layer.weight.shape, generator=g))
    cache = build_cache(model, str(tiny_kit(tmp_path)), faces=8, chunk=2, max_views=3, seed=5, log=lambda m: None)
    model.train()
    for views in sorted({c["views"] for c in cache}):
        c = next(c for c in cache if c["views"] == views)
        out = unrolled_loss(model, c, torch.Generator().manual_seed(0), 32, 1.0, 0.1, 4, 10.0)
        # the same draws give the same cameras and subset: the full descent, scored on that subset
        feats, prep, cams, idx = _chunk_inputs(model, c, torch.Generator().manual_seed(0), 32, 1.0)
        x, kp = model.initial_state(c["gt"].shape[0])
        with torch.no_grad():
            full = []
            for _ in range(4):
                x, kp = model.step(prep, feats, cams, x, kp)
                full.append(float(shape_error_cm(x[:, idx], c["gt"][:, idx], 0.1)))
        assert out["vert_steps"] == pytest.approx(full, rel=1e-5), views
        assert len(set(round(e, 6) for e in full)) > 1  # the descent moved
        weights = [1 / 10, 2 / 10, 3 / 10, 4 / 10]
        assert float(out["vert"].detach()) == pytest.approx(sum(w * e for w, e in zip(weights, full, strict=True)), rel=1e-5)
        rises = sum(max(0.0, b - a) for a, b in itertools.pairwise(full))
        assert float(out["rise"].detach()) == pytest.approx(rises, abs=1e-6)
    # the loss trains both modules
    model.zero_grad()
    unrolled_loss(model, cache[0], torch.Generator().manual_seed(1), 32, 1.0, 0.1, 3, 10.0)["total"].backward()
    for layer in (model.keypoints.mlp[0], model.vertices.l2):
        assert float(layer.weight.grad.abs().sum()) > 0


def test_finetune_heads_keeps_the_trained_models_provenance(tmp_path):
    """A fine-tuned checkpoint still says how its model was trained (glvd-train train --init-from reads it)."""
    from glvd_train.finetune_heads import finetuned_provenance

    prov = {"trained": True, "iterations": 30579, "curriculum": [0, 20000], "path": "/x/model.pt",
            "saved": "then", "val_true_mm": 3.56}
    once = finetuned_provenance(prov, {"from": "a.pt", "unroll": 10}, {"val_true_mm": 3.52, "val_true_steps": [1.0]})
    twice = finetuned_provenance(once, {"from": "b.pt", "unroll": 10}, {"val_true_mm": 3.51})
    assert twice["iterations"] == 30579 and twice["curriculum"] == [0, 20000]
    assert [f["from"] for f in twice["finetuned_heads"]] == ["a.pt", "b.pt"]
    assert twice["val_true_mm"] == 3.51 and "val_true_steps" not in once
    assert "path" not in twice and "saved" not in twice
    # a file from before the list held one dict: the loader hands it over as a list of one
    from runtime_fixtures import small_model, tiny_kit

    from glvd.checkpoint import load_checkpoint, save_checkpoint

    old = save_checkpoint(tmp_path / "old.pt", small_model(tiny_kit(tmp_path)), {"finetuned_heads": {"from": "old.pt"}})
    legacy = finetuned_provenance(load_checkpoint(old)[1], {"from": "c.pt"}, {})
    assert [f["from"] for f in legacy["finetuned_heads"]] == ["old.pt", "c.pt"]


def test_mediapipe_features_resize_matches_torch_bilinear():
    import numpy as np

    from research.backbone_probe.mediapipe_features import resize_bilinear

    img = np.random.default_rng(0).random((128, 128, 3)).astype(np.float32)
    ours = resize_bilinear(img, 192)
    ref = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None], size=(192, 192),
                                          mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).max() < 1e-5


def test_backbone_probe_ridge_reads_a_linear_signal_and_not_noise():
    import numpy as np

    from research.backbone_probe.backbone_probe import ridge_predict

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 40))
    w = rng.normal(size=(40, 3))
    y = x @ w + 0.1 * rng.normal(size=(600, 3))
    pred, lam = ridge_predict(x[:500], y[:500], x[500:])
    assert ((pred - y[500:]) ** 2).mean() < 0.05 * y[500:].var()
    # targets unrelated to the features: the chosen strength shrinks the prediction to the mean
    noise = rng.normal(size=(600, 3))
    pred, lam = ridge_predict(x[:500], noise[:500], x[500:])
    assert lam >= 1e3 and np.abs(pred - noise[:500].mean(0)).max() < 0.3
