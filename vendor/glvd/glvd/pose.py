"""Cameras from detected 2D landmarks (OpenCV PnP), for photos whose detector gives the 68 points.

On real photos the camera head (trained on synthetic renders only) misjudges distance and pose;
a detector trained on real faces (MediaPipe) places the 68 landmarks within a few percent of the
eye distance, so PnP against the face's 3D landmarks pins the camera down far better. The
runtime uses it first on the template (before the descent) and again on the reconstructed face.
MediaPipe marks some landmarks elsewhere than the kit's landmark vertices lie (its jaw and chin
higher), so PnP runs against the vertices moved by offsets calibrated on renders
(:func:`glvd.landmarks_map.mediapipe68_offsets`): without them the camera tilts to fit the
convention and the face's projection is off where it matters (docs/mediapipe_offsets.md).
"""

from __future__ import annotations

import numpy as np

#: PnP is rejected (camera head kept) above this mean reprojection error / the landmarks' extent
#: (why each of these values: docs/pose_constants.md)
MAX_REPROJECTION = 0.08

#: from this head-estimated yaw on, a view keeps the head's rotation, its position from the landmarks
WIDE_YAW_DEG = 45.0

#: a wide-yaw view that no position with the head's rotation fits takes full PnP below this PnP yaw
RESCUE_MAX_YAW_DEG = 25.0

#: refine the views PnP placed on a detector's landmarks too? No: worse on real photos
REFINE_AFTER_PNP = False

#: camera-refiner rounds after the descent (one is as good as three, at less than half the time)
POST_DESCENT_ROUNDS = 1

#: where PnP's rotation and the model's estimate agree within this angle, the rotation is blended
BLEND_MAX_DEG = 10.0

#: how far the blended rotation goes from PnP's towards the estimate's
BLEND_WEIGHT = 0.5

#: where each view's camera came from (``Reconstruction.camera_sources``)
FROM_LANDMARKS, FROM_HEAD, FROM_HEAD_AND_LANDMARKS = "landmarks", "camera head", "head rotation + landmarks"
FROM_BLENDED = "landmarks, rotation blended with the head's"

#: the inner 51 of the 68 landmarks (the jaw line left out)
INNER = slice(17, 68)

#: the landmarks PnP fits: the inner 51 (all 68 gave worse frontal rotations)
PNP_LANDMARKS = INNER


