"""Reconstruct Face: the operator (modal in the UI, synchronous in background mode) and Cancel.

The photos come as ``filepath=`` (one), ``directory=`` + ``files=`` (several, as Blender's import
operators), ``images=`` (older scripts) or the panel's list; the options from the call, else the
scene's settings, else the preferences. Everything is checked before anything is created; the
worker runs the model (prestart.worker_for), a Job turns its events into updates, a ResultWriter
puts them in the scene.
"""

from __future__ import annotations

import os
import time
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import inputs, mesh_writer, preferences, result_writer, worker_client
from .inputs import InputError
from .job import Job, Request, Timeouts, Update, focal_note, remove_texture_file
from .prestart import worker_for
from .properties import (
    EXPRESSION_ITEMS,
    GLVD_PG_image_input,
    OUTPUT_ITEMS,
    SCENE_DEVICE_ITEMS,
    TARGET_ITEMS,
    TEXTURE_SIZE_ITEMS,
)
from .result_writer import Options, ResultWriter, WriteError
from .worker_client import WorkerError


def timeouts_for(prefs: preferences.Prefs) -> Timeouts:
    return Timeouts(startup=prefs.startup_timeout, silence=prefs.step_timeout)


def redraw_ui(context: bpy.types.Context) -> None:
    wm = context.window_manager
    for win in wm.windows:
        for area in win.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES", "PROPERTIES"}:
                area.tag_redraw()


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
    output: EnumProperty(name="Output", items=OUTPUT_ITEMS, default="HEAD", options={"SKIP_SAVE"},
                         description="Head or Face Area (Update Selected keeps the selected object's)")
    expressions: BoolProperty(name="ARKit Expressions", default=True, options={"SKIP_SAVE"})
    expression: EnumProperty(name="Expression", items=EXPRESSION_ITEMS, default="PHOTO", options={"SKIP_SAVE"},
                             description="The ARKit keys at each photo's expression, or all at 0 (neutral)")
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
            mode=str(pick("output", s.output)).lower(), expression=str(pick("expression", s.expression)),
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
            # the object keeps what it is (head or face area): its vertex order, UVs and rig stay valid
            opts.mode = result_writer.object_mode(target)
        photos = self._selected_photos(context)
        self._photos = photos
        self._writer = ResultWriter(context, opts, photos, target)
        cams = inputs.cameras_for(photos, context.scene, self._writer.obj_matrix()) if opts.use_cameras else None
        req = Request(images=photos.paths, steps=opts.steps, device=opts.device, checkpoint=opts.checkpoint,
                      cameras=cams, expressions=opts.expressions, texture=opts.texture, lens_35mm=opts.lens_35mm,
                      mode=opts.mode)
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
            worker_client.shutdown_worker()

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


classes = (GLVD_OT_reconstruct_face, GLVD_OT_cancel_reconstruct)
