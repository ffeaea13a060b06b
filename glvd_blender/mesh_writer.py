"""Write a reconstruction into a Blender mesh: geometry once, one shape key per step.

All positions arrive already in Blender's object space (see frames.py).
Bulk ``foreach_set`` everywhere: per-element ``.co =`` is 10-25x slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bpy
import numpy as np

from . import meshdata
from .meshdata import BASIS_NAME, flat, step_key_name, step_of_key

OBJECT_NAME = "GLVD Face"
MARKER = "glvd_face"  # custom property that marks our objects (value: extension version)
VERSION = "0.1.0"  # the project's one version, glvd.__version__ (tests/test_version.py checks they agree)


def is_glvd_object(obj: bpy.types.Object | None) -> bool:
    return obj is not None and obj.type == "MESH" and MARKER in obj


def build_mesh(
    name: str,
    co: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray | None = None,
    face_uvs: np.ndarray | None = None,
) -> bpy.types.Mesh:
    """A new mesh from ``(N, 3)`` positions and ``(F, 4)`` faces, smooth shaded, with UVs."""
    starts, _totals, corners = meshdata.polygon_arrays(faces)
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(co))
    set_positions(me, co)
    # Write the generic attributes directly: the per-loop RNA wrappers (loops.vertex_index,
    # uv_layers[].data.uv, polygons.use_smooth) cost ~25 ms here for 37k corners, these ~0.1 ms.
    # The edges come from numpy (cached per topology) rather than from me.update(calc_edges): 12 ms on the head.
    edge_verts, corner_edge = meshdata.edge_arrays(faces, len(co))
    me.loops.add(len(corners))
    corner_vert = me.attributes.get(".corner_vert")
    fast = corner_vert is not None and me.attributes.get(".corner_edge") is not None
    if fast:
        me.edges.add(len(edge_verts))
        me.attributes[".edge_verts"].data.foreach_set("value", edge_verts.reshape(-1))
        corner_vert.data.foreach_set("value", corners)
        me.attributes[".corner_edge"].data.foreach_set("value", corner_edge)
    else:  # older layouts
        me.loops.foreach_set("vertex_index", corners)
    me.polygons.add(len(starts))
    me.polygons.foreach_set("loop_start", starts)
    luv = meshdata.loop_uvs(faces, face_uvs, uvs)
    if luv is not None:
        # a FLOAT2 corner attribute is a UV map
        me.attributes.new("UVMap", "FLOAT2", "CORNER").data.foreach_set("vector", flat(luv))
    if hasattr(me, "shade_smooth"):  # Blender 4.1+
        me.shade_smooth()
    else:
        me.polygons.foreach_set("use_smooth", np.ones(len(starts), dtype=bool))
    me.update(calc_edges=not fast)
    return me


def set_positions(me: bpy.types.Mesh, co: np.ndarray) -> None:
    """The mesh's vertex positions (the generic attribute where there is one: ~20x faster than the RNA)."""
    position = me.attributes.get("position")
    if position is not None and position.data_type == "FLOAT_VECTOR" and position.domain == "POINT":
        position.data.foreach_set("vector", flat(co))
    else:
        me.vertices.foreach_set("co", flat(co))


def set_key(obj: bpy.types.Object, name: str, co: np.ndarray, relative_to: Any = None) -> Any:
    """Create (or overwrite, keeping its place in the list) shape key ``name`` with ``co``."""
    keys = obj.data.shape_keys
    kb = keys.key_blocks.get(name) if keys else None
    if kb is None:
        kb = obj.shape_key_add(name=name, from_mix=False)
    kb.points.foreach_set("co", flat(co))
    if relative_to is not None:
        kb.relative_key = relative_to
    return kb


def write_basis(obj: bpy.types.Object, co: np.ndarray) -> Any:
    """The Basis key and the mesh's own vertices both hold the starting template."""
    set_positions(obj.data, co)
    basis = set_key(obj, BASIS_NAME, co)
    obj.data.update()
    return basis


def write_step(obj: bpy.types.Object, step: int, co: np.ndarray) -> Any:
    """``GLVD NN`` for one descent step, shown at once (it is the newest)."""
    kb = set_key(obj, step_key_name(step), co, relative_to=obj.data.shape_keys.key_blocks[0])
    show_only(obj, kb.name)
    return kb


def step_keys(obj: bpy.types.Object) -> list[Any]:
    keys = obj.data.shape_keys
    if not keys:
        return []
    found = [(step_of_key(kb.name), kb) for kb in keys.key_blocks]
    return [kb for s, kb in sorted((p for p in found if p[0] is not None), key=lambda p: p[0])]


def show_only(obj: bpy.types.Object, name: str) -> None:
    """The step key ``name`` at 1, the other step keys at 0 (set explicitly: the default changed in 5.0)."""
    for kb in step_keys(obj):
        kb.value = 1.0 if kb.name == name else 0.0
    keys = obj.data.shape_keys.key_blocks
    obj.active_shape_key_index = keys.find(name)


def remove_steps_after(obj: bpy.types.Object, last: int) -> None:
    for kb in step_keys(obj):
        if (step_of_key(kb.name) or 0) > last:
            obj.shape_key_remove(kb)


