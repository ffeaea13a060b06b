"""Operators: Reconstruct Face (modal in the UI, synchronous in background mode), photo list, runtime check."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import engine, frames, inputs, material, mesh_writer, preferences
from .engine import WorkerError
from .inputs import InputError
from .job import Job, Request, Timeouts, Update, focal_note, remove_texture_file
from .meshdata import step_key_name
from .properties import GLVD_PG_image_input, SCENE_DEVICE_ITEMS, TARGET_ITEMS, TEXTURE_SIZE_ITEMS

VERSION = "0.1.0"
# template/quads/uvs of the last result per checkpoint: lets the first step of
# the next run appear live before the final result arrives
_topology_cache: dict[str, dict[str, Any]] = {}
_checking_runtime = False


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


def worker_for(prefs: preferences.Prefs) -> engine.Worker:
    python = preferences.python_executable(prefs)
    return engine.get_worker(engine.worker_command(python), engine.worker_env(_sys_path()))


def _sys_path() -> list[str]:
    import sys

    # the worker must see what Blender sees: the extension's wheels (glvd, torch) are on it
    return list(sys.path)


def timeouts_for(prefs: preferences.Prefs) -> Timeouts:
    return Timeouts(startup=prefs.startup_timeout, silence=prefs.step_timeout)


def redraw_ui(context: bpy.types.Context) -> None:
    wm = context.window_manager
    for win in wm.windows:
        for area in win.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES", "PROPERTIES"}:
                area.tag_redraw()


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
        self.topology = _topology_cache.get(opts.checkpoint or "")
        self.warnings: list[str] = []  # the result is delivered, but something is missing (the texture)

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
        topo = {k: res.get(k) for k in ("quads", "uvs", "quad_uvs")}
        topo["template"] = res.get("template") if res.get("template") is not None else res["vertices"][0]
        _topology_cache[self.opts.checkpoint or ""] = topo
        obj = self.obj
        if obj is None:
            if self.target_name is not None or self.created_name is not None:
                raise WriteError("the result object was removed while the reconstruction ran")
            obj = self._create(res["vertices"][0], topo)
        if len(obj.data.vertices) != verts.shape[1]:
            raise WriteError(f"'{obj.name}' has {len(obj.data.vertices)} vertices but the result has "
                             f"{verts.shape[1]}: it was not made with this checkpoint")
        basis = mesh_writer.write_basis(obj, verts[0])
        for i in range(1, steps + 1):
            mesh_writer.set_key(obj, step_key_name(i), verts[i], relative_to=basis)
        mesh_writer.remove_steps_after(obj, steps)
        last = obj.data.shape_keys.key_blocks[step_key_name(steps)]
        names = [str(n) for n in (res.get("expression_names") or [])]
        old_names = list(obj.get("glvd_expression_names", []))
        if self.opts.expressions and res.get("expressions") is not None:
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


def _focal_note(obj: bpy.types.Object) -> str:
    return focal_note(list(obj.get("glvd_focal_codes") or []), float(obj.get("glvd_assumed_distance_m") or 0.0))


class GLVD_OT_reconstruct_face(bpy.types.Operator):
    """Reconstruct a face mesh from the reference photos, one shape key per descent step"""

    bl_idname = "glvd.reconstruct_face"
    bl_label = "Reconstruct Face"
    # UNDO: one undo step removes the whole result. No REGISTER: a redo panel
    # would silently re-run the whole model on every tweak.
    bl_options = {"UNDO"}

    # the photos, as Blender's import operators take them: filepath= for one, directory= + files= for several
    # (default: the panel's list); images= is the older form, items with a filepath, kept for old scripts
    filepath: StringProperty(name="File", subtype="FILE_PATH", options={"SKIP_SAVE"},
                             description="One photo (default: the panel's list)")
    directory: StringProperty(name="Folder", subtype="DIR_PATH", options={"SKIP_SAVE"},
                              description="The folder of the photos named in files")
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, name="Files", options={"SKIP_SAVE"},
                              description="Photos in directory, by name (default: the panel's list)")
    images: CollectionProperty(type=GLVD_PG_image_input, name="Images", options={"SKIP_SAVE"},
                               description="Photos as items with a filepath (older scripts; prefer filepath/files)")
    steps: IntProperty(name="Steps", default=10, min=1, max=30, options={"SKIP_SAVE"})
    device: EnumProperty(name="Device", items=SCENE_DEVICE_ITEMS, default="PREFS", options={"SKIP_SAVE"})
    target: EnumProperty(name="Result", items=TARGET_ITEMS, default="NEW", options={"SKIP_SAVE"})
    expressions: BoolProperty(name="ARKit Expressions", default=True, options={"SKIP_SAVE"})
    animate: BoolProperty(name="Animate Steps", default=False, options={"SKIP_SAVE"})
    frames_per_step: IntProperty(name="Frames per Step", default=5, min=1, max=250, options={"SKIP_SAVE"})
    use_cameras: BoolProperty(name="Use Scene Cameras", default=True, options={"SKIP_SAVE"})
    lens_35mm: FloatProperty(name="Lens (35 mm equiv.)", default=0.0, min=0.0, max=1200.0, options={"SKIP_SAVE"},
                             description="Lens of photos without an EXIF focal length (mm, 35 mm equivalent); "
                             "0: assume the face 1.2 m away")
    checkpoint: StringProperty(name="Checkpoint", subtype="FILE_PATH", default="", options={"SKIP_SAVE"},
                               description="Checkpoint override (default: preferences, else the shipped one)")
    texture: BoolProperty(name="Bake Texture", default=True, options={"SKIP_SAVE"},
                          description="Bake the photos into a UV texture and add the \"GLVD Face\" material")
    texture_size: EnumProperty(name="Texture Size", items=TEXTURE_SIZE_ITEMS, default="1024", options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.window_manager.glvd_job.running:
            cls.poll_message_set("A reconstruction is already running")
            return False
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode")
            return False
        return True

    # -- shared set-up ----------------------------------------------------------
    def _options(self, context: bpy.types.Context, prefs: preferences.Prefs) -> Options:
        s = context.scene.glvd
        isset = self.properties.is_property_set

        def pick(name: str, scene_value: Any) -> Any:
            return getattr(self, name) if isset(name) else scene_value

        device = pick("device", s.device)
        if device == "PREFS":
            device = prefs.device
        ckpt = self.checkpoint if isset("checkpoint") else prefs.checkpoint
        if ckpt:
            ckpt = os.path.normpath(bpy.path.abspath(ckpt))
            if not os.path.isfile(ckpt):
                raise InputError(f"checkpoint not found: {ckpt}")
        return Options(
            steps=pick("steps", s.steps), device=device.lower(), target=pick("target", s.target),
            expressions=pick("expressions", s.add_expressions), animate=pick("animate", s.animate_steps),
            frames_per_step=pick("frames_per_step", s.frames_per_step),
            use_cameras=pick("use_cameras", s.use_cameras), checkpoint=ckpt or None,
            texture=int(pick("texture_size", s.texture_size)) if pick("texture", s.texture) else None,
            lens_35mm=float(pick("lens_35mm", s.lens_35mm)) or None,
        )

    def _prepare(self, context: bpy.types.Context) -> None:
        prefs = preferences.get(context)
        self._prefs = prefs
        opts = self._options(context, prefs)
        target = None
        if opts.target == "UPDATE":
            target = context.active_object
            if not mesh_writer.is_glvd_object(target):
                raise InputError("select a GLVD Face object to update (or choose 'New Object')")
        photos = self._selected_photos(context)
        self._photos = photos
        self._writer = ResultWriter(context, opts, photos, target)
        cams = inputs.cameras_for(photos, context.scene, self._writer.obj_matrix()) if opts.use_cameras else None
        req = Request(images=photos.paths, steps=opts.steps, device=opts.device, checkpoint=opts.checkpoint,
                      cameras=cams, expressions=opts.expressions, texture=opts.texture, lens_35mm=opts.lens_35mm)
        self._opts = opts
        self._t0 = time.monotonic()
        try:
            worker = worker_for(prefs)
        except WorkerError as exc:
            raise InputError(exc.message) from exc
        self._job = Job(worker, req, timeouts_for(prefs))

    def _selected_photos(self, context: bpy.types.Context) -> inputs.Inputs:
        """filepath= / directory= + files=, else images= (older scripts), else the panel's list."""
        isset = self.properties.is_property_set
        paths = inputs.selected_paths(self.filepath if isset("filepath") else None,
                                      self.directory if isset("directory") else None,
                                      [f.name for f in self.files])
        if paths is not None and len(self.images):
            raise InputError("give the photos either as filepath=/files= or as images=, not both")
        if paths is None and len(self.images):
            paths = [it.filepath for it in self.images]
        if paths is not None:
            return inputs.from_paths(paths)
        return inputs.from_scene_list(list(context.scene.glvd.photos))

    def _cleanup(self) -> None:
        photos = getattr(self, "_photos", None)
        if photos is not None:
            photos.cleanup()
        prefs = getattr(self, "_prefs", None)
        if prefs is not None and not prefs.keep_worker:
            engine.shutdown_worker()

    def _fail(self, message: str) -> set[str]:
        self.report({"ERROR"}, f"GLVD: {message}")
        return {"CANCELLED"}

    def _error_text(self, job: Job) -> str:
        err = job.error
        return f"{err.message} [{err.code}]" if err else "the reconstruction failed"

    # -- background / scripting: synchronous --------------------------------------
    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            self._prepare(context)
        except InputError as exc:
            self._cleanup()
            return self._fail(str(exc))
        job, writer = self._job, self._writer
        try:
            job.run()
            if job.state != "done" or job.result is None:
                return self._fail(self._error_text(job))
            obj = writer.finish(job.result, time.monotonic() - self._t0)
        except (WriteError, WorkerError, ReferenceError) as exc:
            writer.abort()
            return self._fail(str(exc))
        finally:
            remove_texture_file(job.result)  # loaded and packed by now, or not wanted
            self._cleanup()
        for w in writer.warnings:
            self.report({"WARNING"}, f"GLVD: {w}")
        note = _focal_note(obj)
        self.report({"INFO"}, f"GLVD: '{obj.name}' from {len(self._photos.photos)} photo(s), "
                              f"{self._opts.steps} steps in {time.monotonic() - self._t0:.1f} s"
                              + (f"; {note}" if note else ""))
        return {"FINISHED"}

    # -- UI: modal, live steps, Esc cancels -----------------------------------------
    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            self._prepare(context)
            updates = self._job.start()
        except InputError as exc:
            self._cleanup()
            return self._fail(str(exc))
        wm = context.window_manager
        job_state = wm.glvd_job
        job_state.running, job_state.cancel_requested = True, False
        job_state.progress, job_state.step, job_state.steps = 0.0, 0, self._opts.steps
        job_state.status = "starting the GLVD runtime" if not self._job.worker.ready else "starting"
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        for u in updates:
            self._apply(context, u)
        redraw_ui(context)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        job = self._job
        job_state = context.window_manager.glvd_job
        if event.type == "ESC" and event.value == "PRESS":
            for u in job.cancel():
                self._apply(context, u)
            return {"RUNNING_MODAL"}  # Esc is ours while a reconstruction runs
        if event.type != "TIMER":
            return {"PASS_THROUGH"}  # the rest of Blender stays usable
        if job_state.cancel_requested and job.state not in ("cancelling",):
            job.cancel()
        try:
            for u in job.pump():
                self._apply(context, u)
                if job.finished:
                    break
        except (WriteError, ReferenceError) as exc:
            job.cancel()
            return self._end(context, error=str(exc))
        if job.finished:
            return self._end(context)
        return {"PASS_THROUGH"}

    def _apply(self, context: bpy.types.Context, u: Update) -> None:
        st = context.window_manager.glvd_job
        st.progress = u.fraction
        if u.kind == "step":
            st.step = u.step
            self._writer.live_step(u.step, u.vertices, self._job.topology)
        st.status = u.message
        redraw_ui(context)

    def _end(self, context: bpy.types.Context, error: str | None = None) -> set[str]:
        wm = context.window_manager
        if getattr(self, "_timer", None) is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        st = wm.glvd_job
        st.running, st.cancel_requested = False, False
        job, writer = self._job, self._writer
        try:
            if error is None and job.state == "done" and job.result is not None:
                try:
                    obj = writer.finish(job.result, time.monotonic() - self._t0)
                except (WriteError, ReferenceError) as exc:
                    error = str(exc)
                else:
                    st.status = st.last_message = f"done: '{obj.name}' in {time.monotonic() - self._t0:.1f} s"
                    self.report({"INFO"}, f"GLVD: {st.status}")
                    if note := _focal_note(obj):
                        self.report({"INFO"}, f"GLVD: {note}")
                        st.last_message = f"{st.status}; {note}"
                    for w in writer.warnings:
                        self.report({"WARNING"}, f"GLVD: {w}")
                        st.last_message = f"{st.status}; {w}"
                    return {"FINISHED"}
            writer.abort()
            if error is None and job.state == "cancelled":
                st.status = st.last_message = "cancelled"
                self.report({"WARNING"}, "GLVD: reconstruction cancelled")
                return {"CANCELLED"}
            message = error or self._error_text(job)
            st.status = st.last_message = f"failed: {message}"
            return self._fail(message)
        finally:
            remove_texture_file(job.result)
            self._cleanup()
            redraw_ui(context)

    def cancel(self, context: bpy.types.Context) -> None:
        # Blender ends modal operators this way on file load / quit
        job = getattr(self, "_job", None)
        if job is not None and not job.finished:
            job.cancel()
        if getattr(self, "_timer", None) is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        context.window_manager.glvd_job.running = False
        self._cleanup()


