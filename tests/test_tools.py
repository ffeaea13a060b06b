"""Pure helpers of the tools/ reports."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from keypoint_budget import thin_plate_operator  # noqa: E402


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

    from camera_budget import rotation_error_vector

    R_true = Rotation.from_euler("yxz", [40, -10, 5], degrees=True).as_matrix() @ np.diag([1.0, -1.0, -1.0])
    # the estimate nods the head 6 degrees further about its own x axis (pitch)
    R_est = R_true @ Rotation.from_rotvec([6.0, 0.0, 0.0], degrees=True).as_matrix()
    assert np.allclose(rotation_error_vector(R_est, R_true), [6.0, 0.0, 0.0], atol=1e-9)
    assert np.allclose(rotation_error_vector(R_true, R_true), 0.0, atol=1e-9)
