"""The whole head in real Blender (bpy module), the extension installed from the built zip: Output "Head".

One Blender session: Reconstruct Face with the default output (the head), then Update Selected. Needs a
checkpoint on the kit's face area (the shipped one, or an untrained one with ../shared's kit); a fresh clone
without either has only the tiny kit's template, around which no head can be built.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import load_pure, obj_vertices, run_blender

frames = load_pure("frames")


def _face_template_count(checkpoint: Path) -> int:
    import torch

    return int(torch.load(checkpoint, weights_only=True, map_location="cpu")["template"]["vertices"].shape[0])


def test_head_with_parts_materials_and_every_key(face_photo: Path, checkpoint: Path, installed_home: Path,
                                                  tmp_path: Path) -> None:
    if _face_template_count(checkpoint) != 9409:
        pytest.skip("the checkpoint's template is not the kit's face area (no ../shared kit): no head to build")
    out = tmp_path / "arrays"
    out.mkdir()
    res = run_blender(f"""
        import numpy as np
        OUT = {str(out)!r}
        r = {{}}
        op = bpy.ops.glvd.reconstruct_face
        r["default_output"] = bpy.context.scene.glvd.output
        r["ret"] = sorted(op(filepath={str(face_photo)!r}, steps=2, device="CPU", checkpoint={str(checkpoint)!r},
                             texture_size="1024"))
        ob = bpy.context.view_layer.objects.active
        me = ob.data
        r["n_verts"], r["n_polys"] = len(me.vertices), len(me.polygons)
        r["slots"] = [m.name for m in me.materials]
        idx = np.empty(len(me.polygons), np.int32)
        me.polygons.foreach_get("material_index", idx)
        np.save(os.path.join(OUT, "material_index.npy"), idx)
        keys = me.shape_keys.key_blocks
        r["keys"] = [k.name for k in keys]
        r["mode"] = ob["glvd_mode"]
        def co(kb):
            a = np.empty(len(kb.data) * 3, np.float32)
            kb.points.foreach_get("co", a)
            return a.reshape(-1, 3)
        for name in ("Basis", "GLVD 02", "jawOpen", "eyeBlink_L"):
            np.save(os.path.join(OUT, name.replace(" ", "_") + ".npy"), co(keys[name]))
        skin = me.materials[0]
        img = next(n for n in skin.node_tree.nodes if n.type == "TEX_IMAGE").image
        r["image_size"] = list(img.size)
        loops = np.empty(len(me.loops), np.int32)
        me.loops.foreach_get("vertex_index", loops)
        np.save(os.path.join(OUT, "loops.npy"), loops)
        # Update Selected keeps the object a head (the scene's Output says Face Area: the object wins)
        bpy.context.scene.glvd.output = "FACE"
        r["update_ret"] = sorted(op(filepath={str(face_photo)!r}, steps=1, device="CPU",
                                    checkpoint={str(checkpoint)!r}, target="UPDATE", texture=False))
        r["update_verts"] = len(me.vertices)
        loops2 = np.empty(len(me.loops), np.int32)
        me.loops.foreach_get("vertex_index", loops2)
        r["loops_same"] = bool((loops2 == loops).all())
        r["update_slots"] = [m.name for m in me.materials]
        result(r)
    """, installed_home, enable=True)
    assert res["default_output"] == "HEAD" and res["ret"] == ["FINISHED"] and res["mode"] == "head"
    assert res["n_verts"] == 26719 and res["n_polys"] == 26384
    assert res["slots"] == [f"GLVD {n}" for n in ("Skin", "Mouth", "Teeth", "Sclera", "Iris", "Pupil", "Eye Wet",
                                                  "Eyelashes")]
    assert np.bincount(np.load(out / "material_index.npy"), minlength=8).min() > 0  # every part has polygons
    keys = res["keys"]
    assert keys[:3] == ["Basis", "GLVD 01", "GLVD 02"] and len(keys) == 3 + 53 and "jawOpen" in keys
    assert res["image_size"] == [2048, 1024]  # the skin's two tiles side by side
    # the face area of the last step key is the CLI's face (same photo, same steps), the rest is the head
    cli = tmp_path / "cli.obj"
    proc = subprocess.run([sys.executable, "-m", "glvd", "reconstruct", str(face_photo), "-o", str(cli), "--steps",
                           "2", "--checkpoint", str(checkpoint), "--device", "cpu", "-q", "--mode", "face"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = np.load(out / "GLVD_02.npy")
    np.testing.assert_allclose(last[:9409], frames.head_to_blender(obj_vertices(cli)), atol=2e-5)
    # the ARKit keys act on the whole head: jawOpen moves the teeth, eyeBlink the lashes (beyond the face area)
    jaw = np.linalg.norm(np.load(out / "jawOpen.npy") - last, axis=1)
    blink = np.linalg.norm(np.load(out / "eyeBlink_L.npy") - last, axis=1)
    assert jaw[9409:].max() > 0.005 and blink[9409:].max() > 0.003
    assert res["update_ret"] == ["FINISHED"] and res["update_verts"] == 26719 and res["loops_same"]
    assert res["update_slots"] == res["slots"]
