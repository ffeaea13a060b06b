"""Time writing a reconstruction into Blender (the bpy module): mesh + 11 step keys (+ 53 expression keys).

The extension's own mesh writer (glvd_blender/mesh_writer.py) on the whole head (``--mode head``, the
default: 26,719 vertices with its 8 part materials, the topology of the committed asset glvd/assets/head.npz;
target <= 60 ms) or the face area (``--mode face``: 9,409 vertices, the ICT face area's topology when ../shared
has the kit, else a 97x97 grid of the same size; target <= 30 ms). Prints medians over --repeats runs, and
each median divided by that of a fixed numpy reference workload timed in the same process (so figures from a
busy or a different machine can be compared).

    .venv/bin/python bench/bench_blender.py [--repeats 30] [--mode head|face]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bpy  # noqa: E402  (after sys.path: the extension package comes from the repo)

from glvd_blender import frames, material, mesh_writer  # noqa: E402
from glvd_blender.meshdata import step_key_name  # noqa: E402

STEPS = 10
EXPRESSIONS = 53
TARGET_S = {"head": 0.060, "face": 0.030}


def head_topology():
    """The whole head: template vertices, polygons, UVs, per-polygon materials and their looks."""
    sys.path.insert(0, str(REPO / "vendor" / "glvd"))
    from glvd.head import export_materials, head_topology as topo, load_asset

    a = load_asset()
    t = topo(a)
    looks = [{"name": m.name, "color": m.color, "alpha": m.alpha, "roughness": m.roughness,
              "textured": m.textured} for m in export_materials()]
    return (a.mean.astype(np.float32), t["polygons"], t["uvs"], t["polygon_uvs"], "whole head (glvd/assets/head.npz)",
            t["polygon_material"], looks)


def topology() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    try:
        from glvd.topology import default_kit_path, load_kit, template_from_kit

        if default_kit_path().is_file():
            t = template_from_kit(load_kit(default_kit_path()))
            return t.vertices, t.quads, t.uvs, t.quad_uvs, "ICT face area"
    except ImportError:
        pass
    side = 97  # 97 * 97 = 9,409
    u, v = np.meshgrid(np.linspace(-0.08, 0.08, side), np.linspace(-0.1, 0.1, side), indexing="ij")
    verts = np.stack([u, v, 0.05 * np.cos(u * 10)], -1).reshape(-1, 3).astype(np.float32)
    idx = np.arange(side * side).reshape(side, side)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    uvs = (verts[:, :2] - verts[:, :2].min(0)) / np.ptp(verts[:, :2], 0)
    return verts, quads, uvs.astype(np.float32), quads.copy(), "97x97 grid"


def write(
    steps: np.ndarray,
    quads: np.ndarray,
    uvs: np.ndarray,
    quad_uvs: np.ndarray,
    deltas: np.ndarray | None,
    names: list[str],
    parts: tuple | None = None,
) -> bpy.types.Object:
    """What ResultWriter.finish does for a new object, without the worker (``parts``: per-polygon material
    ids and the materials' looks, for the head)."""
    bl = frames.head_to_blender(steps)
    me = mesh_writer.build_mesh("GLVD Face", bl[0], quads, uvs, quad_uvs)
    obj = bpy.data.objects.new("GLVD Face", me)
    if parts is not None:
        material.part_materials(obj, parts[1], parts[0], "bench")
    bpy.context.scene.collection.objects.link(obj)
    basis = mesh_writer.write_basis(obj, bl[0])
    for i in range(1, len(bl)):
        mesh_writer.set_key(obj, step_key_name(i), bl[i], relative_to=basis)
    last = obj.data.shape_keys.key_blocks[step_key_name(len(bl) - 1)]
    if deltas is not None:
        mesh_writer.write_expressions(obj, bl[-1], frames.head_to_blender(deltas), names, relative_to=last)
    mesh_writer.show_only(obj, last.name)
    obj.data.update()
    return obj


def reference() -> None:
    """A fixed CPU workload (numpy sort + matmul) to normalise timings across machines."""
    rng = np.random.default_rng(0)
    a = rng.random(300_000)
    np.sort(a)
    m = rng.random((200, 200))
    m @ m


def timed(fn, repeats: int, cleanup=None) -> tuple[list[float], list[float]]:
    ts, refs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reference()
        refs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
        if cleanup:
            cleanup(out)
    return ts, refs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--mode", choices=("head", "face"), default="head")
    a = ap.parse_args()
    parts = None
    if a.mode == "head":
        tpl, quads, uvs, quad_uvs, source, pmat, looks = head_topology()
        parts = (pmat, looks)
    else:
        tpl, quads, uvs, quad_uvs, source = topology()
    N = len(tpl)
    target = TARGET_S[a.mode]
    rng = np.random.default_rng(1)
    steps = (tpl[None] + rng.normal(scale=1e-3, size=(STEPS + 1, N, 3))).astype(np.float32)
    deltas = rng.normal(scale=1e-3, size=(EXPRESSIONS, N, 3)).astype(np.float32)
    names = [f"expr{i:02d}" for i in range(EXPRESSIONS)]

    def cleanup(obj: bpy.types.Object) -> None:
        mats = [m for m in obj.data.materials if m is not None and material.LOOK not in m]  # the skin
        mesh_writer.remove_object(obj)
        for m in mats:  # the shared part materials stay, as in a file that already has a GLVD head
            bpy.data.materials.remove(m)

    print(f"bpy {bpy.app.version_string}, {N} vertices ({source}), {len(quads)} faces, {a.repeats} runs each")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work inflates the ms; "
          "the ratio to the reference is the steadier figure)")
    print(f"{'workload':44s} {'median ms':>10s} {'min ms':>8s} {'x reference':>12s}")
    ref_all: list[float] = []
    for label, d in (
        (f"mesh + {STEPS + 1} step keys", None),
        (f"mesh + {STEPS + 1} step keys + {EXPRESSIONS} expr", deltas),
    ):
        cleanup(write(steps, quads, uvs, quad_uvs, d, names, parts))  # warm-up (first-call allocations)
        ts, refs = timed(lambda d=d: write(steps, quads, uvs, quad_uvs, d, names, parts), a.repeats, cleanup)
        ref_all += refs
        med = statistics.median(ts)
        ratio = statistics.median(t / r for t, r in zip(ts, refs, strict=True))
        verdict = "ok" if med <= target else f"OVER the {target * 1000:.0f} ms target"
        print(f"{label:44s} {med * 1000:10.1f} {min(ts) * 1000:8.1f} {ratio:12.2f}   ({verdict})")
    print(f"{'reference workload (numpy sort + matmul)':44s} {statistics.median(ref_all) * 1000:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
