"""Add-on preferences: device, checkpoint override, worker settings, runtime status."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from .properties import DEVICE_ITEMS

ADDON_ID = __package__  # "bl_ext.<repo>.glvd_face" when installed as an extension


@dataclass
class Prefs:
    """Plain values, also when the add-on is registered without preferences (scripts, tests)."""

    device: str = "AUTO"
    checkpoint: str = ""
    python: str = ""
    startup_timeout: float = 180.0
    step_timeout: float = 120.0
    keep_worker: bool = True
    prestart: bool = True


def get(context: bpy.types.Context | None = None) -> Prefs:
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    p = addon.preferences if addon else None
    if p is None:
        return Prefs()
    return Prefs(p.device, bpy.path.abspath(p.checkpoint) if p.checkpoint else "",
                 bpy.path.abspath(p.python) if p.python else "",
                 p.startup_timeout, p.step_timeout, p.keep_worker, p.prestart)


def python_executable(prefs: Prefs) -> str:
    # Blender's bundled Python (or the venv's under the bpy module) unless overridden
    return prefs.python or sys.executable


class GLVD_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="AUTO")
    checkpoint: StringProperty(
        name="Checkpoint", subtype="FILE_PATH", default="",
        description="A GLVD checkpoint (.pt) to use instead of the one shipped inside the extension")
    python: StringProperty(
        name="Python", subtype="FILE_PATH", default="",
        description="The Python that runs the GLVD worker (empty: Blender's own, with the extension's wheels). "
                    "Another Python (3.11+) needs torch, numpy, opencv-python-headless, pillow and scipy; "
                    "the runtime itself comes from the extension. Needed on Linux with Blender 5.1+ "
                    "(no torch bundled for Python 3.13): see Check Runtime")
    startup_timeout: FloatProperty(name="Start Timeout", default=180.0, min=1.0, max=3600.0, unit="TIME_ABSOLUTE",
                                   description="Seconds the worker may take to start (importing torch)")
    step_timeout: FloatProperty(name="Silence Timeout", default=120.0, min=1.0, max=3600.0, unit="TIME_ABSOLUTE",
                                description="A worker silent for longer than this is considered hung and stopped")
    keep_worker: BoolProperty(name="Keep Runtime Running", default=True,
                              description="Keep the model loaded between reconstructions (much faster)")
    prestart: BoolProperty(name="Start Runtime Early", default=True,
                           description="Start the runtime as soon as a photo is added, so Reconstruct starts warm")
    runtime_status: StringProperty(name="Runtime", default="not checked")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        col.prop(self, "device")
        col.prop(self, "checkpoint")
        box = layout.box()
        box.label(text="Worker")
        sub = box.column()
        sub.use_property_split = True
        sub.prop(self, "python")
        sub.prop(self, "startup_timeout")
        sub.prop(self, "step_timeout")
        sub.prop(self, "keep_worker")
        sub.prop(self, "prestart")
        row = layout.row()
        row.operator("glvd.check_runtime", icon="FILE_REFRESH")
        for line in self.runtime_status.split(" | "):
            layout.label(text=line)
