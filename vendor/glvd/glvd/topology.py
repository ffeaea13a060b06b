"""The template mesh: the ICT FaceKit face area that every reconstruction moves.

Holds the topology (quads, UVs), the 68 landmarks and the keypoints that guide
the descent. Loaded once from the kit (centimetres -> metres here, and only
here) and then carried inside the checkpoint, so inference needs no data folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CM_TO_M = 0.01
DEFAULT_KIT_RELATIVE = Path("..") / "shared" / "data" / "ict_facekit" / "ict_facekit_light.npz"


def default_kit_path() -> Path:
    """Where the ICT kit is looked for: ``$GLVD_KIT``, else ``../shared/...`` beside the repo."""
    env = os.environ.get("GLVD_KIT")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    return (repo / DEFAULT_KIT_RELATIVE).resolve()


@dataclass
class Template:
    """The face-area template. Arrays are numpy; metres; head frame."""

    vertices: np.ndarray  # (N, 3) float32
    quads: np.ndarray  # (F, 4) int64
    uvs: np.ndarray  # (U, 2) float32
    quad_uvs: np.ndarray  # (F, 4) int64, indices into uvs
    landmarks68: np.ndarray  # (68,) int64 vertex ids
    keypoint_ids: np.ndarray  # (K,) int64 vertex ids; the first 68 are the landmarks
    expressions: np.ndarray  # (E, N, 3) float16 deltas in metres
    expression_names: list[str] = field(default_factory=list)
    narrow_count: int = 0  # vertices [0, narrow_count) form the narrow face area

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    def triangles(self) -> np.ndarray:
        """``(2F, 3)`` triangles from the quads (split along the 0-2 diagonal)."""
        q = self.quads
        return np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], axis=0)

    def to_tensors(self) -> dict[str, torch.Tensor | str | int | list[str]]:
        """A dict that ``torch.save`` stores and ``torch.load(weights_only=True)`` reads."""
        return {
            "vertices": torch.from_numpy(np.ascontiguousarray(self.vertices, np.float32)),
            "quads": torch.from_numpy(np.ascontiguousarray(self.quads, np.int64)),
            "uvs": torch.from_numpy(np.ascontiguousarray(self.uvs, np.float32)),
            "quad_uvs": torch.from_numpy(np.ascontiguousarray(self.quad_uvs, np.int64)),
            "landmarks68": torch.from_numpy(np.ascontiguousarray(self.landmarks68, np.int64)),
            "keypoint_ids": torch.from_numpy(np.ascontiguousarray(self.keypoint_ids, np.int64)),
            "expressions": torch.from_numpy(np.ascontiguousarray(self.expressions, np.float16)),
            "expression_names": list(self.expression_names),
            "narrow_count": int(self.narrow_count),
        }

    @classmethod
    def from_tensors(cls, d: dict) -> Template:
        return cls(
            vertices=d["vertices"].numpy().astype(np.float32),
            quads=d["quads"].numpy().astype(np.int64),
            uvs=d["uvs"].numpy().astype(np.float32),
            quad_uvs=d["quad_uvs"].numpy().astype(np.int64),
            landmarks68=d["landmarks68"].numpy().astype(np.int64),
            keypoint_ids=d["keypoint_ids"].numpy().astype(np.int64),
            expressions=d["expressions"].numpy().astype(np.float16),
            expression_names=[str(n) for n in d["expression_names"]],
            narrow_count=int(d["narrow_count"]),
        )


def farthest_point_sampling(points: np.ndarray, count: int, seeds: np.ndarray) -> np.ndarray:
    """Greedy farthest-point samples, continuing from ``seeds``.

    Args:
        points: ``(N, 3)``.
        count: how many new indices to add.
        seeds: indices already chosen (they are not returned again).
    Returns:
        ``(count,)`` new indices, deterministic.
    """
    dist = np.full(points.shape[0], np.inf)
    for s in seeds:
        dist = np.minimum(dist, np.linalg.norm(points - points[s], axis=1))
    out = []
    for _ in range(count):
        i = int(np.argmax(dist))
        out.append(i)
        dist = np.minimum(dist, np.linalg.norm(points - points[i], axis=1))
    return np.asarray(out, dtype=np.int64)


def template_from_kit(kit: dict, extra_keypoints: int = 32) -> Template:
    """Build the face-area template from a loaded kit (a dict of arrays, kit units = cm)."""
    start, stop = (int(v) for v in kit["face_area"])
    assert start == 0, "the face area must start at vertex 0"
    n = stop
    verts = np.asarray(kit["mean"][:n], np.float32) * CM_TO_M
    polys = np.asarray(kit["polygons"])
    keep = np.all((polys >= 0) & (polys < n), axis=1)
    quads = polys[keep].astype(np.int64)
    quad_uvs_full = np.asarray(kit["polygon_uvs"])[keep].astype(np.int64)
    used, quad_uvs = np.unique(quad_uvs_full.reshape(-1), return_inverse=True)
    uvs = np.asarray(kit["uvs"], np.float32)[used]
    lm = np.asarray(kit["landmarks68"], np.int64)
    extra = farthest_point_sampling(verts, extra_keypoints, lm)
    expr = (np.asarray(kit["expression"][:, :n], np.float32) * CM_TO_M).astype(np.float16)
    narrow = int(kit["narrow_face_area"][1]) if "narrow_face_area" in kit else n
    return Template(
        vertices=verts,
        quads=quads,
        uvs=uvs,
        quad_uvs=quad_uvs.reshape(-1, 4).astype(np.int64),
        landmarks68=lm,
        keypoint_ids=np.concatenate([lm, extra]),
        expressions=expr,
        expression_names=[str(s) for s in kit["expression_names"]],
        narrow_count=narrow,
    )


def load_kit(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Load the ICT FaceKit npz (or a tiny kit with the same keys) into memory."""
    p = Path(path) if path is not None else default_kit_path()
    if not p.is_file():
        raise FileNotFoundError(
            f"ICT FaceKit not found at {p}; set GLVD_KIT or pass --kit (it lives in ../shared/data/ict_facekit/)"
        )
    with np.load(p) as d:
        return {k: d[k] for k in d.files}


