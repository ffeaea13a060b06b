"""Camera refinement: each view's camera corrected by where its image shows the keypoints.

The camera head reads a view's pose from one pooled feature vector and is 9-10 deg off (median,
docs/camera_budget.md), while PnP on exact 2D landmarks is within 3 deg even with the template's
shape. The refiner reads the keypoint module's pixel-aligned features at each keypoint's projection,
predicts where that keypoint really lies in the image (a 2D offset) and how far to trust it, and
solves the weighted reprojection problem for a small rotation and translation of the camera
(Gauss-Newton, differentiable, so the trust weights learn from the camera error). A few rounds of
it move the cameras the way the descent moves the vertices: read, correct, read again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cameras import Cameras, axis_angle_to_matrix
from .sampling import sample_maps

#: keypoint positions are fed in decimetres (as the fields' inputs are), so they are of order 1
POSITION_SCALE = 10.0
#: the MLP's offset output is in tenths of the crop (one unit = 12.8 px at 128 px), so offsets are of order 1
OFFSET_SCALE = 0.1
#: softplus(this) = 1: every keypoint starts with the same trust
_UNIT_TRUST = 0.5413


class CameraRefiner(nn.Module):
    """Refines per-view cameras from the keypoint module's feature map.

    Starts as the identity (its last layer is zero: no offsets, equal trust), so a model that gains one
    computes what it did before until the refiner is trained.
    """

    def __init__(self, feat_channels: int, global_channels: int, num_kp: int, hidden: int = 128,
                 embed: int = 16, rounds: int = 3, solver_iterations: int = 2) -> None:
        super().__init__()
        self.rounds = rounds
        self.solver_iterations = solver_iterations
        self.embed = nn.Parameter(torch.randn(num_kp, embed) * 0.1)
        # sampled features, keypoint identity, the view's global feature, the keypoint's rotated
        # position (shows the pose), its pixel position, and whether it faces the camera
        cin = feat_channels + embed + global_channels + 3 + 2 + 1
        self.mlp = nn.Sequential(
            nn.Linear(cin, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 3),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def observe(self, kp_map: torch.Tensor, kp_global: torch.Tensor, cams: Cameras, points: torch.Tensor,
                normals: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each keypoint lies in each view, and the trust in that.

        Args:
            kp_map: ``(B*V, C, H, W)`` the keypoint module's prepared map; kp_global: ``(B*V, G)``.
            points, normals: ``(B, K, 3)`` the face's keypoints (head frame) and their normals.
        Returns:
            ``uv (B, V, K, 2)`` pixels of the crop and ``trust (B, V, K)`` (positive).
        """
        B, V = cams.batch, cams.views
        Kn = points.shape[1]
        uv, _ = cams.project(points)
        feat = sample_maps(kp_map, uv, size)
        rotated = torch.einsum("bvij,bkj->bvki", cams.R, points - points.mean(1, keepdim=True)) * POSITION_SCALE
        facing = -torch.einsum("bvj,bkj->bvk", cams.R[:, :, 2], normals)[..., None]  # the camera looks along +z
        g = kp_global.reshape(B, V, 1, -1).expand(B, V, Kn, -1)
        emb = self.embed[None, None].expand(B, V, Kn, -1)
        h = torch.cat([feat, emb, g, rotated, uv / size * 2.0 - 1.0, facing], -1)
        out = self.mlp(h)
        return uv + out[..., :2] * (OFFSET_SCALE * size), F.softplus(out[..., 2] + _UNIT_TRUST)

    def forward(self, kp_map: torch.Tensor, kp_global: torch.Tensor, cams: Cameras, points: torch.Tensor,
                normals: torch.Tensor, size: int, rounds: int | None = None) -> Cameras:
        """``rounds`` (default: the trained number) of observe-and-solve (arguments as :meth:`observe`);
        the refined cameras."""
        return self.trace(kp_map, kp_global, cams, points, normals, size, rounds)[0]

    def trace(self, kp_map: torch.Tensor, kp_global: torch.Tensor, cams: Cameras, points: torch.Tensor,
              normals: torch.Tensor, size: int,
              rounds: int | None = None) -> tuple[Cameras, list[torch.Tensor], list[Cameras]]:
        """:meth:`forward` with every round's observed keypoint pixels ``(B, V, K, 2)`` and cameras (training)."""
        observed, steps = [], []
        for _ in range(self.rounds if rounds is None else rounds):
            uv, trust = self.observe(kp_map, kp_global, cams, points, normals, size)
            cams = solve_pose_update(points, uv, trust, cams, self.solver_iterations)
            observed.append(uv)
            steps.append(cams)
        return cams, observed, steps


def solve_pose_update(points: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, cams: Cameras,
                      iterations: int = 2, damping: float = 1e-2) -> Cameras:
    """Damped Gauss-Newton on each view's weighted reprojection error (differentiable).

    The update is a rotation ``w`` about the camera's centre and a shift ``d``:
    ``X_cam <- exp([w]) (R X) + t + d``, i.e. ``R <- exp([w]) R``, ``t <- t + d``.

    Args:
        points: ``(B, K, 3)`` head frame; target: ``(B, V, K, 2)`` pixels; weight: ``(B, V, K)``.
        damping: Levenberg-Marquardt, relative to the normal matrix's diagonal (keeps a view with few
            trusted points, or a depth the points barely constrain, from jumping).
    """
    K, R, t = cams.K, cams.R, cams.t
    fx, fy = K[..., 0, 0][..., None], K[..., 1, 1][..., None]
    cx, cy = K[..., 0, 2][..., None], K[..., 1, 2][..., None]
    w2 = torch.cat([weight, weight], -1)[..., None]  # (B,V,2K,1): u rows, then v rows
    for _ in range(iterations):
        Rp = torch.matmul(points[:, None], R.transpose(-1, -2))  # (B,V,K,3) R X
        pc = Rp + t[:, :, None]
        iz = 1.0 / pc[..., 2].clamp(min=1e-3)
        xn, yn = pc[..., 0] * iz, pc[..., 1] * iz
        resid = torch.cat([target[..., 0] - (fx * xn + cx), target[..., 1] - (fy * yn + cy)], -1)  # (B,V,2K)
        # d u / d X_cam = (a0, 0, a2), d v / d X_cam = (0, b1, b2); a rotation w moves X_cam by w x (R X),
        # so its columns are (R X) x (row), written out
        a0, b1 = fx * iz, fy * iz
        a2, b2 = -a0 * xn, -b1 * yn
        px, py, pz = Rp.unbind(-1)
        zero = torch.zeros_like(a0)
        J = torch.cat([torch.stack([py * a2, pz * a0 - px * a2, -py * a0, a0, zero, a2], -1),
                       torch.stack([py * b2 - pz * b1, -px * b2, px * b1, zero, b1, b2], -1)], -2)  # (B,V,2K,6)
        Jw_T = (J * w2).transpose(-1, -2)
        H = Jw_T @ J  # (B,V,6,6)
        g = Jw_T @ resid[..., None]  # (B,V,6,1)
        diag = H.diagonal(dim1=-2, dim2=-1)
        H = H + torch.diag_embed(damping * diag + 1e-9)
        # solve_ex without its error check: the damped H is positive definite, and the check would make a
        # GPU wait for the CPU (a sync per solve)
        delta = torch.linalg.solve_ex(H, g, check_errors=False)[0][..., 0]  # (B,V,6)
        R = axis_angle_to_matrix(delta[..., :3]) @ R
        t = t + delta[..., 3:]
    return Cameras(K, R, t)
