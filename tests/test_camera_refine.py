"""The camera refiner: its pose solver, its identity start, its place in the model and its training."""

import math

import torch
from runtime_fixtures import SMALL, frontal_cameras, small_model, tiny_kit

from glvd.camera_refine import solve_pose_update
from glvd.cameras import Cameras, euler_to_matrix, rotation_angle_deg


def _face_points(n: int = 60, seed: int = 0) -> torch.Tensor:
    """A face-sized point cloud with depth (metres, head frame)."""
    g = torch.Generator().manual_seed(seed)
    p = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([0.14, 0.18, 0.08]).double()
    return p[None]


def _double_cameras(views: int) -> Cameras:
    """:func:`frontal_cameras` in float64 throughout (a float32 rotation cast up is orthonormal to 1e-8 only)."""
    from glvd.cameras import FRONTAL_R

    c = frontal_cameras(1, views, 128)
    yaw = torch.linspace(-0.5, 0.5, views, dtype=torch.float64) if views > 1 else torch.zeros(1, dtype=torch.float64)
    R = FRONTAL_R.double() @ euler_to_matrix(yaw, torch.zeros_like(yaw), torch.zeros_like(yaw))
    return Cameras(c.K.double(), R[None].clone(), c.t.double())


def _turned(cams: Cameras, deg: tuple[float, float, float], shift: tuple[float, float, float]) -> Cameras:
    a = torch.tensor(deg, dtype=cams.R.dtype).deg2rad()
    Rj = euler_to_matrix(a[0], a[1], a[2])
    return Cameras(cams.K, Rj @ cams.R, cams.t + torch.tensor(shift, dtype=cams.t.dtype))


def test_pose_solver_recovers_a_camera_from_exact_projections():
    pts = _face_points()
    true = _double_cameras(2)
    target, _ = true.project(pts)
    start = _turned(true, (6.0, -8.0, 4.0), (0.01, -0.01, 0.03))
    assert float(rotation_angle_deg(start.R, true.R).max()) > 8.0
    solved = solve_pose_update(pts, target, torch.ones(1, 2, pts.shape[1], dtype=torch.float64), start, iterations=8)
    assert float(rotation_angle_deg(solved.R, true.R).max()) < 1e-3
    assert torch.allclose(solved.t, true.t, atol=1e-6)
    # rotations stay rotations
    eye = torch.eye(3, dtype=torch.float64).expand(1, 2, 3, 3)
    assert torch.allclose(solved.R @ solved.R.transpose(-1, -2), eye, atol=1e-9)


def test_pose_solver_follows_the_trusted_points():
    """Half the targets are wrong; with zero trust on them the camera is still exact, with equal trust it is not."""
    pts = _face_points(80, seed=1)
    true = _double_cameras(1)
    target, _ = true.project(pts)
    target = target.clone()
    target[:, :, 40:] += 15.0  # pixels
    start = _turned(true, (3.0, 3.0, 0.0), (0.0, 0.0, 0.0))
    trust = torch.ones(1, 1, 80, dtype=torch.float64)
    trust[:, :, 40:] = 0.0
    good = solve_pose_update(pts, target, trust, start, iterations=8)
    bad = solve_pose_update(pts, target, torch.ones_like(trust), start, iterations=8)
    assert float(rotation_angle_deg(good.R, true.R).max()) < 1e-3
    assert (bad.t - true.t).norm() > 1e-3 or float(rotation_angle_deg(bad.R, true.R).max()) > 0.5


@torch.no_grad()
def test_an_untrained_refiner_leaves_the_cameras_alone_and_the_checkpoint_round_trips(tmp_path):
    from dataclasses import replace

    from glvd.checkpoint import load_checkpoint, save_checkpoint
    from glvd.model import GLVD

    kit = tiny_kit(tmp_path)
    plain = small_model(kit)
    model = GLVD(replace(SMALL, camera_refiner=True), plain.template).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("camera_refiner.") for k in missing)
    torch.nn.init.zeros_(model.camera_refiner.mlp[-1].weight)
    torch.nn.init.zeros_(model.camera_refiner.mlp[-1].bias)
    imgs = torch.rand(2, 2, 3, SMALL.image_size, SMALL.image_size)
    feats = model.encode(imgs)
    cams = frontal_cameras(2, 2, SMALL.image_size)
    cams = _turned(cams, (5.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    refined = model.refine_cameras(model.prepare(feats), feats, cams)
    assert float(rotation_angle_deg(refined.R, cams.R).max()) < 0.05
    assert torch.allclose(refined.t, cams.t, atol=1e-5)
    # a model with a refiner saves and loads it; one without keeps estimating with the head alone
    torch.nn.init.normal_(model.camera_refiner.mlp[-1].weight, std=0.05)
    path = save_checkpoint(tmp_path / "m.pt", model, {"trained": False})
    loaded, _ = load_checkpoint(path)
    assert loaded.cfg.camera_refiner and loaded.camera_refiner is not None
    K = cams.K
    a, b = model.estimate_cameras(feats, K), loaded.estimate_cameras(feats, K)
    assert torch.allclose(a.R, b.R, atol=1e-6)
    head_only = plain.estimate_cameras(plain.encode(imgs), K)
    R_head, _, _ = model.camera_head(feats, K)
    assert torch.allclose(head_only.R, R_head, atol=1e-6)
    assert float(rotation_angle_deg(a.R, R_head).max()) > 1e-3  # the refiner moved them


def test_refiner_training_on_cached_features_lowers_the_camera_error(tmp_path):
    """glvd-train camera-refiner on a tiny kit: the loss on a fixed chunk falls, the rest stays frozen."""
    from dataclasses import replace

    from glvd.model import GLVD

    from glvd_train.camera_refiner_training import encode_chunk, refiner_loss
    from glvd_train.finetune_heads import build_cache

    kit = tiny_kit(tmp_path)
    plain = small_model(kit)
    model = GLVD(replace(SMALL, camera_refiner=True), plain.template).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    cache = build_cache(model, str(kit), faces=4, chunk=4, max_views=2, seed=5, log=lambda m: None, encode=encode_chunk)
    assert len(cache) == 1 and cache[0]["map"].dtype == torch.float16
    frozen = [p.clone() for p in model.encoder.parameters()]
    params = list(model.camera_refiner.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)

    def loss() -> float:
        with torch.no_grad():
            return float(refiner_loss(model, cache[0], torch.Generator().manual_seed(0), 0.0)["total"])

    before = loss()
    for _ in range(60):
        out = refiner_loss(model, cache[0], torch.Generator().manual_seed(0), 0.0)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    assert loss() < 0.8 * before
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.encoder.parameters(), strict=True))
    assert math.isfinite(before)


