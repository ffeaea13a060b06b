"""Data the extension keeps: inputs on the Scene (saved with the .blend), job state on the WindowManager."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

DEVICE_ITEMS = [
    ("AUTO", "Auto", "CUDA when the runtime finds a GPU, else the CPU"),
    ("CPU", "CPU", "Always the CPU"),
    ("CUDA", "CUDA", "An NVIDIA GPU (fails clearly when there is none)"),
]
SCENE_DEVICE_ITEMS = [("PREFS", "Preferences", "The device chosen in the add-on preferences"), *DEVICE_ITEMS]
TARGET_ITEMS = [
    ("NEW", "New Object", "Add a new \"GLVD Face\" object at the 3D cursor"),
    ("UPDATE", "Update Selected", "Replace the shape of the active GLVD object, keeping its vertex order, "
     "UVs, modifiers, vertex groups and rig"),
]
OUTPUT_ITEMS = [
    ("HEAD", "Head", "The whole head around the reconstructed face: back of the head, ears, neck, eyes, teeth, "
     "mouth and lashes, each with its material; every key moves all of it"),
    ("FACE", "Face Area", "The reconstructed face area alone (9,409 vertices)"),
]
TEXTURE_SIZE_ITEMS = [
    ("1024", "1024", "1024 x 1024 pixels"),
    ("2048", "2048", "2048 x 2048 pixels (slower to bake, for close-ups)"),
]
#: the ARKit keys as the photo shows the face (the mesh itself is always the neutral face) or all at 0
EXPRESSION_ITEMS = [
    ("PHOTO", "As in the Photo", "The ARKit keys take each photo's expression (several photos: one keyframe "
     "per photo); Basis and the step keys stay the neutral face"),
    ("NEUTRAL", "Neutral", "All ARKit keys at 0: the neutral face, ready for a rig"),
]


def _is_camera(_self: bpy.types.PropertyGroup, obj: bpy.types.Object) -> bool:
    return obj.type == "CAMERA"


class GLVD_PG_photo(bpy.types.PropertyGroup):
    """One reference photo of the panel's list (``name`` is what the list shows)."""

    filepath: StringProperty(name="File", subtype="FILE_PATH", description="The photo on disk")
    image: PointerProperty(type=bpy.types.Image, name="Image",
                           description="The photo as a Blender image (packed and generated images work)")
    camera: PointerProperty(type=bpy.types.Object, name="Camera", poll=_is_camera,
                            description="A camera that took this photo (used when 'Use Scene Cameras' is on)")


class GLVD_PG_image_input(bpy.types.PropertyGroup):
    """An item of the operator's ``images`` (scripting): ``{"filepath": "/photos/a.jpg"}``."""

    filepath: StringProperty(name="File", subtype="FILE_PATH")


class GLVD_PG_settings(bpy.types.PropertyGroup):
    photos: CollectionProperty(type=GLVD_PG_photo)
    photo_index: IntProperty(name="Active Photo", default=0, min=0)
    steps: IntProperty(name="Steps", default=10, min=1, max=30,
                       description="Descent steps; each becomes a shape key")
    device: EnumProperty(name="Device", items=SCENE_DEVICE_ITEMS, default="PREFS")
    target: EnumProperty(name="Result", items=TARGET_ITEMS, default="NEW")
    output: EnumProperty(name="Output", items=OUTPUT_ITEMS, default="HEAD")
    add_expressions: BoolProperty(
        name="ARKit Expressions", default=True,
        description="Add the 53 ARKit expression shape keys, relative to the result (rig-ready)")
    expression: EnumProperty(name="Expression", items=EXPRESSION_ITEMS, default="PHOTO")
    texture: BoolProperty(
        name="Bake Texture", default=True,
        description="Project the photos onto the face's UV map and give the result a material that uses it")
    texture_size: EnumProperty(name="Texture Size", items=TEXTURE_SIZE_ITEMS, default="1024")
    animate_steps: BoolProperty(name="Animate Steps", default=False,
                                description="Keyframe the step keys so playback shows the descent")
    frames_per_step: IntProperty(name="Frames per Step", default=5, min=1, max=250)
    lens_35mm: FloatProperty(
        name="Lens (35 mm equiv.)", default=0.0, min=0.0, max=1200.0, precision=0, unit="CAMERA",
        description="Lens of photos whose file has no focal length (EXIF), as a 35 mm-equivalent focal "
        "length: 26 for most phones' main camera. 0: assume the face was 1.2 m from the camera")
    use_cameras: BoolProperty(
        name="Use Scene Cameras", default=True,
        description="When every photo has a camera (set on the photo, or a camera whose background "
        "image is the photo), send those cameras instead of estimating them")


class GLVD_PG_job(bpy.types.PropertyGroup):
    """The running job, for the panel (not saved in files that matter: it lives on the WindowManager)."""

    running: BoolProperty(default=False)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    step: IntProperty(default=0)
    steps: IntProperty(default=0)
    status: StringProperty(default="")
    cancel_requested: BoolProperty(default=False)
    last_message: StringProperty(default="")


classes = (GLVD_PG_photo, GLVD_PG_image_input, GLVD_PG_settings, GLVD_PG_job)


def register_props() -> None:
    bpy.types.Scene.glvd = PointerProperty(type=GLVD_PG_settings)
    bpy.types.WindowManager.glvd_job = PointerProperty(type=GLVD_PG_job)


def unregister_props() -> None:
    del bpy.types.WindowManager.glvd_job
    del bpy.types.Scene.glvd
