"""MediaPipe Face Mesh (468/478 points) -> the 68-point iBUG/dlib layout.

Order of the 68: jaw 0-16 (from the subject's right ear, image left on a
frontal photo, round the chin), brows 17-26, nose bridge 27-30, nostrils
31-35, right eye 36-41, left eye 42-47, outer lips 48-59, inner lips 60-67.

The correspondence follows the published table of Peizhi Yan's
"Mediapipe_2_Dlib_Landmarks" (2024; a few 68-points are the mean of two mesh
vertices) and was checked by drawing both on photos (docs/photos.md).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from .errors import GLVDError

#: written by tools/calibrate_mediapipe_landmarks.py (docs/mediapipe_offsets.md)
OFFSETS_PATH = Path(__file__).with_name("assets") / "mediapipe68_offsets.json"

#: For each of the 68 points, the Face Mesh vertex ids averaged to make it.
MEDIAPIPE_TO_68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    # right brow 17-21 (outer -> inner), left brow 22-26 (inner -> outer)
    (70,), (63,), (105,), (66,), (107,),
    (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30, nostrils 31-35
    (168, 6), (197, 195), (5,), (4,),
    (75,), (97,), (2,), (326,), (305,),
    # right eye 36-41, left eye 42-47
    (33,), (160,), (158,), (133,), (153,), (144,),
    (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    # inner lips 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)  # fmt: skip

# (68, 2) index pairs: single vertices appear twice so one mean does all
_PAIRS = np.array([(ids[0], ids[-1]) for ids in MEDIAPIPE_TO_68], dtype=np.int64)


def mediapipe_to_68(points: np.ndarray) -> np.ndarray:
    """``(468 or 478, D)`` Face Mesh points -> ``(68, D)`` in the iBUG/dlib order."""
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[0] < 468:
        raise ValueError(f"expected (468|478, D) Face Mesh points, got {p.shape}")
    return p[_PAIRS].mean(axis=1).astype(p.dtype if np.issubdtype(p.dtype, np.floating) else np.float32)


@functools.lru_cache(maxsize=1)
def mediapipe68_offsets() -> np.ndarray:
    """``(68, 3)`` head-frame offsets (metres) from the kit's 68 landmark vertices to the points MediaPipe's
    mapped 68 mark, fitted on renders with the true shape and camera.

    The two conventions differ (MediaPipe's jaw and chin sit higher, docs/landmark_conventions.md), so PnP
    between MediaPipe's points and the bare vertices tilts and shifts the camera; against ``vertices +
    offsets`` it does not. Read-only. Raises :class:`glvd.errors.GLVDError` when the file is missing or
    broken (a damaged install).
    """
    try:
        a = np.asarray(json.loads(OFFSETS_PATH.read_text())["offsets_m"], np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GLVDError(f"the landmark calibration {OFFSETS_PATH} is missing or broken ({exc}): reinstall glvd") \
            from exc
    if a.shape != (68, 3) or not np.isfinite(a).all():
        raise GLVDError(f"the landmark calibration {OFFSETS_PATH} holds {a.shape}, not 68 finite 3D offsets")
    a.setflags(write=False)
    return a
