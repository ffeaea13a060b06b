"""Pinhole cameras in the OpenCV convention (x right, y down, z forward).

``X_cam = R @ X_head + t``; ``u = fx * X / Z + cx``, ``v = fy * Y / Z + cy`` in
pixels of the image the camera belongs to. The head frame is the template's
(x to the subject's left, y up, z out of the face), in metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: A camera in front of the face looking at it: flips y and z.
FRONTAL_R = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


@dataclass
class Cameras:
    """A batch of per-view cameras.

    K: ``(B, V, 3, 3)`` intrinsics in pixels; R: ``(B, V, 3, 3)``; t: ``(B, V, 3)``.
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor

    @property
    def batch(self) -> int:
        return int(self.K.shape[0])

    @property
    def views(self) -> int:
        return int(self.K.shape[1])

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(self.K.to(device), self.R.to(device), self.t.to(device))

    def detach(self) -> Cameras:
        return Cameras(self.K.detach(), self.R.detach(), self.t.detach())

    def index_views(self, idx: torch.Tensor | list[int]) -> Cameras:
        return Cameras(self.K[:, idx], self.R[:, idx], self.t[:, idx])

    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` head-frame points -> ``(B, V, N, 3)`` camera-frame points."""
        return torch.einsum("bvij,bnj->bvni", self.R, points) + self.t[:, :, None, :]

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project head-frame points.

        Args:
            points: ``(B, N, 3)``.
        Returns:
            ``uv (B, V, N, 2)`` pixels and ``depth (B, V, N)``.
        """
        pc = self.to_camera(points)
        z = pc[..., 2]
        zc = z.clamp(min=1e-4)
        x = pc[..., 0] / zc
        y = pc[..., 1] / zc
        K = self.K[:, :, None]
        u = K[..., 0, 0] * x + K[..., 0, 1] * y + K[..., 0, 2]
        v = K[..., 1, 1] * y + K[..., 1, 2]
        return torch.stack([u, v], -1), z

    def centres(self) -> torch.Tensor:
        """``(B, V, 3)`` camera centres in the head frame (``-R^T t``)."""
        return -torch.einsum("bvji,bvj->bvi", self.R, self.t)


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` -> ``(..., 3, 3)`` (Zhou et al.: Gram-Schmidt on two rows)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-2)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` -> ``(..., 6)``: the first two rows."""
    return R[..., :2, :].reshape(*R.shape[:-2], 6)


def axis_angle_to_matrix(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``(..., 3)`` axis-angle -> ``(..., 3, 3)``; smooth at zero (for Jacobians)."""
    theta2 = (w * w).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-20)
    # sin(t)/t and (1-cos(t))/t^2 with their Taylor series near zero
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-30))
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    Kx = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*w.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(Kx)
    return eye + a[..., None] * Kx + b[..., None] * (Kx @ Kx)


def euler_to_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Head rotation in the head frame from yaw (about y), pitch (about x), roll (about z), radians.

    Returns ``(..., 3, 3)`` = Rz(roll) @ Rx(pitch) @ Ry(yaw).
    """
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    Ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).reshape(*yaw.shape, 3, 3)
    Rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).reshape(*yaw.shape, 3, 3)
    Rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], -1).reshape(*yaw.shape, 3, 3)
    return Rz @ Rx @ Ry


def head_yaw_deg(R: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` head-to-camera rotations -> ``(...)`` |yaw| in degrees (0 = facing the camera)."""
    forward = R[..., :, 2]  # the head's +z (out of the face) in the camera frame; facing the camera is -z
    return torch.rad2deg(torch.atan2(forward[..., 0], -forward[..., 2])).abs()


def rotation_angle_deg(Ra: torch.Tensor, Rb: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations, degrees, ``(...)``."""
    tr = (Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(torch.acos(((tr - 1) * 0.5).clamp(-1.0, 1.0)))


def intrinsics(focal_px: float, width: int, height: int) -> torch.Tensor:
    """``(3, 3)`` intrinsics: square pixels, principal point at the image centre."""
    f = float(focal_px)
    return torch.tensor([[f, 0.0, width * 0.5], [0.0, f, height * 0.5], [0.0, 0.0, 1.0]])


def default_intrinsics(width: int, height: int, focal_ratio: float = 1.2) -> torch.Tensor:
    """``(3, 3)`` intrinsics with focal = ratio * longer side (1.2: about a 43 mm lens).

    Benchmarks and tests use it; photos without a focal length use :func:`focal_from_face_box`.
    """
    return intrinsics(focal_ratio * max(width, height), width, height)


#: side, in metres at the head centre's distance, of the square crop that training frames around a
#: face (synthetic frontal views: crop pixels * depth / focal, median; tests/test_preprocess.py checks it)
CROP_SIDE_M = 0.26
#: camera-to-head distance assumed for a photo without a focal length (no EXIF): on held-out LFW faces
#: the landmark error falls steeply up to about 1 m and is flat beyond (docs/focal_prior.md); 1.2 m is
#: inside the training renders' 0.35-1.6 m
DEFAULT_DISTANCE_M = 1.2
#: the widest lens ever assumed, as a 35 mm-equivalent focal length (phones' main cameras: 24-28 mm)
WIDEST_LENS_35MM = 24.0


def focal_from_face_box(side_px: float, width: int, height: int, distance_m: float = DEFAULT_DISTANCE_M) -> float:
    """Focal length in pixels for a photo without one: the face is assumed ``distance_m`` from the camera.

    ``side_px``: the side of the face's crop box (framed like training crops) in the photo's pixels.
    A fixed lens (the old default, 1.2 x the longer side) is wrong for crops and portraits: cropping
    shrinks the image but not the focal length in pixels, so a cropped face looked as if seen from
    30 cm and its jaw projected 15% of the eye distance too narrow (docs/focal_prior.md). Never wider
    than :data:`WIDEST_LENS_35MM` (a tiny face in a big group photo is far away, not seen through a
    fisheye).
    """
    f = float(distance_m) * float(side_px) / CROP_SIDE_M
    return max(f, focal_from_exif_35mm(WIDEST_LENS_35MM, width, height))


def focal_from_exif_35mm(f35: float, width: int, height: int) -> float:
    """Focal length in pixels from a 35 mm-equivalent focal length (36 mm frame width on the longer side)."""
    return f35 / 36.0 * max(width, height)


def fov_to_focal(fov_deg: float, size: float) -> float:
    return 0.5 * size / math.tan(math.radians(fov_deg) * 0.5)
