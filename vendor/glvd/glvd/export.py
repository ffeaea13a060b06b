"""Mesh files: OBJ, PLY and glTF binary (.glb, one morph target per descent step)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np


def write_obj(path: str | Path, verts: np.ndarray, quads: np.ndarray, uvs: np.ndarray | None = None,
              quad_uvs: np.ndarray | None = None, texture: str | None = None, mtl_name: str | None = None) -> Path:
    """Quads with UVs; ``texture`` (a PNG beside the file) adds an .mtl beside it (``mtl_name``, default the
    OBJ's name with .mtl: a file written under a temporary name passes its final one)."""
    path = Path(path)
    lines = [f"# GLVD Face: {len(verts)} vertices, {len(quads)} quads, metres"]
    if texture:
        mtl = path.with_name(mtl_name) if mtl_name else path.with_suffix(".mtl")
        mtl.write_text(f"newmtl glvd_face\nKd 1 1 1\nmap_Kd {Path(texture).name}\n")
        lines += [f"mtllib {mtl.name}", "usemtl glvd_face"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    if uvs is not None and quad_uvs is not None:
        lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs]
        lines += ["f " + " ".join(f"{a + 1}/{t + 1}" for a, t in zip(q, qt, strict=True))
                  for q, qt in zip(quads, quad_uvs, strict=True)]
    else:
        lines += ["f " + " ".join(str(a + 1) for a in q) for q in quads]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """The ``v`` lines of an OBJ as ``(N, 3)`` float32 (for tests and comparisons)."""
    rows = [ln.split()[1:4] for ln in Path(path).read_text().splitlines() if ln.startswith("v ")]
    return np.asarray(rows, dtype=np.float32)


def write_ply(path: str | Path, verts: np.ndarray, quads: np.ndarray) -> Path:
    """ASCII PLY with quad faces."""
    path = Path(path)
    head = ["ply", "format ascii 1.0", f"element vertex {len(verts)}", "property float x", "property float y",
            "property float z", f"element face {len(quads)}", "property list uchar int vertex_indices", "end_header"]
    body = [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts] + ["4 " + " ".join(map(str, q)) for q in quads]
    path.write_text("\n".join(head + body) + "\n")
    return path


def _split_uv_seams(quads: np.ndarray, quad_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """glTF needs one UV per vertex: duplicate vertices on UV seams. Returns (vertex ids, uv ids, triangles)."""
    pairs = np.stack([quads.reshape(-1), quad_uvs.reshape(-1)], 1)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    corners = inv.reshape(-1, 4)
    tris = np.concatenate([corners[:, [0, 1, 2]], corners[:, [0, 2, 3]]], 0)
    return uniq[:, 0], uniq[:, 1], tris


def write_glb(path: str | Path, steps: np.ndarray, quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray,
              texture_png: bytes | None = None) -> Path:
    """A .glb whose base mesh is step 0 (the template) with one morph target per step; the last is on.

    Args:
        steps: ``(T+1, N, 3)`` vertices per step.
    """
    path = Path(path)
    vid, uid, tris = _split_uv_seams(quads, quad_uvs)
    base = steps[0][vid].astype(np.float32)
    tex = uvs[uid].astype(np.float32).copy()
    tex[:, 1] = 1.0 - tex[:, 1]  # glTF's v runs down the image
    blobs: list[bytes] = []
    views, accessors = [], []

    def add(arr: np.ndarray, target: int | None, comp: int, typ: str, minmax: bool = False) -> int:
        data = arr.tobytes()
        offset = sum(len(b) for b in blobs)
        blobs.append(data + b"\0" * ((-len(data)) % 4))
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target:
            view["target"] = target
        views.append(view)
        acc = {"bufferView": len(views) - 1, "componentType": comp, "count": int(arr.shape[0]), "type": typ}
        if minmax:
            acc["min"] = arr.min(0).tolist()
            acc["max"] = arr.max(0).tolist()
        accessors.append(acc)
        return len(accessors) - 1

    pos = add(base, 34962, 5126, "VEC3", True)
    uv = add(tex, 34962, 5126, "VEC2")
    idx = add(tris.astype(np.uint32).reshape(-1), 34963, 5125, "SCALAR")
    targets = [{"POSITION": add((s[vid] - steps[0][vid]).astype(np.float32), 34962, 5126, "VEC3", True)}
               for s in steps[1:]]
    T = len(targets)
    prim = {"attributes": {"POSITION": pos, "TEXCOORD_0": uv}, "indices": idx, "targets": targets}
    gltf = {
        "asset": {"version": "2.0", "generator": "GLVD Face"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "GLVD Face"}],
        "meshes": [{"name": "GLVD Face", "primitives": [prim], "weights": [0.0] * (T - 1) + [1.0] if T else [],
                    "extras": {"targetNames": [f"GLVD {i:02d}" for i in range(1, T + 1)]}}],
    }
    if texture_png is not None:
        img_view = len(views)
        offset = sum(len(b) for b in blobs)
        blobs.append(texture_png + b"\0" * ((-len(texture_png)) % 4))
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(texture_png)})
        gltf["images"] = [{"bufferView": img_view, "mimeType": "image/png"}]
        gltf["textures"] = [{"source": 0}]
        gltf["materials"] = [{"name": "GLVD Face", "pbrMetallicRoughness": {
            "baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 0.7}}]
        prim["material"] = 0
    binary = b"".join(blobs)
    gltf["buffers"] = [{"byteLength": len(binary)}]
    gltf["bufferViews"] = views
    gltf["accessors"] = accessors
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 4)
    out = struct.pack("<III", 0x46546C67, 2, 12 + 8 + len(js) + 8 + len(binary))
    out += struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(binary), 0x004E4942) + binary
    path.write_bytes(out)
    return path
