"""MediaPipe's 68 landmarks against the kit's on renders: the observations and the reprojection step that
tools/calibrate_mediapipe_landmarks.py fits the shipped offsets (glvd/assets/mediapipe68_offsets.json) with,
and research/pnp_landmarks and research/landmark_conventions reuse."""

from __future__ import annotations

import numpy as np

from glvd.cameras import head_yaw_deg
from glvd.landmarks_map import mediapipe_to_68
from glvd.pose import project_points

from .baselines import MediaPipeMesh
from .synth import SynthConfig, SyntheticFaces

#: views beyond this yaw are left out of the fit: MediaPipe's outline points there slide along the contour
MAX_YAW = 60.0
IMAGE_SIZE = 128


def observations(kit: str | None, seed: int, faces: int, mp: MediaPipeMesh, chunk: int = 16,
                 max_yaw: float = MAX_YAW) -> list[dict]:
    """Per view MediaPipe found (|yaw| <= max_yaw): its 68 (crop px), the true 68 vertices and camera."""
    synth = SyntheticFaces(kit_path=kit, config=SynthConfig(image_size=IMAGE_SIZE), seed=seed)
    obs = []
    for start_ in range(0, faces, chunk):
        s = synth.sample(min(chunk, faces - start_), 1)
        for f in range(s["images"].shape[0]):
            if abs(float(head_yaw_deg(s["R"][f])[0])) > max_yaw:
                continue
            pts = mp(s["images"][f, 0])
            if pts is None:
                continue
            obs.append({"mp": mediapipe_to_68(pts[:, :2]), "verts": s["vertices"][f].double().numpy(),
                        "cam": tuple(x[f, 0].double().numpy() for x in (s["K"], s["R"], s["t"]))})
    return obs


def reprojection_jacobian(P: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                          target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``(n, 3)`` head-frame points: ``J (n, 2, 3)``, the derivative of their pixels with respect to
    each point, and ``r (n, 2)``, ``target`` pixels minus their projections (a Gauss-Newton step's parts)."""
    pc = P @ R.T + t
    z = pc[:, 2]
    J = np.zeros((len(P), 2, 3))
    J[:, 0, 0], J[:, 0, 2] = K[0, 0] / z, -K[0, 0] * pc[:, 0] / z ** 2
    J[:, 1, 1], J[:, 1, 2] = K[1, 1] / z, -K[1, 1] * pc[:, 1] / z ** 2
    return J @ R, target - project_points(P, K, R, t)
