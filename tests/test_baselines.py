"""Baselines of the evaluation: the 3DMM landmark fit, analysis-by-synthesis, the MediaPipe correspondence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from runtime_fixtures import tiny_kit

from glvd_train.baselines import (
    FaceModel,
    fit_analysis_by_synthesis,
    fit_landmarks_3dmm,
    mediapipe_correspondence,
    project,
)
from glvd.cameras import FRONTAL_R, axis_angle_to_matrix, euler_to_matrix
from glvd.landmarks_map import MEDIAPIPE_TO_68
from glvd_train.metrics import vertex_error_mm
from glvd_train.synth import HeadModel
from glvd.topology import load_kit, template_from_kit


@pytest.fixture(scope="module")
def face(tmp_path_factory):
    kit = tiny_kit(tmp_path_factory.mktemp("kit"))
    tpl = template_from_kit(load_kit(kit), extra_keypoints=8)
    return FaceModel.from_head(HeadModel.load(kit), tpl.triangles()), tpl


def _cameras(views: int, size: float = 128.0):
    yaw = torch.linspace(-0.5, 0.5, views) if views > 1 else torch.tensor([0.2])
    R = FRONTAL_R @ euler_to_matrix(yaw, torch.full((views,), 0.1), torch.full((views,), -0.05))
    f = 2.2 * size
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]]).expand(views, 3, 3).clone()
    t = torch.tensor([0.004, -0.01, 0.55]).expand(views, 3).clone()
    return K, R, t


def test_axis_angle_matches_rodrigues():
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    torch.testing.assert_close(R, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64))
    w = torch.randn(5, 3, dtype=torch.float64)
    Rs = axis_angle_to_matrix(w)
    torch.testing.assert_close(Rs @ Rs.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
    torch.testing.assert_close(axis_angle_to_matrix(torch.zeros(3, dtype=torch.float64)), torch.eye(3).double())


def test_3dmm_recovers_identity_from_exact_landmarks(face):
    fm, _ = face
    g = torch.Generator().manual_seed(0)
    alpha = torch.randn(fm.num_identity, generator=g)
    K, R, t = _cameras(1)
    lm = project(fm.vertices(alpha, torch.zeros(fm.num_expression), fm.landmarks68), K, R, t)
    # a tiny landmark sigma makes the prior negligible: the fit must return the coefficients themselves
    fit = fit_landmarks_3dmm(fm, lm, K, R, t, fit_camera=False, fit_expression=False, sigma_px=1e-4)
    torch.testing.assert_close(fit["identity"], alpha, atol=1e-3, rtol=0)
    assert vertex_error_mm(fit["vertices"][None], fm.vertices(alpha, torch.zeros(fm.num_expression))[None],
                           align=False).item() < 1e-3


def test_3dmm_with_cameras_from_pnp_fits_exact_landmarks(face):
    fm, _ = face
    g = torch.Generator().manual_seed(1)
    alpha = torch.randn(fm.num_identity, generator=g)
    beta = torch.rand(fm.num_expression, generator=g) * (torch.rand(fm.num_expression, generator=g) < 0.1)
    K, R, t = _cameras(3)
    gt = fm.vertices(alpha, beta)
    lm = project(gt[fm.landmarks68], K, R, t)
    fit = fit_landmarks_3dmm(fm, lm, K, sigma_px=0.01)  # cameras from PnP on the mean face, then fitted
    reproj = (project(fit["vertices"][fm.landmarks68], K, fit["R"], fit["t"]) - lm).norm(dim=-1).mean()
    assert reproj < 0.05, f"landmarks not fitted: {reproj:.3f} px"
    template_err = vertex_error_mm(fm.mean[None], gt[None]).item()
    fit_err = vertex_error_mm(fit["vertices"][None], gt[None]).item()
    assert fit_err < 0.2 * template_err, (fit_err, template_err)
    assert fit["expression"].min() >= 0 and fit["expression"].max() <= 1


def test_3dmm_prior_keeps_noisy_fit_bounded(face):
    fm, _ = face
    K, R, t = _cameras(1)
    lm = project(fm.mean[fm.landmarks68], K, R, t) + torch.randn(1, 68, 2, generator=torch.Generator().manual_seed(2))
    fit = fit_landmarks_3dmm(fm, lm, K, subset=list(range(17, 68)))
    assert torch.isfinite(fit["vertices"]).all()
    assert fit["identity"].abs().max() < 5.0


def test_analysis_by_synthesis_runs_and_keeps_shape(face):
    fm, _ = face
    K, R, t = _cameras(2, 64.0)
    images = torch.rand(2, 3, 64, 64)
    lm = project(fm.mean[fm.landmarks68], K, R, t)
    init = fit_landmarks_3dmm(fm, lm, K, R, t, fit_camera=False)
    out = fit_analysis_by_synthesis(fm, images, K, lm, init, steps=3)
    assert out["vertices"].shape == fm.mean.shape and torch.isfinite(out["vertices"]).all()
    assert out["R"].shape == (2, 3, 3) and torch.isfinite(out["photo_loss"])


def test_mediapipe_correspondence_recovers_surface_points(face):
    """A fake canonical mesh = template surface points (landmarks where the 68-map reads), moved to cm."""
    _, tpl = face
    tris = tpl.triangles()
    rng = np.random.default_rng(0)
    tri = rng.integers(0, len(tris), 468)
    bary = rng.dirichlet([1.0, 1.0, 1.0], 468)
    pts = (tpl.vertices[tris[tri]] * bary[..., None]).sum(1).astype(np.float64)
    for j, ids in enumerate(MEDIAPIPE_TO_68[17:], start=17):  # inner landmarks: exact vertices
        for i in ids:
            pts[i] = tpl.vertices[tpl.landmarks68[j]]
    d = torch.float64
    R = euler_to_matrix(torch.tensor(0.3, dtype=d), torch.tensor(-0.2, dtype=d), torch.tensor(0.1, dtype=d)).numpy()
    s = 100.0
    canonical = (s * (R @ pts.T)).T + np.array([1.0, -2.0, 3.0])
    corr = mediapipe_correspondence(tpl.vertices, tris, tpl.landmarks68, canonical)
    assert corr.landmark_rms_mm < 1e-3
    assert corr.keep.all() and corr.dist_mm.max() < 1e-3
    np.testing.assert_allclose(corr.points(tpl.vertices), pts, atol=1e-6)
