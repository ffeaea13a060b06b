"""The one place that converts between the runtime's frames and Blender's.

Runtime (docs/ARCHITECTURE.md): metres; head frame x = subject's left, y up,
z out of the face; cameras follow OpenCV (x right, y down, looking along +z),
``X_cam = R @ X_head + t``, pixels with the origin at the image's top-left.

Blender: z up, the front view looks along +Y, so a face that should look at the
viewer of the front view faces -Y. Head -> object space is therefore
``(x, y, z) -> (x, -z, y)``, a pure rotation (no scale: both are metres).
Blender cameras look down their local -Z with local +Y up, i.e. OpenCV's
camera axes with y and z flipped.

Pure numpy (no bpy) so it is unit-tested directly.
"""

from __future__ import annotations

import numpy as np

# object-space (Blender) = HEAD_TO_BLENDER @ head-frame
HEAD_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
# OpenCV camera axes from Blender camera axes (y down, z forward)
CV_FROM_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])


def head_to_blender(points: np.ndarray) -> np.ndarray:
    """``(..., 3)`` head-frame points (or deltas) -> Blender object space, float32."""
    p = np.asarray(points, dtype=np.float32)
    out = p[..., [0, 2, 1]]  # one gather (a copy) then one in-place negation: ~2x faster than per-axis
    out[..., 1] *= -1.0
    return out


def blender_to_head(points: np.ndarray) -> np.ndarray:
    """Inverse of :func:`head_to_blender`."""
    p = np.asarray(points, dtype=np.float32)
    out = np.empty_like(p)
    out[..., 0] = p[..., 0]
    out[..., 1] = p[..., 2]
    out[..., 2] = -p[..., 1]
    return out


def _h(m3: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = m3
    if t is not None:
        m[:3, 3] = t
    return m


def sensor_fit_axis(sensor_fit: str, width: int, height: int) -> str:
    """'HORIZONTAL' or 'VERTICAL': which image side the sensor size applies to."""
    if sensor_fit == "AUTO":
        return "HORIZONTAL" if width >= height else "VERTICAL"
    return sensor_fit


def blender_camera_intrinsics(
    lens_mm: float,
    sensor_width_mm: float,
    sensor_height_mm: float,
    sensor_fit: str,
    width: int,
    height: int,
    shift_x: float = 0.0,
    shift_y: float = 0.0,
) -> np.ndarray:
    """OpenCV ``K`` (3, 3) of a Blender camera rendering a ``width`` x ``height`` image.

    Square pixels. Blender measures the lens shift in units of the fitted side.
    """
    axis = sensor_fit_axis(sensor_fit, width, height)
    if axis == "HORIZONTAL":
        fit_px, sensor = float(width), sensor_width_mm
    else:
        fit_px, sensor = float(height), sensor_height_mm
    f = lens_mm / sensor * fit_px
    cx = width / 2.0 - shift_x * fit_px
    cy = height / 2.0 + shift_y * fit_px  # Blender's shift y is up, OpenCV's v is down
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def opencv_from_blender_camera(cam_matrix_world: np.ndarray, obj_matrix_world: np.ndarray) -> tuple[
    np.ndarray, np.ndarray
]:
    """(R, t) of a Blender camera, seeing head-frame points of an object placed at ``obj_matrix_world``.

    ``X_cv = D @ inv(M_cam) @ M_obj @ H @ X_head`` with ``H`` = head -> object.
    Scale in the matrices is removed (the runtime's frame is metric).
    """
    cam = _rigid(np.asarray(cam_matrix_world, dtype=np.float64))
    obj = _rigid(np.asarray(obj_matrix_world, dtype=np.float64))
    m = _h(CV_FROM_BLENDER_CAMERA) @ np.linalg.inv(cam) @ obj @ _h(HEAD_TO_BLENDER)
    return m[:3, :3].copy(), m[:3, 3].copy()


def blender_camera_from_opencv(
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    width: int,
    height: int,
    obj_matrix_world: np.ndarray | None = None,
    sensor_mm: float = 36.0,
) -> dict:
    """A Blender camera (matrix_world, lens, sensor, shift) equal to an OpenCV camera.

    Inverse of :func:`opencv_from_blender_camera` + :func:`blender_camera_intrinsics`.
    """
    K = np.asarray(K, dtype=np.float64)
    obj = np.eye(4) if obj_matrix_world is None else _rigid(np.asarray(obj_matrix_world, np.float64))
    cv = _h(np.asarray(R, np.float64), np.asarray(t, np.float64))
    cam = obj @ _h(HEAD_TO_BLENDER) @ np.linalg.inv(cv) @ _h(CV_FROM_BLENDER_CAMERA)
    axis = "HORIZONTAL" if width >= height else "VERTICAL"
    fit_px = float(width if axis == "HORIZONTAL" else height)
    return {
        "matrix_world": cam,
        "lens": float(K[0, 0] * sensor_mm / fit_px),
        "sensor_fit": axis,
        "sensor_width": sensor_mm,
        "sensor_height": sensor_mm,
        "shift_x": float((width / 2.0 - K[0, 2]) / fit_px),
        "shift_y": float((K[1, 2] - height / 2.0) / fit_px),
    }


def _rigid(m: np.ndarray) -> np.ndarray:
    """Drop scale/shear from a 4x4 matrix (nearest rotation, same translation)."""
    u, _, vt = np.linalg.svd(m[:3, :3])
    r = u @ vt
    if np.linalg.det(r) < 0:  # keep a rotation, not a reflection
        u[:, -1] *= -1
        r = u @ vt
    return _h(r, m[:3, 3])
