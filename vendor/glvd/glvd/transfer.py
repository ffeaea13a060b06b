"""Expression transfer: carry the kit's blendshape deltas onto a reconstructed face.

Each delta is expressed in the template's local surface frame at its vertex
(normal + a tangent toward a fixed neighbour) and re-expressed in the result's
frame, scaled by the ratio of the faces' sizes. Same topology, so the 53 ARKit
shapes stay rig-ready on every result.

Those local frames sit on a reconstructed surface whose normals are noisy: taken as they are, neighbouring
deltas differ by up to 37 mm at jawOpen on the astronaut (the kit's own: at most 3.2 mm), which tears the
lips. So what the frames change about the kit's deltas (moved by the similarity from the template onto the
result) is smoothed over the face (:func:`smooth_over_mesh`): the change stays where it is large and
smooth (a wider jaw, a fuller lip), the per-vertex noise goes. The whole head (:mod:`glvd.head`) takes
these deltas for its face area as they are.
"""

from __future__ import annotations

import numpy as np
import torch

from .head import similarity
from .topology import vertex_normals

#: lazy Jacobi iterations of the smoothing of the transfer's change (a few rings of the face mesh)
SMOOTH_ITERATIONS = 30


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


def smooth_over_mesh(values: np.ndarray, polygons: np.ndarray, n: int) -> np.ndarray:
    """``(E, n, 3)`` values on vertices ``[0, n)``, smoothed along the edges of the polygons among them
    (``(P, 4)``, -1 pads triangles; polygons with other vertices are left out): the umbrella operator,
    :data:`SMOOTH_ITERATIONS` lazy Jacobi iterations."""
    import scipy.sparse as sp

    P = np.asarray(polygons)
    P = P[np.all((P >= 0) & (P < n), axis=1)]
    e = np.concatenate([P[:, [0, 1]], P[:, [1, 2]], P[:, [2, 3]], P[:, [3, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    adj = sp.csr_matrix((np.ones(len(e), np.float32), (e[:, 0], e[:, 1])), shape=(n, n))
    adj.data[:] = 1.0
    deg = np.maximum(np.asarray(adj.sum(1)).ravel(), 1.0)
    W = (sp.diags((0.5 / deg).astype(np.float32)) @ adj).tocsr()
    E = values.shape[0]
    x = np.ascontiguousarray(values.transpose(1, 0, 2).reshape(n, E * 3), np.float32)
    for _ in range(SMOOTH_ITERATIONS):
        x = 0.5 * x + W @ x
    return x.reshape(n, E, 3).transpose(1, 0, 2).astype(np.float32)


def transfer_expressions(template: np.ndarray, result: np.ndarray, quads: np.ndarray, deltas: np.ndarray,
                         smooth: bool = True) -> np.ndarray:
    """Move expression deltas from the template onto a result.

    Args:
        template, result: ``(N, 3)`` vertices.
        quads: ``(F, 4)``.
        deltas: ``(E, N, 3)`` on the template.
        smooth: smooth what the local frames change about the deltas (see the module's text); False gives the
            frames' deltas as they are.
    Returns:
        ``(E, N, 3)`` float32 deltas for the result.
    """
    nb = _neighbour(quads, template.shape[0])
    Ft = _frames(template.astype(np.float32), quads, nb)
    Fr = _frames(result.astype(np.float32), quads, nb)
    scale = np.sqrt(((result - result.mean(0)) ** 2).sum() / max(((template - template.mean(0)) ** 2).sum(), 1e-12))
    local = np.einsum("nij,enj->eni", Ft, deltas)  # coordinates in the template's frames
    out = (np.einsum("nji,enj->eni", Fr, local) * scale).astype(np.float32)
    if not smooth:
        return out
    s, R, _ = similarity(np.asarray(template, np.float64), np.asarray(result, np.float64))
    moved = (np.asarray(deltas, np.float32) @ (s * R.T).astype(np.float32))  # the kit's, rotated and scaled
    return moved + smooth_over_mesh(out - moved, quads, template.shape[0])
