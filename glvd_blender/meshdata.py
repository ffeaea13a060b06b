"""Pure array helpers for the mesh writer (no bpy, unit-tested directly)."""

from __future__ import annotations

import hashlib
import re

import numpy as np

STEP_PREFIX = "GLVD "
BASIS_NAME = "Basis"
_STEP_RE = re.compile(r"^GLVD (\d{2,})$")


def step_key_name(step: int) -> str:
    """``GLVD 01`` ... ``GLVD 10`` (two digits at least, so the list sorts)."""
    return f"{STEP_PREFIX}{step:02d}"


def step_of_key(name: str) -> int | None:
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


def polygon_arrays(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(F, 4)`` faces (``-1`` pads triangles) -> ``loop_start``, ``loop_total``, ``vertex_index``."""
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2:
        raise ValueError(f"faces must be (F, k), got {faces.shape}")
    valid = faces >= 0
    # Blender needs the used corners first in each row; the kit pads at the end
    totals = valid.sum(axis=1).astype(np.int32)
    if (totals < 3).any():
        raise ValueError("a face has fewer than 3 corners")
    starts = np.zeros(len(faces), dtype=np.int32)
    np.cumsum(totals[:-1], out=starts[1:])
    return starts, totals, faces[valid].astype(np.int32)


_EDGE_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def edge_arrays(faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """The mesh's edges, as Blender builds them: ``edge_verts (E, 2)`` int32 and each loop's edge
    ``corner_edge (L,)`` int32, in the loop order of :func:`polygon_arrays` (cached per topology: every
    reconstruction of one checkpoint shares it)."""
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    key = hashlib.blake2b(faces.tobytes() + str((faces.shape, num_vertices)).encode(), digest_size=16).hexdigest()
    hit = _EDGE_CACHE.get(key)
    if hit is not None:
        return hit
    starts, totals, corners = polygon_arrays(faces)
    nxt = np.arange(len(corners)) + 1
    nxt[starts + totals - 1] = starts  # the last corner of a polygon joins its first
    a, b = corners.astype(np.int64), corners[nxt].astype(np.int64)
    uniq, inv = np.unique(np.minimum(a, b) * num_vertices + np.maximum(a, b), return_inverse=True)
    verts = np.stack([uniq // num_vertices, uniq % num_vertices], 1).astype(np.int32)
    out = (verts, inv.reshape(-1).astype(np.int32))
    if len(_EDGE_CACHE) >= 4:
        _EDGE_CACHE.clear()
    _EDGE_CACHE[key] = out
    return out


def loop_uvs(faces: np.ndarray, face_uvs: np.ndarray | None, uvs: np.ndarray | None) -> np.ndarray | None:
    """Per-loop ``(L, 2)`` UVs in the loop order of :func:`polygon_arrays`, or None."""
    if face_uvs is None or uvs is None or len(uvs) == 0:
        return None
    faces = np.asarray(faces)
    face_uvs = np.asarray(face_uvs, dtype=np.int64)
    if face_uvs.shape != faces.shape:
        return None
    idx = face_uvs[faces >= 0]
    if (idx < 0).any() or idx.max() >= len(uvs):
        return None
    return np.asarray(uvs, dtype=np.float32)[idx]


def step_keyframes(num_steps: int, frame_start: int, frames_per_step: int) -> dict[int, list[tuple[int, float]]]:
    """Keyframes that play the steps: at ``frame_start + i * frames_per_step`` step ``i`` is fully on.

    Step 0 (the template) is the Basis, so at ``frame_start`` every key is 0.
    Returns ``{step: [(frame, value), ...]}`` for steps 1..num_steps; the last
    key stays at 1 after its frame.
    """
    fps = max(1, int(frames_per_step))
    out: dict[int, list[tuple[int, float]]] = {}
    for i in range(1, num_steps + 1):
        f = frame_start + i * fps
        keys = [(f - fps, 0.0), (f, 1.0)]
        if i < num_steps:
            keys.append((f + fps, 0.0))
        out[i] = keys
    return out


def flat(a: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Contiguous 1-D copy for ``foreach_set`` (which wants exactly the right dtype)."""
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)