class GLVD_OT_cancel_reconstruct(bpy.types.Operator):
    """Stop the running reconstruction (Esc works too); the scene stays as it was"""

    bl_idname = "glvd.cancel_reconstruct"
    bl_label = "Cancel"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.window_manager.glvd_job.running

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.window_manager.glvd_job.cancel_requested = True
        return {"FINISHED"}


def _prestart(context: bpy.types.Context) -> None:
    """Start the worker and load the model while the user is still picking photos.

    The worker loads the model lazily; an ``info`` request makes it load now, so the
    Reconstruct button then finds a warm worker (its reply is ignored: other id).
    """
    prefs = preferences.get(context)
    if not prefs.prestart or bpy.app.background or context.window_manager.glvd_job.running:
        return
    fresh = engine.current_worker() is None
    try:
        worker = worker_for(prefs)
        if fresh:
            worker.request("info", device=prefs.device.lower(), checkpoint=prefs.checkpoint or None)
    except WorkerError:
        pass  # reported when the user presses Reconstruct


_prestart_scheduled = False


def schedule_prestart() -> None:
    """Once per session, when the panel is first drawn: start the worker from a timer (not inside draw)."""
    global _prestart_scheduled
    if _prestart_scheduled or bpy.app.background:
        return
    _prestart_scheduled = True
    bpy.app.timers.register(_prestart_timer, first_interval=0.0)