def write_expressions(
    obj: bpy.types.Object, final_co: np.ndarray, deltas: np.ndarray, names: Sequence[str], relative_to: Any
) -> None:
    """53 ARKit keys, each ``result + delta`` and relative to the final step key.

    Relative to the result, a key at 1 adds exactly its delta on top of the
    reconstruction, so the face is rig-ready.
    """
    keys = np.add(np.asarray(deltas, np.float32), np.asarray(final_co, np.float32)[None])  # one allocation
    for name, co in zip(names, keys, strict=True):
        kb = set_key(obj, str(name), co, relative_to=relative_to)
        kb.value = 0.0
        kb.slider_min, kb.slider_max = 0.0, 1.0


def remove_keys(obj: bpy.types.Object, names: Sequence[str]) -> None:
    keys = obj.data.shape_keys
    if not keys:
        return
    for n in names:
        kb = keys.key_blocks.get(n)
        if kb is not None:
            obj.shape_key_remove(kb)


def pose_expressions(obj: bpy.types.Object, names: Sequence[str], weights: np.ndarray | None,
                     frame_start: int) -> None:
    """The ARKit keys ``names`` at each photo's weights ``(V, E)`` (None: all 0, the neutral face); with several
    photos one keyframe per photo (frame_start, frame_start + 1, ...), so scrubbing shows each photo's expression.
    An updated object's earlier expression keyframes are replaced."""
    keys = obj.data.shape_keys.key_blocks
    for e, name in enumerate(names):
        kb = keys.get(name)
        if kb is None:
            continue
        _clear_keyframes(kb)
        if weights is None:
            kb.value = 0.0
            continue
        for v in range(len(weights)):
            kb.value = float(weights[v][e])
            if len(weights) > 1:
                kb.keyframe_insert("value", frame=frame_start + v)
        kb.value = float(weights[0][e])


def animate_steps(obj: bpy.types.Object, frame_start: int, frames_per_step: int) -> None:
    """Keyframes that play the descent: frame_start = template, then one step per ``frames_per_step``."""
    keys = step_keys(obj)
    plan = meshdata.step_keyframes(len(keys), frame_start, frames_per_step)
    for kb in keys:
        _clear_keyframes(kb)  # an updated object: replace its old step curves
    for kb, (_, frames) in zip(keys, sorted(plan.items()), strict=True):
        for frame, value in frames:
            kb.value = value
            kb.keyframe_insert("value", frame=frame)


def _clear_keyframes(kb: Any) -> None:
    fc = _fcurve(kb)
    if fc is not None:
        fc.keyframe_points.clear()


def _fcurve(kb: Any) -> Any:
    """The F-curve of a key's value, across the 4.x (action.fcurves) and 5.x (layered) APIs."""
    anim = kb.id_data.animation_data
    if anim is None or anim.action is None:
        return None
    path = kb.path_from_id("value")
    action = anim.action
    curves = getattr(action, "fcurves", None)
    if curves is None:
        try:
            slot = anim.action_slot
            bag = action.layers[0].strips[0].channelbag(slot) if action.layers else None
            curves = bag.fcurves if bag is not None else None
        except (AttributeError, IndexError):
            curves = None
    if curves is None:
        return None
    return curves.find(path)


def snapshot(obj: bpy.types.Object) -> dict[str, Any]:
    """Everything an update may change, to put back after a cancel or an error."""
    me = obj.data
    co = np.empty(len(me.vertices) * 3, dtype=np.float32)
    me.vertices.foreach_get("co", co)
    keys: list[tuple[str, np.ndarray, float, str, float, float]] = []
    if me.shape_keys:
        for kb in me.shape_keys.key_blocks:
            kco = np.empty(len(kb.data) * 3, dtype=np.float32)
            kb.points.foreach_get("co", kco)
            keys.append((kb.name, kco, kb.value, kb.relative_key.name, kb.slider_min, kb.slider_max))
    props = {k: _plain(obj[k]) for k in obj.keys() if k.startswith("glvd")}
    return {"co": co, "keys": keys, "active": obj.active_shape_key_index, "props": props}


def _plain(value: Any) -> Any:
    """A copy of a custom property value (IDProperty groups/arrays are views into the object)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "to_list"):
        return value.to_list()
    return value


def restore(obj: bpy.types.Object, snap: dict[str, Any]) -> None:
    me = obj.data
    names = [k[0] for k in snap["keys"]]
    if me.shape_keys:
        for kb in list(me.shape_keys.key_blocks)[::-1]:
            if kb.name not in names:
                obj.shape_key_remove(kb)
    me.vertices.foreach_set("co", snap["co"])
    for name, kco, value, _, smin, smax in snap["keys"]:
        kb = set_key(obj, name, kco)
        kb.slider_min, kb.slider_max, kb.value = smin, smax, value
    if me.shape_keys:
        blocks = me.shape_keys.key_blocks
        for name, _, _, rel, *_ in snap["keys"]:
            if rel in blocks:
                blocks[name].relative_key = blocks[rel]
    for k in [k for k in obj.keys() if k.startswith("glvd")]:
        del obj[k]
    for k, v in snap["props"].items():
        obj[k] = v
    obj.active_shape_key_index = snap["active"]
    me.update()


def remove_object(obj: bpy.types.Object) -> None:
    """Delete an object we created, its mesh and its shape-key datablock with it."""
    me = obj.data
    bpy.data.objects.remove(obj, do_unlink=True)
    if me is not None and me.users == 0:
        bpy.data.meshes.remove(me)
