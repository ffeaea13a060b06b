"""Render the docs' head pictures (docs/head/*.png) through the extension's own code path, in the bpy module.

For each photo set: the runtime worker (``glvd worker``, this Python) reconstructs the whole head with its
texture exactly as Blender's Reconstruct Face does (glvd_blender.job + result_writer: the same mesh, keys and
materials an artist gets), then Workbench (studio light, texture colour, on the CPU) renders it from the
front, at 45 degrees and in profile, and from the front with jawOpen at 1 and with eyeBlink_L/R at 1. One
sheet per set: the photos on the left, the renders beside them.

    .venv/bin/python tools/render_heads.py [--out docs/head] [--size 360] [--synthetic DIR]

Sets: the astronaut (scikit-image), grace_hopper (matplotlib) and three synthetic renders of a kit face
(``--synthetic``: a folder with synthetic_view1..3.png, written by
``python -m research.head_texture.head_texture --save-views DIR``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bpy  # noqa: E402

from glvd_blender import inputs, job, result_writer, worker_client  # noqa: E402
from glvd_blender.mesh_writer import show_only  # noqa: E402

VIEWS = (("front", 0.0, {}), ("45 degrees", 45.0, {}), ("profile", 90.0, {}),
         ("jawOpen 1", 0.0, {"jawOpen": 1.0}), ("eyeBlink 1", 0.0, {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0}))


def photo_sets(tmp: Path, synthetic: str | None) -> list[tuple[str, list[Path]]]:
    from matplotlib import cbook
    from skimage import data

    a = tmp / "astronaut.png"
    Image.fromarray(data.astronaut()).save(a)
    g = tmp / "grace_hopper.jpg"
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        g.write_bytes(f.read())
    sets = [("astronaut", [a]), ("grace_hopper", [g])]
    if synthetic:
        sets.append(("synthetic_3_views", sorted(Path(synthetic).glob("synthetic_view*.png"))))
    return sets


def reconstruct(worker: worker_client.Worker, photos: list[Path]) -> bpy.types.Object:
    """The head in the scene, as Reconstruct Face makes it (new object at the origin)."""
    req = job.Request(images=[str(p) for p in photos], steps=10, device="cpu", expressions=True, texture=1024,
                      mode="head")
    j = job.Job(worker, req)
    j.run()
    if j.state != "done":
        raise SystemExit(f"reconstruction failed: {j.message}")
    opts = result_writer.Options(steps=10, device="cpu", target="NEW", expressions=True, animate=False,
                                 frames_per_step=5, use_cameras=False, checkpoint=None, texture=1024, mode="head")
    bpy.context.scene.cursor.location = (0.0, 0.0, 0.0)
    photo_list = inputs.Inputs([inputs.Photo(str(p), str(p)) for p in photos])
    writer = result_writer.ResultWriter(bpy.context, opts, photo_list, None)
    obj = writer.finish(j.result, 0.0)
    job.remove_texture_file(j.result)
    if writer.warnings:
        print("warnings:", writer.warnings)
    return obj


def setup_scene(size: int) -> SimpleNamespace:
    sc = bpy.context.scene
    sc.render.engine = "BLENDER_WORKBENCH"
    sc.render.resolution_x = sc.render.resolution_y = size
    sc.display.shading.light = "STUDIO"
    sc.display.shading.color_type = "TEXTURE"
    sc.display.shading.show_specular_highlight = True
    sc.display_settings.display_device = "sRGB"
    sc.view_settings.view_transform = "Standard"
    world = bpy.data.worlds.new("GLVD docs")
    world.color = (0.18, 0.18, 0.2)
    sc.world = world
    cam = bpy.data.cameras.new("GLVD docs")
    cam.lens = 85.0
    cam_obj = bpy.data.objects.new("GLVD docs camera", cam)
    sc.collection.objects.link(cam_obj)
    sc.camera = cam_obj
    return SimpleNamespace(scene=sc, camera=cam_obj)


def render(s: SimpleNamespace, obj: bpy.types.Object, yaw_deg: float, keys: dict[str, float], path: Path) -> None:
    kb = obj.data.shape_keys.key_blocks
    for k in kb:
        if k.name in keys:
            k.value = keys[k.name]
        elif not k.name.startswith("GLVD ") and k.name != "Basis":
            k.value = 0.0
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    centre = (co.min(0) + co.max(0)) / 2 + np.array(obj.location)
    centre[2] += 0.01
    a = math.radians(yaw_deg)
    d = 0.95
    # the face looks along Blender's -Y (frames.py); yaw towards the subject's left (+X)
    s.camera.location = (centre[0] + d * math.sin(a), centre[1] - d * math.cos(a), centre[2])
    s.camera.rotation_euler = (math.radians(90.0), 0.0, a)
    s.scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def sheet(photos: list[Path], renders: list[tuple[str, Path]], size: int, out: Path) -> None:
    """The photos stacked on the left (each fitted into a size x size cell), the renders in one row beside."""
    from PIL import ImageDraw

    rows = max(1, len(photos))
    ph = size // rows if rows > 1 else size
    W = ph + size * len(renders)
    img = Image.new("RGB", (W, size + 24), (30, 30, 34))
    for i, p in enumerate(photos):
        im = Image.open(p).convert("RGB")
        im.thumbnail((ph, ph))
        img.paste(im, ((ph - im.width) // 2, i * ph + (ph - im.height) // 2))
    draw = ImageDraw.Draw(img)
    for j, (label, path) in enumerate(renders):
        img.paste(Image.open(path).convert("RGB"), (ph + j * size, 0))
        draw.text((ph + j * size + 8, size + 5), label, fill=(220, 220, 220))
    draw.text((8, size + 5), "photo" if len(photos) == 1 else f"{len(photos)} photos", fill=(220, 220, 220))
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)


def heads(size: int, synthetic: str | None):
    """For each photo set: ``(name, photos, head object, scene, scratch folder)``, the head as Reconstruct
    Face makes it, the final step shown; the worker runs for the whole loop, each head is removed after its
    turn (what tools/render_expression.py and main() share)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    tmp = Path(tempfile.mkdtemp())
    worker = worker_client.Worker(worker_client.worker_command(sys.executable),
                                  env=worker_client.worker_env([str(REPO / "vendor" / "glvd")])).start()
    try:
        s = setup_scene(size)
        for name, photos in photo_sets(tmp, synthetic):
            obj = reconstruct(worker, photos)
            show_only(obj, "GLVD 10")
            yield name, photos, obj, s, tmp
            bpy.data.objects.remove(obj, do_unlink=True)
    finally:
        worker.stop()


def sheet_options(doc: str, out: str, argv: list[str] | None) -> argparse.Namespace:
    """The docs' render tools' options: ``--out`` (default ``docs/<out>``), ``--size``, ``--synthetic``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / out))
    ap.add_argument("--size", type=int, default=360)
    ap.add_argument("--synthetic", default=None, help="folder with synthetic_view1..3.png")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = sheet_options(__doc__, "head", argv)
    for name, photos, obj, s, tmp in heads(a.size, a.synthetic):
        shots = []
        for label, yaw, keys in VIEWS:
            path = tmp / f"{name}_{len(shots)}.png"
            render(s, obj, yaw, keys, path)
            shots.append((label, path))
        sheet(photos, shots, a.size, Path(a.out) / f"{name}.png")
        print(f"wrote {Path(a.out) / f'{name}.png'}", flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
