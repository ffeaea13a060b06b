"""Cameras from 2D landmarks (PnP) as the runtime uses them on photos."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glvd.pose import pnp_cameras, solve_pnp


def _setup(yaw_deg: float = 30.0):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(51, 3)) * [0.05, 0.06, 0.03]  # a face-sized cloud, metres
    a = math.radians(yaw_deg)
    R = np.diag([1.0, -1.0, -1.0]) @ np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    t = np.array([0.02, -0.01, 0.6])
    K = np.array([[500.0, 0, 64], [0, 500, 64], [0, 0, 1]])
    c = pts @ R.T + t
    uv = (c @ K.T)[:, :2] / c[:, 2:3]
    return pts, uv, K, R, t


def test_pnp_recovers_the_camera():
    pts, uv, K, R, t = _setup()
    Rp, tp = solve_pnp(pts, uv, K)
    ang = math.degrees(math.acos(np.clip((np.trace(Rp.T @ R) - 1) / 2, -1, 1)))
    assert ang < 0.05 and np.abs(tp - t).max() < 1e-4


def test_pnp_starts_from_a_guess_and_refines_it():
    pts, uv, K, R, t = _setup(50.0)
    Rp, tp = solve_pnp(pts, uv + np.random.default_rng(1).normal(scale=0.5, size=uv.shape), K,
                       guess=(np.diag([1.0, -1.0, -1.0]), np.array([0.0, 0.0, 0.5])))
    ang = math.degrees(math.acos(np.clip((np.trace(Rp.T @ R) - 1) / 2, -1, 1)))
    assert ang < 2.0 and abs(tp[2] - t[2]) < 0.03


def test_degenerate_points_give_none_or_a_frontal_fallback():
    pts = np.zeros((51, 3))
    uv = np.full((51, 2), 64.0)
    K = np.array([[500.0, 0, 64], [0, 500, 64], [0, 0, 1]])
    assert solve_pnp(pts, uv, K) is None
    R, t = pnp_cameras(pts, uv[None], K[None])
    assert np.allclose(R[0], np.diag([1.0, -1.0, -1.0])) and np.isfinite(t).all()


def test_a_fit_worse_than_max_error_is_rejected():
    pts, uv, K, R, t = _setup()
    scrambled = uv[np.random.default_rng(2).permutation(len(uv))]  # landmarks no rigid face explains
    assert solve_pnp(pts, scrambled, K) is not None  # without a bound PnP returns its best try
    assert solve_pnp(pts, scrambled, K, max_error=2.0) is None
    assert solve_pnp(pts, uv, K, max_error=0.01) is not None


def test_landmark_cameras_replace_detected_views_and_keep_the_rest():
    import torch

    from glvd.cameras import Cameras
    from glvd.pose import landmark_cameras

    rng = np.random.default_rng(3)
    face68 = rng.normal(size=(68, 3)) * [0.05, 0.06, 0.03]
    _, _, K, R, t = _setup(25.0)
    c = face68 @ R.T + t
    uv = (c @ K.T)[:, :2] / c[:, 2:3]
    head_R = torch.eye(3)[None, None].repeat(1, 2, 1, 1) * torch.tensor([1.0, -1.0, -1.0])[:, None]
    head = Cameras(torch.tensor(K, dtype=torch.float32)[None, None].repeat(1, 2, 1, 1), head_R,
                   torch.tensor([[[0.0, 0.0, 0.5], [0.0, 0.0, 0.5]]]))
    cams, sources = landmark_cameras(head, [uv, None], face68, convention="kit")
    assert sources == ["landmarks", "camera head"]
    Rp = cams.R[0, 0].double().numpy()
    ang = math.degrees(math.acos(np.clip((np.trace(Rp.T @ R) - 1) / 2, -1, 1)))
    assert ang < 0.1 and np.abs(cams.t[0, 0].numpy() - t).max() < 1e-3
    assert torch.equal(cams.R[0, 1], head.R[0, 1]) and torch.equal(cams.t[0, 1], head.t[0, 1])
    assert torch.equal(head.R[0, 0], head_R[0, 0])  # the input cameras are not modified
    # landmarks no rigid face explains: the camera head is kept
    _, sources = landmark_cameras(head, [uv[rng.permutation(68)], None], face68, convention="kit")
    assert sources == ["camera head", "camera head"]


def test_solve_translation_recovers_the_position_for_a_known_rotation():
    from glvd.pose import solve_translation

    pts, uv, K, R, t = _setup(60.0)
    assert np.abs(solve_translation(pts, uv, K, R) - t).max() < 1e-9
    # a rotation 8 degrees off still puts the face at about the right distance
    a = math.radians(8.0)
    off = R @ np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    assert abs(solve_translation(pts, uv, K, off)[2] - t[2]) < 0.05
    assert solve_translation(pts, uv, K, off, max_error=0.01) is None  # worse than the bound


def test_head_yaw_is_measured_from_facing_the_camera():
    import torch

    from glvd.cameras import head_yaw_deg

    for yaw in (0.0, 30.0, -50.0, 75.0):
        R = torch.tensor(_setup(yaw)[3])
        assert abs(float(head_yaw_deg(R)) - abs(yaw)) < 1e-6


def test_wide_yaw_views_keep_the_camera_head_rotation():
    import torch

    from glvd.cameras import Cameras
    from glvd.pose import FROM_HEAD_AND_LANDMARKS, FROM_LANDMARKS, landmark_cameras, wide_yaw_views

    rng = np.random.default_rng(4)
    face68 = rng.normal(size=(68, 3)) * [0.05, 0.06, 0.03]
    views = []
    for yaw in (10.0, 60.0):
        _, _, K, R, t = _setup(yaw)
        c = face68 @ R.T + t
        views.append(((c @ K.T)[:, :2] / c[:, 2:3], K, R, t))
    a = math.radians(6.0)  # the head's rotation: 6 degrees off the truth
    tilt = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    head = Cameras(torch.tensor(np.stack([v[1] for v in views]), dtype=torch.float32)[None],
                   torch.tensor(np.stack([v[2] @ tilt for v in views]), dtype=torch.float32)[None],
                   torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5]])[None])
    assert wide_yaw_views(head) == [False, True]
    cams, sources = landmark_cameras(head, [v[0] for v in views], face68, convention="kit")
    assert sources == [FROM_LANDMARKS, FROM_HEAD_AND_LANDMARKS]
    assert torch.equal(cams.R[0, 1], head.R[0, 1])  # the wide view keeps the head's rotation ...
    assert abs(float(cams.t[0, 1, 2]) - views[1][3][2]) < 0.05  # ... and takes its position from the landmarks
    R0 = cams.R[0, 0].double().numpy()  # the near-frontal one is solved by PnP
    assert math.degrees(math.acos(np.clip((np.trace(R0.T @ views[0][2]) - 1) / 2, -1, 1))) < 0.1
    # the caller can decide which views keep their rotation
    _, sources = landmark_cameras(head, [v[0] for v in views], face68, keep_rotation=[False, False], convention="kit")
    assert sources == [FROM_LANDMARKS, FROM_LANDMARKS]


def test_a_wide_head_rotation_that_cannot_explain_the_landmarks_gives_way_to_pnp():
    """The camera head put a frontal face at 60 deg: no position fits the landmarks, so full PnP is used."""
    import torch

    from glvd.cameras import Cameras
    from glvd.pose import FROM_HEAD, FROM_LANDMARKS, landmark_cameras, wide_yaw_views

    rng = np.random.default_rng(5)
    face68 = rng.normal(size=(68, 3)) * [0.05, 0.06, 0.03]
    _, _, K, R, t = _setup(5.0)  # the truth: near frontal
    c = face68 @ R.T + t
    uv = (c @ K.T)[:, :2] / c[:, 2:3]
    R_head = _setup(60.0)[3]  # the head's (wrong) estimate: wide yaw
    head = Cameras(torch.tensor(K, dtype=torch.float32)[None, None], torch.tensor(R_head, dtype=torch.float32)[None, None],
                   torch.tensor([[[0.0, 0.0, 0.5]]]))
    assert wide_yaw_views(head) == [True]
    cams, sources = landmark_cameras(head, [uv], face68, convention="kit")
    assert sources == [FROM_LANDMARKS]
    R_est = cams.R[0, 0].double().numpy()
    assert math.degrees(math.acos(np.clip((np.trace(R_est.T @ R) - 1) / 2, -1, 1))) < 0.1
    # but where PnP finds the view wide as well, the head's rotation stays (PnP is the worse there)
    _, _, K, R, t = _setup(50.0)
    c = face68 @ R.T + t
    uv = (c @ K.T)[:, :2] / c[:, 2:3]
    a = math.radians(35.0)  # the head turned the truth 35 deg about the face's axis: same yaw, no position fits
    roll = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    head = Cameras(torch.tensor(K, dtype=torch.float32)[None, None], torch.tensor(R @ roll, dtype=torch.float32)[None, None],
                   torch.tensor([[[0.0, 0.0, 0.5]]]))
    assert wide_yaw_views(head) == [True]
    cams, sources = landmark_cameras(head, [uv], face68, convention="kit")
    assert sources == [FROM_HEAD] and torch.equal(cams.R, head.R)


def test_mediapipe_offsets_are_shipped_and_small():
    """The calibration ships with the runtime: 68 finite, read-only offsets of at most a couple of cm, the
    jaw's larger than the eyes' (MediaPipe marks the jaw line elsewhere; the eye corners agree)."""
    from glvd.landmarks_map import mediapipe68_offsets

    off = mediapipe68_offsets()
    assert off.shape == (68, 3) and np.isfinite(off).all() and not off.flags.writeable
    size = np.linalg.norm(off, axis=1)
    assert size.max() < 0.025 and np.median(size[:17]) > np.median(size[36:48])


def test_a_broken_calibration_is_a_clear_error(tmp_path, monkeypatch):
    import glvd.landmarks_map as lm
    from glvd.errors import GLVDError

    bad = tmp_path / "offsets.json"
    bad.write_text('{"offsets_m": [[0, 0]]}')
    monkeypatch.setattr(lm, "OFFSETS_PATH", bad)
    lm.mediapipe68_offsets.cache_clear()
    try:
        with pytest.raises(GLVDError, match="offsets"):
            lm.mediapipe68_offsets()
        monkeypatch.setattr(lm, "OFFSETS_PATH", tmp_path / "missing.json")
        with pytest.raises(GLVDError, match="missing or broken"):
            lm.mediapipe68_offsets()
    finally:
        lm.mediapipe68_offsets.cache_clear()


def test_landmark_cameras_place_a_view_on_mediapipe_style_landmarks():
    """In the MediaPipe convention PnP runs against the vertices moved by the calibration: a view whose
    landmarks are where MediaPipe would mark them (the moved points, projected) gets its exact camera,
    which PnP against the bare vertices misses."""
    import torch

    from glvd.cameras import Cameras
    from glvd.pose import landmark_cameras, landmark_points

    face68 = np.random.default_rng(4).normal(size=(68, 3)) * [0.05, 0.06, 0.03]
    _, _, K, R, t = _setup(10.0)
    c = landmark_points(face68, "mediapipe") @ R.T + t
    uv = (c @ K.T)[:, :2] / c[:, 2:3]
    head = Cameras(torch.tensor(K, dtype=torch.float32)[None, None],
                   (torch.eye(3) * torch.tensor([1.0, -1.0, -1.0]))[None, None], torch.tensor([[[0.0, 0.0, 0.5]]]))

    def angle(cams):
        Rp = cams.R[0, 0].double().numpy()
        return math.degrees(math.acos(np.clip((np.trace(Rp.T @ R) - 1) / 2, -1, 1)))

    mp_cams, _ = landmark_cameras(head, [uv], face68)
    kit_cams, _ = landmark_cameras(head, [uv], face68, convention="kit")
    assert angle(mp_cams) < 0.1 and np.abs(mp_cams.t[0, 0].numpy() - t).max() < 1e-3
    assert angle(kit_cams) > 5 * angle(mp_cams)
    with pytest.raises(ValueError, match="convention"):
        landmark_points(face68, "dlib")


def rotation_between_deg(R_a, R_b) -> float:
    """glvd.cameras.rotation_angle_deg of two (3, 3) arrays, in double precision."""
    import torch

    from glvd.cameras import rotation_angle_deg

    return float(rotation_angle_deg(torch.as_tensor(R_a, dtype=torch.float64), torch.as_tensor(R_b, dtype=torch.float64)))


def test_blend_rotations_walks_the_geodesic():
    from glvd.pose import blend_rotations

    _, _, _, R_a, _ = _setup(10.0)
    _, _, _, R_b, _ = _setup(26.0)
    assert rotation_between_deg(R_a, R_b) == pytest.approx(16.0, abs=1e-6)
    assert np.allclose(blend_rotations(R_a, R_b, 0.0), R_a) and np.allclose(blend_rotations(R_a, R_b, 1.0), R_b)
    mid = blend_rotations(R_a, R_b, 0.5)
    assert np.allclose(mid.T @ mid, np.eye(3), atol=1e-9) and np.linalg.det(mid) == pytest.approx(1.0)
    assert rotation_between_deg(R_a, mid) == pytest.approx(8.0, abs=1e-6)
    assert rotation_between_deg(mid, R_b) == pytest.approx(8.0, abs=1e-6)


def test_landmark_cameras_blend_with_a_prior_that_agrees_and_ignore_one_that_does_not():
    import torch

    from glvd.cameras import Cameras
    from glvd.pose import BLEND_MAX_DEG, BLEND_WEIGHT, FROM_BLENDED, FROM_LANDMARKS, landmark_cameras, project_points

    face68 = np.random.default_rng(4).normal(size=(68, 3)) * [0.05, 0.06, 0.03]
    _, _, K, R, t = _setup(20.0)
    uv = project_points(face68, K, R, t)
    Kt = torch.tensor(K, dtype=torch.float32)[None, None]

    def prior_at(yaw: float) -> Cameras:
        Rp = _setup(yaw)[3]
        return Cameras(Kt, torch.tensor(Rp, dtype=torch.float32)[None, None], torch.tensor(t, dtype=torch.float32)[None, None])

    near, far = 20.0 + 0.6 * BLEND_MAX_DEG, 20.0 + 1.5 * BLEND_MAX_DEG
    cams, sources = landmark_cameras(prior_at(near), [uv], face68, convention="kit", prior=prior_at(near))
    assert sources == [FROM_BLENDED]
    R_got = cams.R[0, 0].double().numpy()
    # the rotation BLEND_WEIGHT of the way from PnP's (the truth here) to the prior's ...
    assert rotation_between_deg(R, R_got) == pytest.approx(BLEND_WEIGHT * 0.6 * BLEND_MAX_DEG, abs=0.05)
    # ... and the position that rotation fits the landmarks with: the face's centre still projects where it did
    centre = project_points(face68.mean(0, keepdims=True), K, R_got, cams.t[0, 0].double().numpy())
    assert np.abs(centre - project_points(face68.mean(0, keepdims=True), K, R, t)).max() < 2.0
    cams, sources = landmark_cameras(prior_at(far), [uv], face68, convention="kit", prior=prior_at(far))
    assert sources == [FROM_LANDMARKS] and rotation_between_deg(R, cams.R[0, 0].double().numpy()) < 0.1
    # without a prior nothing is blended (the default)
    assert landmark_cameras(prior_at(near), [uv], face68, convention="kit")[1] == [FROM_LANDMARKS]