def quad_corner_operator(quads: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Sparse CSR ``(N, F)`` matrix summing each quad's value into its four corners.

    A sparse matmul is ~30x faster than ``index_add_`` on the CPU for the 9k-quad face.
    """
    F_ = quads.shape[0]
    rows = quads.t().reshape(-1).cpu()
    cols = torch.arange(F_).repeat(4)
    order = torch.argsort(rows * F_ + cols)
    rows, cols = rows[order], cols[order]
    crow = torch.zeros(num_vertices + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=num_vertices), 0)
    return torch.sparse_csr_tensor(crow, cols, torch.ones(4 * F_), (num_vertices, F_), check_invariants=False)


def vertex_normals(verts: torch.Tensor, quads: torch.Tensor, corner_op: torch.Tensor | None = None) -> torch.Tensor:
    """Area-weighted unit vertex normals (no gradient when ``corner_op`` is used).

    Args:
        verts: ``(B, N, 3)``.
        quads: ``(F, 4)`` long.
        corner_op: optional :func:`quad_corner_operator` for these quads (fast path).
    Returns:
        ``(B, N, 3)``.
    """
    B, N, _ = verts.shape
    # one index_select for all four corners: a third of the time of four fancy-index gathers on the CPU
    corners = torch.index_select(verts, 1, quads.reshape(-1)).view(B, quads.shape[0], 4, 3)
    a, b, c, d = corners.unbind(2)
    fn = torch.cross(c - a, d - b, dim=-1)  # (B, F, 3) quad normal from its diagonals
    if corner_op is not None and corner_op.device == verts.device:
        with torch.no_grad():
            n = (corner_op @ fn.detach().permute(1, 0, 2).reshape(fn.shape[1], B * 3)).reshape(N, B, 3).permute(1, 0, 2)
    else:
        n = torch.zeros(B, N, 3, dtype=verts.dtype, device=verts.device)
        n.index_add_(1, quads.t().reshape(-1), fn.repeat(1, 4, 1))
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12)


def nearest_keypoints(verts: np.ndarray, keypoint_ids: np.ndarray, m: int) -> np.ndarray:
    """``(N, m)`` indices into the keypoints of each vertex's m nearest keypoints (template distances)."""
    kp = verts[keypoint_ids]
    d = np.linalg.norm(verts[:, None, :] - kp[None, :, :], axis=-1)
    return np.argsort(d, axis=1)[:, :m].astype(np.int64)
