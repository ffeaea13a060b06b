"""The result in the scene: creates or updates the GLVD Face object from the worker's steps and result.

``ResultWriter`` writes each step as it arrives (``live_step``), rewrites everything from the final
result (``finish``: Basis, step keys, expression keys, keyframes, custom properties, texture), and puts
the scene back as it was when the job fails or is cancelled (``abort``). ``Options`` are the resolved
settings of one reconstruction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np

from . import frames, inputs, material, mesh_writer
from .job import remove_texture_file
from .meshdata import step_key_name
from .mesh_writer import VERSION

# template/quads/uvs of the last result per checkpoint: lets the first step of
# the next run appear live before the final result arrives
_topology_cache: dict[str, dict[str, Any]] = {}


class WriteError(Exception):
    pass


@dataclass
class Options:
    steps: int
    device: str
    target: str
    expressions: bool
    animate: bool
    frames_per_step: int
    use_cameras: bool
    checkpoint: str | None
    texture: int | None = None  # texture size, None: no texture
    lens_35mm: float | None = None  # lens of photos without EXIF focal length, None: the runtime's assumption
    mode: str = "head"  # "head" (the whole head) or "face" (the face area alone)
    # "PHOTO": the ARKit keys take each photo's expression weights (the mesh stays neutral); "NEUTRAL": all 0
    expression: str = "PHOTO"


def object_mode(obj: bpy.types.Object) -> str:
    """What a GLVD object holds: "head" or "face" (objects from before the head have the face area)."""
    return str(obj.get("glvd_mode") or "face")


class ResultWriter:
    """Creates or updates the result object; puts the scene back if anything fails or is cancelled."""

    def __init__(self, context: bpy.types.Context, opts: Options, photos: inputs.Inputs,
                 target: bpy.types.Object | None) -> None:
        self.context = context
        self.scene = context.scene
        self.opts = opts
        self.photos = photos
        self.created_name: str | None = None
        self.target_name = target.name if target is not None else None
        self.snap = mesh_writer.snapshot(target) if target is not None else None
        self.location = tuple(context.scene.cursor.location)
        self.collection = context.collection or context.scene.collection
        self.topology = _topology_cache.get(self._cache_key)
        self.warnings: list[str] = []  # the result is delivered, but something is missing (the texture)

    @property
    def _cache_key(self) -> str:
        return f"{self.opts.checkpoint or ''}|{self.opts.mode}"

    # where the result lives (looked up by name: undo or the user may have replaced the Python object)
    @property
    def obj(self) -> bpy.types.Object | None:
        name = self.target_name or self.created_name
        return bpy.data.objects.get(name) if name else None

    def obj_matrix(self) -> np.ndarray:
        if self.target_name:
            return np.array(bpy.data.objects[self.target_name].matrix_world)
        m = np.eye(4)
        m[:3, 3] = self.location
        return m

    def _create(self, template: np.ndarray, topo: dict[str, Any]) -> bpy.types.Object:
        me = mesh_writer.build_mesh(mesh_writer.OBJECT_NAME, frames.head_to_blender(template), topo["quads"],
                                    topo.get("uvs"), topo.get("quad_uvs"))
        obj = bpy.data.objects.new(mesh_writer.OBJECT_NAME, me)
        obj.location = self.location
        obj[mesh_writer.MARKER] = VERSION
        if topo.get("materials"):  # the whole head: one material per part (the skin takes the texture)
            material.part_materials(obj, topo["materials"], topo["polygon_material"], VERSION)
        self.collection.objects.link(obj)
        self.created_name = obj.name
        vl = self.context.view_layer
        for o in list(vl.objects.selected):
            if o is not None:  # the list can hold a just-removed object until the next depsgraph update
                o.select_set(False)
        obj.select_set(True)
        vl.objects.active = obj
        mesh_writer.write_basis(obj, frames.head_to_blender(template))
        return obj

    def live_step(self, step: int, vertices: np.ndarray, topology: dict[str, Any] | None = None) -> bool:
        """Show one step as soon as it arrives. False when it must wait for the final result.

        ``topology``: the job's ``topology`` event (template, quads, UVs), which the
        runtime sends before the first step; it wins over the cached one.
        """
        if topology is not None:
            self.topology = topology
        obj = self.obj
        if obj is None:
            if self.target_name is not None or self.created_name is not None:
                raise WriteError("the result object was removed while the reconstruction ran")
            topo = self.topology
            if topo is None or len(topo["template"]) != len(vertices):
                return False  # first run with this checkpoint: the topology comes with the result
            obj = self._create(topo["template"], topo)
        if len(obj.data.vertices) != len(vertices):
            raise WriteError(f"'{obj.name}' has {len(obj.data.vertices)} vertices, the result {len(vertices)}")
        mesh_writer.write_step(obj, step, frames.head_to_blender(vertices))
        obj.data.update()
        return True

    def finish(self, res: dict[str, Any], elapsed: float) -> bpy.types.Object:
        verts = frames.head_to_blender(res["vertices"])  # (T+1, N, 3); [0] is the template
        steps = verts.shape[0] - 1
        topo = {k: res.get(k) for k in ("quads", "uvs", "quad_uvs", "polygon_material", "materials")}
        topo["template"] = res.get("template") if res.get("template") is not None else res["vertices"][0]
        _topology_cache[self._cache_key] = topo
        obj = self.obj
        if obj is None:
            if self.target_name is not None or self.created_name is not None:
                raise WriteError("the result object was removed while the reconstruction ran")
            obj = self._create(res["vertices"][0], topo)
        if len(obj.data.vertices) != verts.shape[1]:
            raise WriteError(f"'{obj.name}' has {len(obj.data.vertices)} vertices but the result has "
                             f"{verts.shape[1]}: it was not made with this checkpoint and output mode")
        basis = mesh_writer.write_basis(obj, verts[0])
        for i in range(1, steps + 1):
            mesh_writer.set_key(obj, step_key_name(i), verts[i], relative_to=basis)
        mesh_writer.remove_steps_after(obj, steps)
        last = obj.data.shape_keys.key_blocks[step_key_name(steps)]
        names = [str(n) for n in (res.get("expression_names") or [])]
        old_names = list(obj.get("glvd_expression_names", []))
        with_expressions = bool(self.opts.expressions and res.get("expressions") is not None)
        if with_expressions:
            mesh_writer.remove_keys(obj, [n for n in old_names if n not in names])
            deltas = frames.head_to_blender(res["expressions"])
            mesh_writer.write_expressions(obj, verts[steps], deltas, names, relative_to=last)
            obj["glvd_expression_names"] = names
        else:
            mesh_writer.remove_keys(obj, old_names)
            obj["glvd_expression_names"] = []
        if self.opts.animate:
            mesh_writer.animate_steps(obj, self.scene.frame_start, self.opts.frames_per_step)
        mesh_writer.show_only(obj, last.name)
        if with_expressions:
            weights = res.get("expression_weights") if self.opts.expression == "PHOTO" else None
            mesh_writer.pose_expressions(obj, names, weights, self.scene.frame_start)
        self._record(obj, res, steps, elapsed)
        obj.data.update()
        if self.opts.texture:
            self._texture(obj, res)
        return obj

    def _texture(self, obj: bpy.types.Object, res: dict[str, Any]) -> None:
        """Last step of finish(): a texture that fails is a warning, the mesh stays; nothing half-made stays."""
        path = res.get("texture_png")
        try:
            if not path:
                reason = res.get("texture_error") or "the runtime sent no texture (an older runtime?)"
                self.warnings.append(f"no texture: {reason}")
                return
            img = material.apply_texture(obj, str(path), VERSION)
            obj["glvd_texture"] = img.name
        except material.TextureError as exc:
            self.warnings.append(f"no texture: {exc}")
        finally:
            remove_texture_file(res)  # packed (or useless): the temporary PNG goes

    def _record(self, obj: bpy.types.Object, res: dict[str, Any], steps: int, elapsed: float) -> None:
        obj[mesh_writer.MARKER] = VERSION
        obj["glvd_photos"] = [p.label for p in self.photos.photos]
        obj["glvd_steps"] = steps
        obj["glvd_mode"] = str(res.get("mode") or "face")
        obj["glvd_checkpoint"] = str(res.get("checkpoint") or "")
        obj["glvd_device"] = self.opts.device
        timings = {k: float(v) for k, v in (res.get("timings") or {}).items() if isinstance(v, int | float)}
        timings["blender_total_s"] = float(elapsed)
        obj["glvd_timings"] = timings
        if res.get("cameras") is not None:
            obj["glvd_cameras"] = json.dumps(res["cameras"])
        # where each photo's camera came from: glvd.pose's FROM_* labels ("landmarks", "landmarks, rotation
        # blended with the head's", "camera head", "head rotation + landmarks") or "given" (scene cameras)
        obj["glvd_camera_sources"] = [str(c) for c in res.get("camera_sources") or []]
        # where each photo's focal length came from: "EXIF", "camera" (scene camera) or the assumed distance
        obj["glvd_focal_sources"] = [str(c) for c in res.get("focal_sources") or []]
        # the same as codes a script can test (given, exif, lens, camera, assumed), and the assumed distance
        obj["glvd_focal_codes"] = [str(c) for c in res.get("focal_codes") or []]
        obj["glvd_assumed_distance_m"] = float(res.get("assumed_distance_m") or 0.0)
        # each photo's ARKit weights as the model read them (whatever the Expression option), for scripts
        w = res.get("expression_weights")
        obj["glvd_expression_weights"] = json.dumps([] if w is None else [[round(float(x), 4) for x in row]
                                                                          for row in w])

    def abort(self) -> None:
        """Leave the scene as it was: remove what we created, restore what we updated."""
        try:
            if self.created_name and (obj := bpy.data.objects.get(self.created_name)) is not None:
                mesh_writer.remove_object(obj)
            elif self.target_name and self.snap and (obj := bpy.data.objects.get(self.target_name)) is not None:
                mesh_writer.restore(obj, self.snap)
        except ReferenceError:
            pass
        self.created_name = None
