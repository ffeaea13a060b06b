"""The panel's photo list: add photos from files, add an image already loaded, remove one, clear."""

from __future__ import annotations

import os
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, StringProperty

from .prestart import prestart


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
        prestart(context)
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
        prestart(context)
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


classes = (GLVD_OT_photo_add, GLVD_OT_photo_add_image, GLVD_OT_photo_remove, GLVD_OT_photo_clear)
