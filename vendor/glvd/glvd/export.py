"""Mesh files: OBJ, PLY and glTF binary (.glb, one morph target per descent step and per ARKit expression).

Faces are ``(F, 4)`` vertex ids; ``-1`` in the last column marks a triangle (the whole head has some). A mesh
with several materials (the whole head, :mod:`glvd.head`) passes ``polygon_material (F,)`` ids into
``materials``, a list of :class:`Material`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Material:
    """A material of an exported mesh: a flat colour (linear RGB), or the baked texture where ``textured``."""

    name: str
    color: tuple[float, float, float] = (0.8, 0.8, 0.8)
    alpha: float = 1.0
    roughness: float = 0.7
    textured: bool = False


FACE_MATERIAL = Material("GLVD Face", (1.0, 1.0, 1.0), 1.0, 0.7, True)


def _obj_name(m: Material) -> str:
    return m.name.lower().replace(" ", "_")  # "GLVD Face" -> glvd_face


def _faces(quads: np.ndarray) -> list[np.ndarray]:
    q = np.asarray(quads, np.int64)
    return [row[row >= 0] for row in q] if (q < 0).any() else list(q)


def _groups(n_faces: int, polygon_material: np.ndarray | None, materials: Sequence[Material] | None
            ) -> list[tuple[Material, np.ndarray]]:
    """(material, face ids) per material in use; one group of every face without materials."""
    if polygon_material is None or not materials:
        return [(FACE_MATERIAL, np.arange(n_faces))]
    pm = np.asarray(polygon_material, np.int64)
    if pm.shape != (n_faces,) or pm.min() < 0 or pm.max() >= len(materials):
        raise ValueError(f"polygon_material must be ({n_faces},) ids into {len(materials)} materials")
    return [(m, np.nonzero(pm == i)[0]) for i, m in enumerate(materials) if (pm == i).any()]


def write_obj(path: str | Path, verts: np.ndarray, quads: np.ndarray, uvs: np.ndarray | None = None,
              quad_uvs: np.ndarray | None = None, texture: str | None = None, mtl_name: str | None = None,
              polygon_material: np.ndarray | None = None, materials: Sequence[Material] | None = None) -> Path:
    """Polygons with UVs. An .mtl goes beside it (``mtl_name``, default the OBJ's name with .mtl: a file
    written under a temporary name passes its final one) when there is a ``texture`` (a PNG beside the file,
    on the textured material) or materials."""
    path = Path(path)
    faces = _faces(quads)
    lines = [f"# GLVD Face: {len(verts)} vertices, {len(faces)} polygons, metres"]
    groups = _groups(len(faces), polygon_material, materials)
    with_mtl = bool(texture) or (materials is not None and polygon_material is not None)
    if with_mtl:
        mtl = path.with_name(mtl_name) if mtl_name else path.with_suffix(".mtl")
        blocks = []
        for m, _ in groups:
            b = [f"newmtl {_obj_name(m)}", "Kd {:.4f} {:.4f} {:.4f}".format(*m.color), f"d {m.alpha:g}"]
            if m.textured and texture:
                b[1] = "Kd 1 1 1"
                b.append(f"map_Kd {Path(texture).name}")
            blocks.append("\n".join(b))
        mtl.write_text("\n\n".join(blocks) + "\n")
        lines.append(f"mtllib {mtl.name}")
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    has_uv = uvs is not None and quad_uvs is not None
    if has_uv:
        lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs]
        fuv = np.asarray(quad_uvs, np.int64)
    for m, ids in groups:
        if with_mtl:
            lines.append(f"usemtl {_obj_name(m)}")
        for i in ids:
            f = faces[i]
            if has_uv:
                lines.append("f " + " ".join(f"{a + 1}/{t + 1}" for a, t in zip(f, fuv[i][: len(f)], strict=True)))
            else:
                lines.append("f " + " ".join(str(a + 1) for a in f))
    path.write_text("\n".join(lines) + "\n")
    return path


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """The ``v`` lines of an OBJ as ``(N, 3)`` float32 (for tests and comparisons)."""
    rows = [ln.split()[1:4] for ln in Path(path).read_text().splitlines() if ln.startswith("v ")]
    return np.asarray(rows, dtype=np.float32)


def write_ply(path: str | Path, verts: np.ndarray, quads: np.ndarray) -> Path:
    """ASCII PLY with polygon faces."""
    path = Path(path)
    faces = _faces(quads)
    head = ["ply", "format ascii 1.0", f"element vertex {len(verts)}", "property float x", "property float y",
            "property float z", f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    body = [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts] + [f"{len(q)} " + " ".join(map(str, q)) for q in faces]
    path.write_text("\n".join(head + body) + "\n")
    return path


def _split_uv_seams(quads: np.ndarray, quad_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """glTF needs one UV per vertex: duplicate vertices on UV seams. Returns (vertex ids, uv ids, triangles);
    rows of ``quads`` with ``-1`` last are triangles."""
    q = np.asarray(quads, np.int64)
    qu = np.asarray(quad_uvs, np.int64)
    valid = q >= 0
    pairs = np.stack([q[valid], qu[valid]], 1)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    corners = np.full(q.shape, -1, np.int64)
    corners[valid] = inv.reshape(-1)
    quad = valid[:, 3]
    tris = np.concatenate([corners[:, [0, 1, 2]], corners[quad][:, [0, 2, 3]]], 0)
    return uniq[:, 0], uniq[:, 1], tris


class _Buffer:
    """The .glb's binary chunk, its buffer views and accessors."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        offset = sum(len(b) for b in self.blobs)
        self.blobs.append(data + b"\0" * ((-len(data)) % 4))
        v = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target:
            v["target"] = target
        self.views.append(v)
        return len(self.views) - 1

    def add(self, arr: np.ndarray, target: int | None, comp: int, typ: str, minmax: bool = False) -> int:
        acc = {"bufferView": self.view(arr.tobytes(), target), "componentType": comp, "count": int(arr.shape[0]),
               "type": typ}
        if minmax:
            acc["min"] = arr.min(0).tolist()
            acc["max"] = arr.max(0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def add_delta(self, d: np.ndarray) -> int:
        """A morph target's positions: a sparse accessor when most rows are zero (ARKit keys), else dense."""
        d = np.ascontiguousarray(d, np.float32)
        rows = np.nonzero(np.abs(d).max(1) > 0)[0].astype(np.uint32)
        if len(rows) > len(d) // 3:
            return self.add(d, 34962, 5126, "VEC3", True)
        acc = {"componentType": 5126, "count": len(d), "type": "VEC3",
               "min": d.min(0).tolist(), "max": d.max(0).tolist()}
        if len(rows):
            acc["sparse"] = {"count": len(rows), "indices": {"bufferView": self.view(rows.tobytes()),
                                                                   "componentType": 5125},
                             "values": {"bufferView": self.view(d[rows].tobytes())}}
        self.accessors.append(acc)
        return len(self.accessors) - 1


def write_glb(path: str | Path, steps: np.ndarray, quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray,
              texture_png: bytes | None = None, expressions: np.ndarray | None = None,
              expression_names: Sequence[str] | None = None, polygon_material: np.ndarray | None = None,
              materials: Sequence[Material] | None = None, name: str = "GLVD Face",
              expression_weights: Sequence[float] | None = None) -> Path:
    """A .glb whose base mesh is step 0 (the template) with one morph target per step (the last one on), then
    one per expression (``expressions (E, N, 3)`` deltas on the final step, at ``expression_weights`` (E,) by
    default, e.g. the photo's, else off); one primitive per material (the textured one shows ``texture_png``).

    Args:
        steps: ``(T+1, N, 3)`` vertices per step.
    """
    path = Path(path)
    steps = np.asarray(steps, np.float32)
    q = np.asarray(quads, np.int64)
    qu = np.asarray(quad_uvs, np.int64)
    groups = _groups(len(q), polygon_material, materials)
    names = [f"GLVD {i:02d}" for i in range(1, len(steps))]
    if expressions is not None:
        expressions = np.asarray(expressions, np.float32)
        if expressions.shape[1:] != steps.shape[1:] or len(expression_names or []) != len(expressions):
            raise ValueError("expressions must be (E, N, 3) with one name each")
        names += [str(n) for n in expression_names]
    buf = _Buffer()
    gltf: dict = {"asset": {"version": "2.0", "generator": "GLVD Face"}}
    mats, prims = [], []
    if texture_png is not None and any(m.textured for m, _ in groups):
        gltf["images"] = [{"bufferView": buf.view(texture_png), "mimeType": "image/png"}]
        gltf["textures"] = [{"source": 0}]
    for m, ids in groups:
        vid, uid, tris = _split_uv_seams(q[ids], qu[ids])
        tex = uvs[uid].astype(np.float32).copy()
        tex[:, 1] = 1.0 - tex[:, 1]  # glTF's v runs down the image
        base = steps[0][vid]
        targets = [{"POSITION": buf.add_delta(s[vid] - base)} for s in steps[1:]]
        if expressions is not None:
            targets += [{"POSITION": buf.add_delta(e[vid])} for e in expressions]
        prim = {"attributes": {"POSITION": buf.add(base, 34962, 5126, "VEC3", True),
                               "TEXCOORD_0": buf.add(tex, 34962, 5126, "VEC2")},
                "indices": buf.add(tris.astype(np.uint32).reshape(-1), 34963, 5125, "SCALAR"), "targets": targets}
        pbr = {"baseColorFactor": [*m.color, m.alpha], "metallicFactor": 0.0, "roughnessFactor": m.roughness}
        if m.textured:
            if "textures" not in gltf:
                if materials is None:  # the face alone without a texture: no material, as before
                    prims.append(prim)
                    continue
            else:
                pbr["baseColorTexture"] = {"index": 0}
                pbr["baseColorFactor"] = [1.0, 1.0, 1.0, m.alpha]
        mat = {"name": m.name, "pbrMetallicRoughness": pbr}
        if m.alpha < 1.0:
            mat["alphaMode"] = "BLEND"
        prim["material"] = len(mats)
        mats.append(mat)
        prims.append(prim)
    T = len(steps) - 1
    weights = [0.0] * (T - 1) + [1.0] if T else []
    if expression_weights is not None and expressions is not None:
        if len(expression_weights) != len(expressions):
            raise ValueError(f"{len(expression_weights)} expression weights for {len(expressions)} expressions")
        weights += [float(w) for w in expression_weights]
    weights += [0.0] * (len(names) - len(weights))
    gltf.update({"scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": name}],
                 "meshes": [{"name": name, "primitives": prims, "weights": weights,
                             "extras": {"targetNames": names}}]})
    if mats:
        gltf["materials"] = mats
    binary = b"".join(buf.blobs)
    gltf["buffers"] = [{"byteLength": len(binary)}]
    gltf["bufferViews"] = buf.views
    gltf["accessors"] = buf.accessors
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 4)
    out = struct.pack("<III", 0x46546C67, 2, 12 + 8 + len(js) + 8 + len(binary))
    out += struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(binary), 0x004E4942) + binary
    path.write_bytes(out)
    return path
