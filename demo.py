"""`make demo`: install the built extension into Blender (the bpy module), reconstruct the default photo.

Writes out/demo.blend and out/demo.png (a Workbench render: the photo beside the
result, textured with the photo baked onto its UV map). Blender runs with
HOME=out/blender_home so your own Blender setup is untouched. Run `python build.py --no-deps` first (the Makefile does).

    .venv/bin/python demo.py [--photo PATH] [--steps 10] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
OUT = REPO / "out"
SHIPPED = REPO / "vendor" / "glvd" / "glvd" / "weights" / "glvd_face.pt"
ADDON = "bl_ext.user_default.glvd_face"


def die(msg: str) -> None:
    print(f"demo: {msg}", file=sys.stderr)
    sys.exit(1)


def default_photo() -> Path:
    """The embedded default photo: NASA's astronaut portrait (public domain) from scikit-image."""
    from PIL import Image
    from skimage import data

    path = OUT / "demo_photo.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def untrained_checkpoint() -> Path:
    from glvd.checkpoint import write_untrained_checkpoint
    from glvd.topology import default_kit_path

    path = OUT / "untrained_demo.pt"
    if not path.is_file():
        kit = default_kit_path()
        if not kit.is_file():
            die(f"no trained checkpoint ({SHIPPED}) and no ICT kit ({kit}) to build a stand-in from")
        write_untrained_checkpoint(path, kit_path=kit)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--checkpoint", type=Path, default=None)
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    zips = sorted((REPO / "dist").glob("glvd_face-*.zip"), key=lambda p: p.stat().st_mtime)
    if not zips:
        die("no dist/glvd_face-*.zip: run `python build.py --no-deps` (or `make demo`)")
    photo = (a.photo or default_photo()).resolve()
    untrained = False
    if a.checkpoint:
        ckpt = a.checkpoint.resolve()
    elif SHIPPED.is_file():
        ckpt = SHIPPED
    else:
        print("demo: NOTE: no trained model yet (vendor/glvd/glvd/weights/glvd_face.pt is missing);\n"
              "      using an UNTRAINED checkpoint: the plumbing runs, the face shape is meaningless.")
        ckpt, untrained = untrained_checkpoint(), True

    # a private Blender user folder: set before bpy starts
    home = OUT / "blender_home"
    home.mkdir(exist_ok=True)
    os.environ["HOME"] = str(home)
    import bpy

    if ADDON not in bpy.context.preferences.addons:
        bpy.ops.extensions.package_install_files(filepath=str(zips[-1]), repo="user_default",
                                                 enable_on_install=True, overwrite=True)
    if ADDON not in bpy.context.preferences.addons:
        die(f"installing {zips[-1].name} did not enable {ADDON}")
    print(f"demo: installed {zips[-1].name} into {home}")

    t0 = time.monotonic()
    try:
        bpy.ops.glvd.reconstruct_face(images=[{"name": photo.name, "filepath": str(photo)}], steps=a.steps,
                                      checkpoint=str(ckpt), animate=True, texture=True, texture_size="1024")
    except RuntimeError as exc:
        die(f"reconstruction failed: {exc}")
    face = bpy.context.view_layer.objects.active
    print(f"demo: '{face.name}' with {len(face.data.vertices)} vertices and "
          f"{len(face.data.shape_keys.key_blocks)} shape keys in {time.monotonic() - t0:.1f} s")
    stage(bpy, face, photo, untrained)
    blend, png = OUT / "demo.blend", OUT / "demo.png"
    bpy.context.scene.render.filepath = str(png)
    bpy.ops.render.render(write_still=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    print(f"demo: wrote {blend.relative_to(REPO)} and {png.relative_to(REPO)}")
    return 0


def stage(bpy, face, photo: Path, untrained: bool) -> None:  # noqa: ANN001 (bpy module object)
    """Photo on a plane to the left of the face, an orthographic front camera, Workbench."""
    import numpy as np

    scene = bpy.context.scene
    for name in ("Cube",):
        if name in bpy.data.objects:
            bpy.data.objects.remove(bpy.data.objects[name])
    co = np.empty(len(face.data.vertices) * 3, np.float32)
    kb = face.data.shape_keys.key_blocks
    kb[face.active_shape_key_index].points.foreach_get("co", co)
    co = co.reshape(-1, 3) + np.array(face.location)
    lo, hi = co.min(0), co.max(0)
    height = float(hi[2] - lo[2])
    center = (lo + hi) / 2

    img = bpy.data.images.load(str(photo), check_existing=True)
    w, h = img.size
    plane_h = height * 1.15
    plane_w = plane_h * w / h
    plane_x = float(lo[0]) - 0.02 - plane_w / 2
    bpy.ops.mesh.primitive_plane_add(size=1.0, location=(plane_x, float(lo[1]), float(center[2])),
                                     rotation=(math.pi / 2, 0.0, 0.0))
    plane = bpy.context.active_object
    plane.name = "Photo"
    plane.scale = (plane_w, plane_h, 1.0)
    mat = bpy.data.materials.new("Photo")
    if bpy.app.version < (5, 0, 0):  # 5.0 materials always use nodes (the flag is deprecated)
        mat.use_nodes = True
    tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
    tex.image = img
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    plane.data.materials.append(mat)

    if not len(face.data.materials):  # no baked texture (it failed: the reconstruction warned)
        skin = bpy.data.materials.new("GLVD Skin")
        skin.diffuse_color = (0.8, 0.62, 0.52, 1.0)
        face.data.materials.append(skin)

    cam_data = bpy.data.cameras.new("Front")
    cam_data.type = "ORTHO"
    total_w = float(hi[0] - lo[0]) + plane_w + 0.02
    cam_data.ortho_scale = max(total_w, plane_h) * 1.1
    cam = bpy.data.objects.new("Front", cam_data)
    scene.collection.objects.link(cam)
    cx = (float(hi[0]) + float(lo[0]) - 0.02 - plane_w) / 2
    cam.location = (cx, float(lo[1]) - 1.0, float(center[2]))
    cam.rotation_euler = (math.pi / 2, 0.0, 0.0)  # looks along +Y: Blender's front view
    scene.camera = cam

    r = scene.render
    r.engine = "BLENDER_WORKBENCH"
    r.resolution_x, r.resolution_y = 1280, 720
    r.resolution_percentage = 100
    sh = scene.display.shading
    sh.light = "STUDIO"
    sh.color_type = "TEXTURE"  # the photo and the face show their image textures (the baked one on the face)
    sh.show_cavity = True
    last = max(int(k.name[5:]) for k in kb if k.name.startswith("GLVD "))
    scene.frame_set(scene.frame_start + last * 5)  # the animated steps end on the result
    if untrained:
        txt = bpy.data.curves.new("note", "FONT")
        txt.body = "UNTRAINED checkpoint: plumbing demo only"
        txt.size = cam_data.ortho_scale / 30
        ob = bpy.data.objects.new("Note", txt)
        scale = cam_data.ortho_scale
        ob.location = (cx - scale * 0.45, float(lo[1]) - 0.05, float(center[2]) - scale * 0.26)
        ob.rotation_euler = (math.pi / 2, 0.0, 0.0)
        scene.collection.objects.link(ob)


if __name__ == "__main__":
    sys.exit(main())