def _prestart_timer() -> None:
    if engine.current_worker() is None:
        _prestart(bpy.context)
    return None


def _load_photo(path: str) -> bpy.types.Image:
    return bpy.data.images.load(path, check_existing=True)


class GLVD_OT_photo_add(bpy.types.Operator):
    """Add reference photos from files (several at once)"""

    bl_idname = "glvd.photo_add"
    bl_label = "Add Photos"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"SKIP_SAVE"})
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"SKIP_SAVE"})
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        names = [f.name for f in self.files if f.name]
        paths = [os.path.join(self.directory, n) for n in names] if names else [self.filepath]
        settings = context.scene.glvd
        added = 0
        for p in paths:
            if not p or not os.path.isfile(p):
                self.report({"WARNING"}, f"GLVD: skipped (not a file): {p}")
                continue
            try:
                img = _load_photo(p)
            except RuntimeError as exc:
                self.report({"WARNING"}, f"GLVD: cannot read {p}: {exc}")
                continue
            item = settings.photos.add()
            item.name, item.filepath, item.image = os.path.basename(p), p, img
            added += 1
        if not added:
            return {"CANCELLED"}
        settings.photo_index = len(settings.photos) - 1
        _prestart(context)
        return {"FINISHED"}


def _image_items(self: Any, context: bpy.types.Context) -> list[tuple[str, str, str]]:
    # the strings must outlive the call (Blender keeps pointers into them)
    _image_items.cache = [(img.name, img.name, img.filepath or img.source) for img in bpy.data.images
                          if img.type in {"IMAGE", "UV_TEST"} and img.name != "glvd_tmp_export"]
    return _image_items.cache or [("", "(no images)", "")]


