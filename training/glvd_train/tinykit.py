"""A tiny stand-in for the ICT kit, for tests and smoke runs without ../shared.

It has the kit's keys and units (centimetres) but a small, made-up face: a
bumpy half-ellipsoid "face area" in front of a closed "back head", with a
handful of identity and expression modes. Good enough to exercise every code
path (rendering, training, evaluation) in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EXPRESSION_NAMES = [f"expr{i:02d}" for i in range(53)]


def _grid_surface(rows: int, cols: int, theta_range: tuple[float, float], phi_range: tuple[float, float]):
    th = np.linspace(*theta_range, rows)
    ph = np.linspace(*phi_range, cols)
    T, P = np.meshgrid(th, ph, indexing="ij")
    # ellipsoid: 8 cm wide, 11 cm tall, 10 cm deep; the face looks along +z
    x = 8.0 * np.sin(T) * np.sin(P)
    y = 11.0 * np.cos(T)
    z = 10.0 * np.sin(T) * np.cos(P)
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    idx = np.arange(rows * cols).reshape(rows, cols)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    uv = np.stack(np.meshgrid(np.linspace(0, 1, rows), np.linspace(0, 1, cols), indexing="ij"), -1).reshape(-1, 2)
    return verts, quads, uv


def make_tiny_kit(path: str | Path, seed: int = 0, rows: int = 24, cols: int = 24) -> Path:
    """Write a tiny kit npz to ``path`` and return the path."""
    rng = np.random.default_rng(seed)
    fv, fq, fuv = _grid_surface(rows, cols, (0.35, 2.8), (-1.2, 1.2))
    # the grid order winds quads so that their normals point outwards

    bv, bq, buv = _grid_surface(rows, cols, (0.2, 2.95), (1.3, 2 * np.pi - 1.3))

    n_face = fv.shape[0]
    mean = np.concatenate([fv, bv]).astype(np.float32)
    polys = np.concatenate([fq, bq + n_face]).astype(np.int32)
    uvs = np.concatenate([fuv * 0.5, buv * 0.5 + 0.5]).astype(np.float32)
    n = mean.shape[0]
    # smooth random modes: low-order polynomials of position
    basis = np.stack([np.ones(n), mean[:, 0] / 8, mean[:, 1] / 11, mean[:, 2] / 10,
                      (mean[:, 0] / 8) ** 2, (mean[:, 1] / 11) ** 2, mean[:, 0] * mean[:, 1] / 88], 1)
    identity = np.einsum("nb,kbc->knc", basis, rng.normal(0, 0.25, (10, basis.shape[1], 3)))
    expression = np.einsum("nb,kbc->knc", basis, rng.normal(0, 0.15, (53, basis.shape[1], 3)))
    lm = np.linspace(0, n_face - 1, 68).round().astype(np.int32)
    return _write(path, mean, identity, expression, polys, uvs, lm, n_face)


def _write(path, mean, identity, expression, polys, uvs, lm, n_face) -> Path:
    path = Path(path)
    np.savez(
        path,
        mean=mean,
        identity=identity.astype(np.float16),
        expression=expression.astype(np.float16),
        expression_names=np.asarray(EXPRESSION_NAMES),
        polygons=polys,
        polygon_uvs=polys.copy(),
        uvs=uvs,
        polygon_material=np.where(np.arange(len(polys)) < (polys < n_face).all(1).sum(), 0, 1).astype(np.int16),
        material_names=np.asarray(["M_Face", "M_BackHead"]),
        landmarks68=lm,
        face_area=np.asarray([0, n_face], np.int32),
        narrow_face_area=np.asarray([0, int(n_face * 0.7)], np.int32),
    )
    return path
