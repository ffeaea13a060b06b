"""Expression transfer: carry the kit's blendshape deltas onto a reconstructed face.

Each delta is expressed in the template's local surface frame at its vertex
(normal + a tangent toward a fixed neighbour) and re-expressed in the result's
frame, scaled by the ratio of the faces' sizes. Same topology, so the 53 ARKit
shapes stay rig-ready on every result.
"""

from __future__ import annotations

import numpy as np
import torch

from .topology import vertex_normals


def _frames(verts: np.ndarray, quads: np.ndarray, neighbour: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` rows: tangent, bitangent, normal."""
    n = vertex_normals(torch.from_numpy(verts[None].astype(np.float32)), torch.from_numpy(quads))[0].numpy()
    e = verts[neighbour] - verts
    t = e - (e * n).sum(-1, keepdims=True) * n
    t /= np.linalg.norm(t, axis=-1, keepdims=True).clip(1e-12)
    b = np.cross(n, t)
    return np.stack([t, b, n], axis=1)


def _neighbour(quads: np.ndarray, n: int) -> np.ndarray:
    """For each vertex, the next corner of the first quad that holds it (a fixed, deterministic neighbour)."""
    nb = np.full(n, -1, dtype=np.int64)
    nxt = np.roll(quads, -1, axis=1)
    for c in range(4):
        free = nb[quads[:, c]] < 0
        nb[quads[free, c]] = nxt[free, c]
    missing = nb < 0
    nb[missing] = (np.nonzero(missing)[0] + 1) % n  # isolated vertices: any other vertex
    return nb


def transfer_expressions(template: np.ndarray, result: np.ndarray, quads: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Move expression deltas from the template onto a result.

    Args:
        template, result: ``(N, 3)`` vertices.
        quads: ``(F, 4)``.
        deltas: ``(E, N, 3)`` on the template.
    Returns:
        ``(E, N, 3)`` float32 deltas for the result.
    """
    nb = _neighbour(quads, template.shape[0])
    Ft = _frames(template.astype(np.float32), quads, nb)
    Fr = _frames(result.astype(np.float32), quads, nb)
    scale = np.sqrt(((result - result.mean(0)) ** 2).sum() / max(((template - template.mean(0)) ** 2).sum(), 1e-12))
    local = np.einsum("nij,enj->eni", Ft, deltas)  # coordinates in the template's frames
    return (np.einsum("nji,enj->eni", Fr, local) * scale).astype(np.float32)