class GLVD_OT_photo_add_image(bpy.types.Operator):
    """Add an image already loaded in Blender (packed and generated images work)"""

    bl_idname = "glvd.photo_add_image"
    bl_label = "Add Loaded Image"
    bl_options = {"REGISTER", "UNDO"}
    bl_property = "image"

    image: EnumProperty(name="Image", items=_image_items)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        context.window_manager.invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        img = bpy.data.images.get(self.image)
        if img is None:
            self.report({"ERROR"}, "GLVD: no such image")
            return {"CANCELLED"}
        settings = context.scene.glvd
        item = settings.photos.add()
        item.name, item.filepath, item.image = img.name, img.filepath, img
        settings.photo_index = len(settings.photos) - 1
        _prestart(context)
        return {"FINISHED"}


class GLVD_OT_photo_remove(bpy.types.Operator):
    """Remove the selected photo from the list"""

    bl_idname = "glvd.photo_remove"
    bl_label = "Remove Photo"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return len(context.scene.glvd.photos) > 0

    def execute(self, context: bpy.types.Context) -> set[str]:
        s = context.scene.glvd
        if not 0 <= s.photo_index < len(s.photos):
            return {"CANCELLED"}
        s.photos.remove(s.photo_index)
        s.photo_index = min(s.photo_index, max(0, len(s.photos) - 1))
        return {"FINISHED"}