def project_points(points3d: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(P, 3)`` head-frame points -> ``(P, 2)`` pixels (OpenCV convention)."""
    c = np.asarray(points3d, np.float64) @ np.asarray(R, np.float64).T + np.asarray(t, np.float64).reshape(3)
    uv = c @ np.asarray(K, np.float64).T
    return uv[:, :2] / uv[:, 2:3]


def reprojection_error(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray, R: np.ndarray,
                       t: np.ndarray) -> float:
    """Mean pixel distance between ``points2d`` and the projections of ``points3d``."""
    return float(np.linalg.norm(project_points(points3d, K, R, t) - points2d, axis=1).mean())


def solve_pnp(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray,
              guess: tuple[np.ndarray, np.ndarray] | None = None,
              max_error: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """One view's camera from ``(P, 3)`` head-frame points and their ``(P, 2)`` pixels, or None.

    Args:
        K: ``(3, 3)`` intrinsics of the pixels' image.
        guess: optional ``(R (3, 3), t (3,))`` to start from (e.g. the camera head's estimate).
        max_error: optional largest acceptable mean reprojection error (pixels).
    Returns:
        ``R (3, 3)``, ``t (3,)`` (OpenCV convention, metres), or None when PnP fails, puts the face
        behind the camera, or fits worse than ``max_error`` (landmarks that no rigid face explains).
    """
    import cv2

    p3 = np.ascontiguousarray(points3d, np.float64)
    p2 = np.ascontiguousarray(points2d, np.float64)
    Kd = np.asarray(K, np.float64)
    try:
        ok, rvec, tvec = cv2.solvePnP(p3, p2, Kd, None, flags=cv2.SOLVEPNP_EPNP)
        if guess is not None and not (ok and tvec[2, 0] > 0):
            rvec, tvec, ok = cv2.Rodrigues(np.asarray(guess[0], np.float64))[0], \
                np.asarray(guess[1], np.float64).reshape(3, 1), True
        if ok:
            ok, rvec, tvec = cv2.solvePnP(p3, p2, Kd, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
    except cv2.error:
        return None
    if not ok or not np.isfinite(tvec).all() or float(tvec[2, 0]) <= 0:
        return None
    R, t = cv2.Rodrigues(rvec)[0], tvec[:, 0]
    if max_error is not None and reprojection_error(p3, p2, Kd, R, t) > max_error:
        return None
    return R, t


def solve_translation(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray, R: np.ndarray,
                      max_error: float | None = None) -> np.ndarray | None:
    """One view's translation for a fixed rotation ``R (3, 3)``: linear least squares, or None.

    Each point's camera-frame position ``R X + t`` must lie on its pixel's ray ``(u, v, 1)``:
    ``(R X + t)_x = u (R X + t)_z`` and likewise for y, two linear equations in ``t`` per point.
    Returns ``t (3,)`` (metres), or None when the face lands behind the camera or the fit is worse
    than ``max_error`` (mean reprojection, pixels).
    """
    p3 = np.asarray(points3d, np.float64) @ np.asarray(R, np.float64).T
    p2 = np.asarray(points2d, np.float64)
    rays = np.c_[p2, np.ones(len(p2))] @ np.linalg.inv(np.asarray(K, np.float64)).T
    u, v = rays[:, 0], rays[:, 1]
    one, zero = np.ones_like(u), np.zeros_like(u)
    A = np.concatenate([np.stack([one, zero, -u], 1), np.stack([zero, one, -v], 1)])
    b = np.concatenate([u * p3[:, 2] - p3[:, 0], v * p3[:, 2] - p3[:, 1]])
    t = np.linalg.lstsq(A, b, rcond=None)[0]
    if not np.isfinite(t).all() or (p3[:, 2] + t[2]).min() <= 0:
        return None
    if max_error is not None and reprojection_error(points3d, p2, K, R, t) > max_error:
        return None
    return t


def _yaw_deg(R: np.ndarray) -> float:
    import torch

    from .cameras import head_yaw_deg

    return float(head_yaw_deg(torch.as_tensor(np.asarray(R, np.float64))))


def wide_yaw_views(cams) -> list[bool]:
    """Per view of ``cams`` (batch 1): does it put the head's yaw at :data:`WIDE_YAW_DEG` or more?"""
    from .cameras import head_yaw_deg

    return [bool(y >= WIDE_YAW_DEG) for y in head_yaw_deg(cams.R[0].float()).tolist()]


def pnp_cameras(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera of each view from 3D-2D landmark pairs; a frontal camera where PnP fails.

    Args:
        points3d: ``(P, 3)``; points2d: ``(V, P, 2)``; K: ``(V, 3, 3)``.
    Returns:
        ``R (V, 3, 3)``, ``t (V, 3)``.
    """
    Rs, ts = [], []
    for v in range(points2d.shape[0]):
        sol = solve_pnp(points3d, points2d[v], K[v])
        if sol is not None:
            Rs.append(sol[0])
            ts.append(sol[1])
            continue
        # frontal, at the distance where the landmarks' spread matches
        spread2d = float(np.ptp(points2d[v], axis=0).max())
        spread3d = float(np.ptp(points3d[:, :2], axis=0).max())
        d = K[v, 0, 0] * spread3d / max(spread2d, 1e-6)
        c = points2d[v].mean(0)
        x = (c[0] - K[v, 0, 2]) / K[v, 0, 0] * d
        y = (c[1] - K[v, 1, 2]) / K[v, 1, 1] * d
        Rs.append(np.diag([1.0, -1.0, -1.0]))
        ts.append(np.array([x, y, d]) - np.diag([1.0, -1.0, -1.0]) @ points3d.mean(0))
    return np.stack(Rs), np.stack(ts)


def landmark_points(face_landmarks68: np.ndarray, convention: str = "mediapipe") -> np.ndarray:
    """``(68, 3)`` the points a detector's 68 landmarks mark on a face whose landmark vertices are
    ``face_landmarks68``: ``"mediapipe"`` (the runtime's detector; the vertices moved by
    :func:`glvd.landmarks_map.mediapipe68_offsets`) or ``"kit"`` (the vertices themselves: exact projections)."""
    pts = np.asarray(face_landmarks68, np.float64)
    if convention == "mediapipe":
        from .landmarks_map import mediapipe68_offsets

        return pts + mediapipe68_offsets()
    if convention == "kit":
        return pts
    raise ValueError(f"unknown landmark convention {convention!r}: 'mediapipe' or 'kit'")


def blend_rotations(R_a: np.ndarray, R_b: np.ndarray, weight: float) -> np.ndarray:
    """The rotation ``weight`` of the way from ``R_a (3, 3)`` to ``R_b`` along the geodesic (0: ``R_a``)."""
    import cv2

    R_a = np.asarray(R_a, np.float64)
    rel = cv2.Rodrigues(R_a.T @ np.asarray(R_b, np.float64))[0]
    return R_a @ cv2.Rodrigues(weight * rel)[0]


def landmark_cameras(cams, landmarks2d, face_landmarks68: np.ndarray, keep_rotation: list[bool] | None = None,
                     convention: str = "mediapipe", prior=None):
    """Replace each view's camera by PnP of a face's landmarks (:data:`PNP_LANDMARKS`) on detected ones.

    The photo path (:func:`descend_with_landmark_cameras`: before the descent on the template, after
    it on the result) and the consistency evaluation go through here. Views in ``keep_rotation``
    (default: :func:`wide_yaw_views` of ``cams``) keep their rotation and take only the position.

    Args:
        cams: :class:`glvd.cameras.Cameras` of one face, batch 1: ``K (1, V, 3, 3)`` (crop pixels),
            ``R (1, V, 3, 3)``, ``t (1, V, 3)``; views without landmarks keep these.
        landmarks2d: per view, ``(68, 2)`` detected landmarks in the crop's pixels, or None.
        face_landmarks68: ``(68, 3)`` the face's landmark vertices (head frame, metres).
        convention: whose 68 ``landmarks2d`` are (:func:`landmark_points`).
        prior: optional cameras like ``cams`` (the model's estimate) whose rotation a view PnP placed is
            blended with where the two agree (:data:`BLEND_MAX_DEG`); None: PnP's rotation as it is.
    Returns:
        the new cameras and, per view, :data:`FROM_LANDMARKS`, :data:`FROM_BLENDED`, :data:`FROM_HEAD`
        or :data:`FROM_HEAD_AND_LANDMARKS`.
    """
    import torch

    from .cameras import Cameras, rotation_angle_deg

    lm3d = landmark_points(face_landmarks68, convention)[PNP_LANDMARKS]
    if keep_rotation is None:
        keep_rotation = wide_yaw_views(cams)
    R, t = cams.R.clone(), cams.t.clone()
    sources = []
    for i, lm in enumerate(landmarks2d):
        sol, kept, blended = None, False, False
        if lm is not None:
            guess = (cams.R[0, i].cpu().numpy(), cams.t[0, i].cpu().numpy())
            lm2d = np.asarray(lm, np.float64)[PNP_LANDMARKS]
            K = cams.K[0, i].cpu().numpy()
            max_error = MAX_REPROJECTION * float(np.ptp(lm2d, axis=0).max())
            if keep_rotation[i]:
                t_only = solve_translation(lm3d, lm2d, K, guess[0], max_error)
                kept = t_only is not None
                sol = None if t_only is None else (guess[0], t_only)
            if sol is None:
                sol = solve_pnp(lm3d, lm2d, K, guess, max_error)
                if keep_rotation[i] and sol is not None and _yaw_deg(sol[0]) >= RESCUE_MAX_YAW_DEG:
                    sol = None  # PnP agrees the view is wide, where its rotation is the worse of the two
            if sol is not None and not kept and prior is not None:
                R_prior = prior.R[0, i].cpu().numpy()
                apart = rotation_angle_deg(torch.as_tensor(sol[0], dtype=torch.float64),
                                           torch.as_tensor(R_prior, dtype=torch.float64))
                if float(apart) < BLEND_MAX_DEG:
                    R_mix = blend_rotations(sol[0], R_prior, BLEND_WEIGHT)
                    t_mix = solve_translation(lm3d, lm2d, K, R_mix, max_error)
                    if t_mix is not None:
                        sol, blended = (R_mix, t_mix), True
        if sol is None:
            sources.append(FROM_HEAD)
            continue
        R[0, i] = torch.as_tensor(sol[0], dtype=R.dtype, device=R.device)
        t[0, i] = torch.as_tensor(sol[1], dtype=t.dtype, device=t.device)
        sources.append(FROM_HEAD_AND_LANDMARKS if kept else FROM_BLENDED if blended else FROM_LANDMARKS)
    return Cameras(cams.K, R, t), sources


def descend_with_landmark_cameras(model, feats, cams, landmarks2d, steps: int | None = None,
                                  keep_rotation: list[bool] | None = None, refine: bool = True,
                                  refine_placed: bool = REFINE_AFTER_PNP, prep: dict | None = None, graphs=None,
                                  convention: str = "mediapipe", blend: bool = True, **descend_kw):
    """The photo path: landmark PnP on the template, the descent, PnP once more on the result.

    ``Reconstructor`` (for estimated cameras) and ``glvd-train evaluate``'s "landmark cameras" rows both
    run this. Args: ``model`` a :class:`glvd.model.GLVD`; ``feats`` its encoding of one face;
    ``cams`` the model's estimate (``estimate_cameras``: the camera head, refined when the model has
    a camera refiner; batch 1, see :func:`landmark_cameras`); ``landmarks2d`` per view ``(68, 2)``
    crop pixels or None; ``keep_rotation`` the views that keep the estimate's rotation (default:
    :func:`wide_yaw_views` of ``cams``, decided once for both PnP passes); ``refine``: with a camera
    refiner, refine the views no landmarks placed once more on the result; ``refine_placed``: the
    landmark-placed ones too (default :data:`REFINE_AFTER_PNP`); ``prep`` ``model.prepare(feats)`` when
    the caller has it; ``graphs`` a :class:`glvd.cuda_graph.GraphedPipeline` whose last ``front`` gave
    ``feats`` and ``prep``, to run the descent and the refiner as its CUDA graphs; ``convention`` whose
    landmarks ``landmarks2d`` are (:func:`landmark_points`); ``blend``: blend PnP's rotations with
    ``cams``' where they agree (:data:`BLEND_MAX_DEG`, both PnP passes); ``descend_kw`` passed to ``model.descend``
    (on_step, cancel).
    Returns ``xs (1, T+1, N, 3)``, ``keypoints (1, T+1, K, 3)``, the final cameras (fitted to the
    reconstructed face where PnP placed a view) and, per view, where its camera came from.
    """
    import torch

    from .cameras import Cameras

    lm_ids = model.template.landmarks68
    wide = wide_yaw_views(cams) if keep_rotation is None else keep_rotation
    prep = model.prepare(feats) if prep is None else prep
    prior = cams if blend else None  # the model's estimate, before any landmarks
    cams, sources = landmark_cameras(cams, landmarks2d, model.template.vertices[lm_ids], wide, convention, prior)
    placed = [s != FROM_HEAD for s in sources]
    if graphs is not None:
        if steps is not None and steps != graphs.steps:
            raise ValueError(f"the CUDA graphs were captured for {graphs.steps} steps, not {steps}")
        xs, kps = graphs.descend(cams, **descend_kw)
    else:
        xs, kps = model.descend(feats, cams, steps, prep=prep, **descend_kw)
    if any(placed):
        # the reconstructed face's landmarks fit the photo better than the template's
        cams, again = landmark_cameras(cams, landmarks2d, xs[0, -1].cpu().numpy()[lm_ids], wide, convention,
                                       prior)
        # this pass's label where both passes placed the view; a view it could not place keeps the first
        # pass's camera and label, and so does one only this pass placed (the refiner replaces that below)
        sources = [a if p and a != FROM_HEAD else first for a, first, p in zip(again, sources, placed)]
    if refine and model.camera_refiner is not None and (refine_placed or not all(placed)):
        refined = graphs.refine_cameras(cams, xs[:, -1]) if graphs is not None else \
            model.refine_cameras(prep, feats, cams, xs[:, -1], rounds=POST_DESCENT_ROUNDS)
        use = torch.tensor([refine_placed or not p for p in placed], device=cams.R.device)
        cams = Cameras(cams.K, torch.where(use[None, :, None, None], refined.R, cams.R),
                       torch.where(use[None, :, None], refined.t, cams.t))
    return xs, kps, cams, sources