@torch.no_grad()
def test_photo_path_refines_the_views_no_landmarks_placed(tmp_path):
    """With a refiner the photo path refines, on the result, the views without landmarks; the views PnP placed
    keep PnP's cameras (glvd.pose.REFINE_AFTER_PNP); refine=False skips the refiner."""
    from dataclasses import replace

    from glvd.model import GLVD
    from glvd.pose import FROM_BLENDED, FROM_HEAD, FROM_LANDMARKS, POST_DESCENT_ROUNDS, descend_with_landmark_cameras

    plain = small_model(tiny_kit(tmp_path))
    model = GLVD(replace(SMALL, camera_refiner=True), plain.template).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    torch.nn.init.normal_(model.camera_refiner.mlp[-1].weight, std=0.05)
    feats = model.encode(torch.rand(1, 2, 3, SMALL.image_size, SMALL.image_size))
    prep = model.prepare(feats)
    est = model.estimate_cameras(feats, frontal_cameras(1, 2, SMALL.image_size).K, prep)
    xs, _, cams, sources = descend_with_landmark_cameras(model, feats, est, [None, None], prep=prep)
    assert sources == [FROM_HEAD, FROM_HEAD]
    # no landmarks: the descent ran with the estimate, the result refined the cameras once more
    assert torch.equal(xs, model.descend(feats, est, prep=prep)[0])
    again = model.refine_cameras(prep, feats, est, xs[:, -1], rounds=POST_DESCENT_ROUNDS)
    assert torch.allclose(cams.R, again.R) and torch.allclose(cams.t, again.t)
    assert not torch.allclose(cams.R, est.R)
    _, _, plain_cams, _ = descend_with_landmark_cameras(model, feats, est, [None, None], refine=False)
    assert torch.equal(plain_cams.R, est.R)
    # landmarks for the first view only (the template as the estimate sees it): PnP places it and
    # keeps its camera; the second view is refined on the result as before
    lm = torch.as_tensor(model.template.vertices[model.template.landmarks68], dtype=torch.float32)
    uv, _ = est.project(lm[None])
    landmarks = [uv[0, 0].numpy(), None]
    _, _, no_ref, src = descend_with_landmark_cameras(model, feats, est, landmarks, refine=False)
    xs2, _, mixed, _ = descend_with_landmark_cameras(model, feats, est, landmarks)
    assert src == [FROM_BLENDED, FROM_HEAD]  # PnP agrees with the estimate there: their rotations blended
    assert descend_with_landmark_cameras(model, feats, est, landmarks, refine=False, blend=False)[3] == \
        [FROM_LANDMARKS, FROM_HEAD]
    assert torch.equal(mixed.R[0, 0], no_ref.R[0, 0]) and torch.equal(mixed.t[0, 0], no_ref.t[0, 0])
    refined = model.refine_cameras(prep, feats, no_ref, xs2[:, -1], rounds=POST_DESCENT_ROUNDS)
    assert torch.allclose(mixed.R[0, 1], refined.R[0, 1]) and not torch.allclose(mixed.R[0, 1], no_ref.R[0, 1])


@torch.no_grad()
def test_the_shipped_refiner_places_renders_closer_than_the_camera_head(checkpoint):
    """The shipped checkpoint's refiner, on held-out renders: a smaller median rotation error than its head."""
    import pytest

    from glvd.checkpoint import load_checkpoint
    from glvd_train.synth import SynthConfig, SyntheticFaces
    from glvd.topology import default_kit_path

    if not default_kit_path().is_file():
        pytest.skip(f"ICT FaceKit not found at {default_kit_path()} (set GLVD_KIT)")
    model, _ = load_checkpoint(checkpoint)
    if model.camera_refiner is None:
        pytest.skip("the checkpoint has no camera refiner")
    s = SyntheticFaces(config=SynthConfig(image_size=model.cfg.image_size), seed=77_000_001).sample(12, 1)
    feats = model.encode(s["images"])
    R_head, _, _ = model.camera_head(feats, s["K"])
    refined = model.estimate_cameras(feats, s["K"])
    head_err = rotation_angle_deg(R_head, s["R"]).median()
    refined_err = rotation_angle_deg(refined.R, s["R"]).median()
    assert refined_err < 0.75 * head_err, (float(refined_err), float(head_err))