class GLVD_OT_photo_clear(bpy.types.Operator):
    """Remove every photo from the list (the images stay in the file)"""

    bl_idname = "glvd.photo_clear"
    bl_label = "Clear Photos"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return len(context.scene.glvd.photos) > 0

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.scene.glvd.photos.clear()
        context.scene.glvd.photo_index = 0
        return {"FINISHED"}


def runtime_status_text(ev: dict[str, Any]) -> str:
    ck = os.path.basename(str(ev.get("checkpoint") or "?"))
    date = ev.get("checkpoint_date") or "no date"
    trained = "" if ev.get("trained", True) else ", UNTRAINED"
    gpu = "CUDA available" if ev.get("cuda") else "no CUDA"
    return (f"torch {ev.get('torch', '?')}, {gpu}, device {ev.get('device', '?')} | "
            f"checkpoint {ck} ({date}{trained})")


class GLVD_OT_check_runtime(bpy.types.Operator):
    """Start the GLVD runtime and show its torch version, device and checkpoint"""

    bl_idname = "glvd.check_runtime"
    bl_label = "Check Runtime"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not context.window_manager.glvd_job.running and not _checking_runtime

    def execute(self, context: bpy.types.Context) -> set[str]:
        global _checking_runtime
        prefs = preferences.get(context)
        try:
            worker = worker_for(prefs)
        except WorkerError as exc:
            return self._show(context, f"failed: {exc.message}", error=True)
        checker = _RuntimeCheck(worker, prefs)
        if bpy.app.background:
            deadline = time.monotonic() + prefs.startup_timeout
            while checker.state is None and time.monotonic() < deadline:
                ev = worker.wait_event(0.25)
                if ev is not None:
                    checker.handle(ev)
            text, ok = checker.state or (f"failed: no answer within {prefs.startup_timeout:.0f} s", False)
            return self._show(context, text, error=not ok)
        _checking_runtime = True
        self._show(context, "checking...", error=False)
        bpy.app.timers.register(lambda: _poll_check(checker), first_interval=0.1)
        return {"FINISHED"}

    def _show(self, context: bpy.types.Context, text: str, error: bool) -> set[str]:
        _set_runtime_status(text)
        self.report({"ERROR" if error else "INFO"}, f"GLVD runtime: {text}")
        return {"CANCELLED"} if error else {"FINISHED"}


class _RuntimeCheck:
    def __init__(self, worker: engine.Worker, prefs: preferences.Prefs) -> None:
        self.worker, self.prefs = worker, prefs
        self.rid: str | None = None
        self.state: tuple[str, bool] | None = None
        self.t0 = time.monotonic()
        if worker.ready:
            self._send()

    def _send(self) -> None:
        try:
            self.rid = self.worker.request("info", device=self.prefs.device.lower(),
                                           checkpoint=self.prefs.checkpoint or None)
        except WorkerError as exc:
            self.state = (f"failed: {exc.message}", False)

    def handle(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "ready" and self.rid is None:
            self._send()
        elif kind == engine.EXIT_EVENT:
            err = engine.explain_exit(ev.get("returncode"), self.worker.stderr_tail())
            engine.discard_worker(self.worker)
            self.state = (f"failed: {err.message}", False)
        elif ev.get("id") == self.rid and kind == "info":
            self.state = (runtime_status_text(ev), True)
        elif ev.get("id") == self.rid and kind == "error":
            self.state = (f"failed: {ev.get('message')} [{ev.get('code')}]", False)


def _poll_check(checker: _RuntimeCheck) -> float | None:
    global _checking_runtime
    for ev in checker.worker.poll():
        checker.handle(ev)
    if checker.state is None and time.monotonic() - checker.t0 > checker.prefs.startup_timeout:
        engine.discard_worker(checker.worker)
        checker.state = ("failed: the runtime did not answer in time", False)
    if checker.state is None:
        return 0.1
    _set_runtime_status(checker.state[0])
    _checking_runtime = False
    return None


def _set_runtime_status(text: str) -> None:
    addon = bpy.context.preferences.addons.get(preferences.ADDON_ID)
    if addon and addon.preferences:
        addon.preferences.runtime_status = text
    wm = bpy.context.window_manager
    if wm is not None and hasattr(wm, "glvd_job"):
        wm.glvd_job.last_message = text
    if not bpy.app.background:
        for win in wm.windows:
            for area in win.screen.areas:
                area.tag_redraw()


classes = (
    GLVD_OT_reconstruct_face,
    GLVD_OT_cancel_reconstruct,
    GLVD_OT_photo_add,
    GLVD_OT_photo_add_image,
    GLVD_OT_photo_remove,
    GLVD_OT_photo_clear,
    GLVD_OT_check_runtime,
)
