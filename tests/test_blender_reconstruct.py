"""Reconstruct Face in real Blender (bpy module), the extension installed from the built zip.

Each test is one fresh Blender session (a subprocess, see conftest.run_blender).
The runtime runs out of process, exactly as in the desktop app.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import REPO, load_pure, obj_vertices, run_blender

frames = load_pure("frames")
worker_client = load_pure("worker_client")
jobmod = load_pure("job")


def cli_reconstruct(photo: Path, checkpoint: Path, steps: int, out: Path) -> list[np.ndarray]:
    """``python -m glvd reconstruct``: every step's vertices (head frame), [-1] the result."""
    proc = subprocess.run([sys.executable, "-m", "glvd", "reconstruct", str(photo), "-o", str(out), "--steps",
                           str(steps), "--checkpoint", str(checkpoint), "--device", "cpu", "-q", "--all-steps",
                           "--mode", "face"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps_v = [obj_vertices(out.with_name(f"{out.stem}_step{i:02d}.obj")) for i in range(1, steps + 1)]
    np.testing.assert_array_equal(steps_v[-1], obj_vertices(out))
    return steps_v


def test_reconstruct_matches_cli_then_update_in_place(face_photo: Path, checkpoint: Path, installed_home: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "arrays"
    out.mkdir()
    res = run_blender(f"""
        import importlib
        import numpy as np
        worker_client = importlib.import_module(ADDON + ".worker_client")
        OUT = {str(out)!r}
        r = {{}}
        scene = bpy.context.scene
        scene.cursor.location = (1.0, 2.0, 3.0)
        n_objects, n_meshes = len(bpy.data.objects), len(bpy.data.meshes)
        op = bpy.ops.glvd.reconstruct_face
        r["undo_flag"] = "UNDO" in bpy.types.GLVD_OT_reconstruct_face.bl_options
        ret = op(images=[{{"name": "", "filepath": {str(face_photo)!r}}}], steps=3, device="CPU",
                 checkpoint={str(checkpoint)!r}, expressions=True, output="FACE", expression="NEUTRAL")
        r["ret"] = sorted(ret)
        r["new_objects"] = len(bpy.data.objects) - n_objects
        r["new_meshes"] = len(bpy.data.meshes) - n_meshes
        ob = bpy.context.view_layer.objects.active
        me = ob.data
        r["name"] = ob.name
        r["location"] = list(ob.location)
        r["selected"] = ob.select_get()
        r["n_verts"], r["n_polys"] = len(me.vertices), len(me.polygons)
        r["uv_layers"] = [u.name for u in me.uv_layers]
        smooth = np.zeros(len(me.polygons), dtype=bool)
        me.polygons.foreach_get("use_smooth", smooth)
        r["all_smooth"] = bool(smooth.all())
        keys = me.shape_keys.key_blocks
        r["keys"] = [k.name for k in keys]
        r["values"] = [k.value for k in keys]
        r["relative"] = [k.relative_key.name for k in keys]
        r["active_key"] = ob.active_shape_key.name
        r["props"] = {{k: (v if isinstance(v, (int, float, str)) else list(v) if k != "glvd_timings" else dict(v))
                      for k, v in ob.items()}}
        def co(kb):
            a = np.empty(len(kb.data) * 3, np.float32)
            kb.points.foreach_get("co", a)
            return a.reshape(-1, 3)
        for k in keys[:4]:
            np.save(os.path.join(OUT, k.name.replace(" ", "_") + ".npy"), co(k))
        # evaluated mesh = the last step (the final result is what the artist sees)
        dg = bpy.context.evaluated_depsgraph_get()
        ev = ob.evaluated_get(dg).to_mesh()
        evco = np.empty(len(ev.vertices) * 3, np.float32)
        ev.vertices.foreach_get("co", evco)
        np.save(os.path.join(OUT, "evaluated.npy"), evco.reshape(-1, 3))
        ob.evaluated_get(dg).to_mesh_clear()
        # an expression key at 1 adds its delta on top of the result
        expr = keys[4]  # the first expression key (jawOpen & co. with the ICT kit, expr00.. with the tiny kit)
        r["expr_delta_max"] = float(np.abs(co(expr) - co(keys["GLVD 03"])).max())
        # the baked texture (on by default): a packed image in the "GLVD Face" material
        import glob, tempfile
        def texture_state():
            mat = me.materials[0] if len(me.materials) else None
            t = {{"slots": [m.name if m else None for m in me.materials],
                  "n_images": len(bpy.data.images), "n_materials": len(bpy.data.materials)}}
            if mat is not None:
                nodes = mat.node_tree.nodes
                bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
                links = bsdf.inputs["Base Color"].links
                img = links[0].from_node.image if links and links[0].from_node.type == "TEX_IMAGE" else None
                t["roughness"] = round(bsdf.inputs["Roughness"].default_value, 4)
                t["active_node"] = nodes.active.type if nodes.active else None
                if img is not None:
                    px = np.empty(img.size[0] * img.size[1] * 4, np.float32)
                    img.pixels.foreach_get(px)
                    rgb = px.reshape(-1, 4)[:, :3]
                    t["image"] = {{"name": img.name, "size": list(img.size), "packed": img.packed_file is not None,
                                  "users": img.users, "std": float(rgb.std()), "mean": float(rgb.mean())}}
            return t
        r["texture"] = texture_state()
        r["texture_prop"] = ob.get("glvd_texture")
        wpid = worker_client.current_worker().pid
        r["temp_pngs"] = glob.glob(os.path.join(tempfile.gettempdir(), f"glvd_{{wpid}}_*.png"))

        # -- update in place: rig-like data must survive, vertex order must not change
        loops_before = np.empty(len(me.loops), np.int32)
        me.loops.foreach_get("vertex_index", loops_before)
        vg = ob.vertex_groups.new(name="jaw")
        vg.add(list(range(0, 200, 3)), 1.0, "REPLACE")
        ob.modifiers.new("Subsurf", "SUBSURF")
        uv_before = np.empty(len(me.loops) * 2, np.float32)
        me.uv_layers[0].data.foreach_get("uv", uv_before)
        ret = op(images=[{{"name": "", "filepath": {str(face_photo)!r}}}], steps=2, device="CPU",
                 checkpoint={str(checkpoint)!r}, target="UPDATE", expressions=False, animate=True,
                 frames_per_step=4)
        r["update_ret"] = sorted(ret)
        r["update_objects"] = len(bpy.data.objects) - n_objects
        ob2 = bpy.context.view_layer.objects.active
        r["update_same"] = ob2 == ob and ob2.data == me
        loops_after = np.empty(len(me.loops), np.int32)
        me.loops.foreach_get("vertex_index", loops_after)
        uv_after = np.empty(len(me.loops) * 2, np.float32)
        me.uv_layers[0].data.foreach_get("uv", uv_after)
        r["loops_same"] = bool((loops_before == loops_after).all())
        r["uvs_same"] = bool((uv_before == uv_after).all())
        r["group"] = [v.index for v in me.vertices if any(g.group == vg.index for g in v.groups)]
        r["modifiers"] = [m.name for m in ob.modifiers]
        r["update_keys"] = [k.name for k in me.shape_keys.key_blocks]
        r["update_values"] = [k.value for k in me.shape_keys.key_blocks]
        r["update_steps_prop"] = ob["glvd_steps"]
        r["update_texture"] = texture_state()  # same material, its image replaced, no orphan left
        r["update_temp_pngs"] = glob.glob(os.path.join(tempfile.gettempdir(), f"glvd_{{wpid}}_*.png"))
        np.save(os.path.join(OUT, "update_last.npy"), co(me.shape_keys.key_blocks["GLVD 02"]))
        anim = me.shape_keys.animation_data
        r["animated"] = anim is not None and anim.action is not None
        f0 = scene.frame_start
        vals = []
        for f in (f0, f0 + 4, f0 + 8):
            scene.frame_set(f)
            vals.append([round(me.shape_keys.key_blocks[n].value, 3) for n in ("GLVD 01", "GLVD 02")])
        r["played"] = vals
        result(r)
    """, installed_home, enable=True)

    assert res["undo_flag"] is True  # one undo step; background Blender has no undo stack to call
    assert res["ret"] == ["FINISHED"]
    assert res["new_objects"] == 1 and res["new_meshes"] == 1
    assert res["name"] == "GLVD Face" and res["selected"]
    np.testing.assert_allclose(res["location"], [1.0, 2.0, 3.0])  # at the 3D cursor
    cli_steps = cli_reconstruct(face_photo, checkpoint, 3, tmp_path / "cli.obj")
    cli = cli_steps[-1]
    assert res["n_verts"] == len(cli)
    if checkpoint.name == "glvd_face.pt" or len(cli) > 5000:
        assert res["n_verts"] == 9409  # the ICT face area (a fresh clone without ../shared has a tiny kit)
    assert res["n_polys"] > 0 and res["uv_layers"] == ["UVMap"] and res["all_smooth"]
    keys = res["keys"]
    assert keys[:4] == ["Basis", "GLVD 01", "GLVD 02", "GLVD 03"]
    assert len(keys) == 4 + 53
    if res["n_verts"] == 9409:  # the ICT kit: ARKit names
        assert "browDown_L" in keys and "jawOpen" in keys
    assert res["values"][1:4] == [0.0, 0.0, 1.0] and all(v == 0.0 for v in res["values"][4:])
    assert res["relative"][1:4] == ["Basis"] * 3
    assert set(res["relative"][4:]) == {"GLVD 03"}  # expressions relative to the result
    assert res["active_key"] == "GLVD 03"
    assert 0.0 < res["expr_delta_max"] < 0.1  # a real delta, in metres
    props = res["props"]
    assert props["glvd_face"] and props["glvd_steps"] == 3 and props["glvd_photos"] == [str(face_photo)]
    weights = json.loads(props["glvd_expression_weights"])  # read whatever the option: [] without a head
    assert weights == [] or (len(weights) == 1 and len(weights[0]) == 53 and 0 <= min(weights[0]) <= max(weights[0]) <= 1)
    assert props["glvd_checkpoint"] == str(checkpoint) and "blender_total_s" in props["glvd_timings"]
    from glvd.pose import FROM_BLENDED, FROM_HEAD, FROM_LANDMARKS

    assert len(props["glvd_camera_sources"]) == 1
    assert props["glvd_camera_sources"][0] in (FROM_LANDMARKS, FROM_BLENDED, FROM_HEAD)
    assert list(props["glvd_focal_sources"]) == ["assumed: face 1.2 m away"]  # astronaut.png has no EXIF
    assert list(props["glvd_focal_codes"]) == ["assumed"] and props["glvd_assumed_distance_m"] == 1.2

    # every step key is the CLI's step for the same input (in Blender's frame); the last is its result
    for i, cli_v in enumerate(cli_steps, start=1):
        key = np.load(tmp_path / "arrays" / f"GLVD_{i:02d}.npy")
        np.testing.assert_allclose(key, frames.head_to_blender(cli_v), atol=2e-5, err_msg=f"GLVD {i:02d}")
    last = np.load(tmp_path / "arrays" / "GLVD_03.npy")
    np.testing.assert_allclose(np.load(tmp_path / "arrays" / "evaluated.npy"), last, atol=1e-5)
    basis = np.load(tmp_path / "arrays" / "Basis.npy")
    step1 = np.load(tmp_path / "arrays" / "GLVD_01.npy")
    assert np.abs(step1 - basis).max() > 1e-4 and np.abs(last - step1).max() > 1e-4  # the descent moved

    # update in place
    assert res["update_ret"] == ["FINISHED"] and res["update_objects"] == 1 and res["update_same"]
    assert res["loops_same"] and res["uvs_same"]
    assert res["group"] == list(range(0, 200, 3)) and res["modifiers"] == ["Subsurf"]
    assert res["update_keys"] == ["Basis", "GLVD 01", "GLVD 02"]  # step 3 and the expressions went away
    assert res["update_values"] == [1.0, 0.0, 1.0] and res["update_steps_prop"] == 2
    cli2 = cli_reconstruct(face_photo, checkpoint, 2, tmp_path / "cli2.obj")[-1]
    np.testing.assert_allclose(np.load(tmp_path / "arrays" / "update_last.npy"), frames.head_to_blender(cli2),
                               atol=2e-5)
    assert res["animated"] and res["played"] == [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]

    # the texture: material "GLVD Face" with a packed 1024 image on Base Color; the temporary PNG is gone
    tex = res["texture"]
    assert tex["slots"] == ["GLVD Face"] and tex["roughness"] == 0.7 and tex["active_node"] == "TEX_IMAGE"
    img = tex["image"]
    assert img["name"] == "GLVD Face Texture" and img["size"] == [1024, 1024] and img["packed"]
    assert img["std"] > 0.02  # the photo's colours, not a flat fill
    assert res["texture_prop"] == "GLVD Face Texture" and res["temp_pngs"] == []
    up = res["update_texture"]
    assert up["slots"] == ["GLVD Face"] and up["image"]["name"] == "GLVD Face Texture" and up["image"]["packed"]
    assert up["n_images"] == tex["n_images"] and up["n_materials"] == tex["n_materials"]  # replaced, no orphan
    assert res["update_temp_pngs"] == []


def _fake_python(path: Path, body: str) -> str:
    """An executable that stands in for Python (the preferences' Python override)."""
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_bad_inputs_report_and_leave_no_object(face_photo: Path, checkpoint: Path, installed_home: Path,
                                               tmp_path: Path) -> None:
    grey = tmp_path / "grey wall.png"
    Image.new("RGB", (320, 240), (128, 128, 128)).save(grey)
    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"this is not a PNG at all" * 10)
    bad_ckpt = tmp_path / "corrupt.pt"
    bad_ckpt.write_bytes(b"\x00" * 100)
    crash = _fake_python(tmp_path / "crash.sh", "echo 'Fatal: the runtime blew up' >&2; exit 7")
    hang = _fake_python(tmp_path / "hang.sh",
                        """echo '{"event": "ready", "id": null, "version": "x", "pid": 0}'; sleep 120""")
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(face_photo, folder / "a.png")
    shutil.copy(face_photo, folder / "b.png")
    res = run_blender(f"""
        r = {{}}
        PHOTO, CKPT, DIR = {str(face_photo)!r}, {str(checkpoint)!r}, {str(folder)!r}
        def attempt(label, **kw):
            kw.setdefault("checkpoint", CKPT)
            kw.setdefault("device", "CPU")
            kw.setdefault("steps", 1)
            kw.setdefault("output", "FACE")
            before = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.shape_keys),
                      len(bpy.data.images), len(bpy.data.materials))
            try:
                ret = sorted(bpy.ops.glvd.reconstruct_face(**kw))
                msg = ""
            except RuntimeError as exc:  # bpy.ops raises on an ERROR report
                ret, msg = ["ERROR"], str(exc)
            after = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.shape_keys),
                     len(bpy.data.images), len(bpy.data.materials))
            r[label] = {{"ret": ret, "msg": msg, "unchanged": before == after}}
        img = lambda p: [{{"name": "", "filepath": p}}]
        attempt("no_photos")
        attempt("missing_file", images=img("/no/such/dir/face.jpg"))
        attempt("unreadable", images=img({str(garbage)!r}))
        attempt("no_face", images=img({str(grey)!r}))
        attempt("missing_checkpoint", images=img(PHOTO), checkpoint="/no/such/model.pt")
        attempt("corrupt_checkpoint", images=img(PHOTO), checkpoint={str(bad_ckpt)!r})
        bpy.context.view_layer.objects.active = bpy.data.objects["Cube"]
        attempt("update_not_glvd", images=img(PHOTO), target="UPDATE")
        PREFS.python = {crash!r}
        attempt("worker_crash", images=img(PHOTO))
        PREFS.python = {hang!r}
        PREFS.step_timeout = 2.0
        import time
        t0 = time.monotonic()
        attempt("worker_hang", images=img(PHOTO))
        r["hang_seconds"] = time.monotonic() - t0
        PREFS.python = ""
        PREFS.step_timeout = 120.0
        attempt("recovered", images=img(PHOTO), expressions=False)
        # Blender-style scripting: filepath= for one photo, directory= + files= for several
        def photos_of_active():
            return list(bpy.context.view_layer.objects.active["glvd_photos"])
        attempt("by_filepath", filepath=PHOTO, expressions=False, texture=False)
        r["by_filepath_photos"] = photos_of_active()
        attempt("by_files", directory=DIR, files=[{{"name": "a.png"}}, {{"name": "b.png"}}], expressions=False,
                texture=False)
        r["by_files_photos"] = photos_of_active()
        attempt("fp_missing", filepath="/no/such/dir/face.jpg")
        attempt("fp_empty", filepath="")
        attempt("dir_without_files", directory=DIR)
        attempt("files_without_dir", files=[{{"name": "a.png"}}])
        attempt("files_missing", directory=DIR, files=[{{"name": "a.png"}}, {{"name": "nope.jpg"}}])
        attempt("too_many", directory=DIR, files=[{{"name": "a.png"}}] * 9)
        attempt("both_forms", filepath=PHOTO, images=img(PHOTO))
        for i in range(9):
            item = bpy.context.scene.glvd.photos.add()
            item.name, item.filepath = "a.png", os.path.join(DIR, "a.png")
        attempt("too_many_in_list")
        result(r)
    """, installed_home, enable=True)
    expect = {
        "no_photos": "no photos",
        "missing_file": "photo not found: /no/such/dir/face.jpg",
        "unreadable": "unreadable_image",
        "no_face": "no_face",
        "missing_checkpoint": "checkpoint not found: /no/such/model.pt",
        "corrupt_checkpoint": "[checkpoint]",
        "update_not_glvd": "select a GLVD Face object",
        "worker_crash": "the runtime blew up",
        "worker_hang": "hung",
        "fp_missing": "photo not found: /no/such/dir/face.jpg",
        "fp_empty": "no photos selected: filepath is empty",
        "dir_without_files": "no photos selected: directory=",
        "files_without_dir": "files= needs directory=",
        "files_missing": f"photo not found: {folder / 'nope.jpg'}",
        "too_many": "too many photos: give 1 to 8 photos of one face (got 9)",
        "both_forms": "either as filepath=/files= or as images=",
        "too_many_in_list": "too many photos",
    }
    for label, text in expect.items():
        got = res[label]
        assert got["ret"] == ["ERROR"], (label, got)
        assert text in got["msg"], (label, got["msg"])
        assert got["unchanged"], (label, "the scene changed")
    assert "no face found in" in res["no_face"]["msg"] and "grey wall.png" in res["no_face"]["msg"]
    assert "exit code 7" in res["worker_crash"]["msg"]
    assert res["hang_seconds"] < 30
    assert res["recovered"]["ret"] == ["FINISHED"] and not res["recovered"]["unchanged"]
    assert res["by_filepath"]["ret"] == ["FINISHED"] and res["by_filepath_photos"] == [str(face_photo)]
    assert res["by_files"]["ret"] == ["FINISHED"]
    assert res["by_files_photos"] == [str(folder / "a.png"), str(folder / "b.png")]


def test_panel_list_relative_non_ascii_and_packed(face_photo: Path, checkpoint: Path, installed_home: Path,
                                                  tmp_path: Path) -> None:
    folder = tmp_path / "my scans ü"
    folder.mkdir()
    photo = folder / "фото лица.png"
    shutil.copy(face_photo, photo)
    res = run_blender(f"""
        r = {{}}
        FOLDER, CKPT = {str(folder)!r}, {str(checkpoint)!r}
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(FOLDER, "scene.blend"))
        s = bpy.context.scene.glvd
        r["add"] = sorted(bpy.ops.glvd.photo_add(directory=FOLDER, files=[{{"name": "фото лица.png"}}]))
        item = s.photos[0]
        item.image.filepath = bpy.path.relpath(item.image.filepath)
        item.filepath = item.image.filepath
        r["relative_path"] = item.image.filepath
        # the panel's list is used when no images are passed; the scene's texture setting off: no material
        n_mats = len(bpy.data.materials)
        s.texture = False
        r["relative"] = sorted(bpy.ops.glvd.reconstruct_face(steps=1, checkpoint=CKPT, device="CPU", output="FACE",
                                                             expressions=False))
        r["photos_prop"] = list(bpy.context.active_object["glvd_photos"])
        r["off_materials"] = (len(bpy.context.active_object.data.materials), len(bpy.data.materials) - n_mats,
                              "glvd_texture" in bpy.context.active_object)
        s.texture = True
        item.image.pack()
        os.rename(os.path.join(FOLDER, "фото лица.png"), os.path.join(FOLDER, "moved away.png"))
        s.lens_35mm = 26.0  # the panel's lens for photos without EXIF (a phone's main camera)
        r["packed"] = sorted(bpy.ops.glvd.reconstruct_face(steps=1, checkpoint=CKPT, device="CPU", output="FACE",
                                                           expressions=False))
        r["on_materials"] = [m.name for m in bpy.context.active_object.data.materials]
        r["lens_focal_sources"] = list(bpy.context.active_object["glvd_focal_sources"])
        s.texture, s.lens_35mm = False, 0.0
        # a scene camera whose background image is the photo is sent instead of estimating one
        import math
        cam = bpy.data.objects["Camera"]
        cam.location, cam.rotation_euler = (0.0, -0.8, 0.0), (math.pi / 2, 0.0, 0.0)
        cam.data.background_images.new().image = item.image
        r["with_camera"] = sorted(bpy.ops.glvd.reconstruct_face(steps=1, checkpoint=CKPT, device="CPU", output="FACE",
                                                                expressions=False, use_cameras=True))
        r["camera_sent"] = json.loads(bpy.context.active_object["glvd_cameras"])[0]
        r["camera_sources"] = list(bpy.context.active_object["glvd_camera_sources"])
        r["camera_focal_sources"] = list(bpy.context.active_object["glvd_focal_sources"])
        # a loaded image added from Blender's own list
        r["add_image"] = sorted(bpy.ops.glvd.photo_add_image(image=item.image.name))
        r["n_photos"] = len(s.photos)
        s.photo_index = 1
        bpy.ops.glvd.photo_remove()
        r["after_remove"] = len(s.photos)
        bpy.ops.glvd.photo_clear()
        r["after_clear"] = len(s.photos)
        PREFS.checkpoint = CKPT
        PREFS.device = "CPU"
        r["check"] = sorted(bpy.ops.glvd.check_runtime())
        r["status"] = PREFS.runtime_status
        r["faces"] = len([o for o in bpy.data.objects if "glvd_face" in o])
        result(r)
    """, installed_home, enable=True)
    assert res["add"] == ["FINISHED"]
    assert res["relative_path"] == "//фото лица.png"
    assert res["relative"] == ["FINISHED"] and res["photos_prop"] == ["//фото лица.png"]
    assert res["off_materials"] == [0, 0, False]  # texture off: no material
    assert res["on_materials"] == ["GLVD Face"]
    assert res["packed"] == ["FINISHED"]
    assert res["with_camera"] == ["FINISHED"]
    cam = res["camera_sent"]  # the front camera 0.8 m away, as the runtime received and used it
    np.testing.assert_allclose(cam["R"], np.diag([1.0, -1.0, -1.0]), atol=1e-6)
    np.testing.assert_allclose(cam["t"], [0.0, 0.0, 0.8], atol=1e-6)
    assert res["camera_sources"] == ["given"]  # the scene camera was used, not estimated
    assert res["camera_focal_sources"] == ["camera"] and res["lens_focal_sources"] == ["lens 26 mm"]
    np.testing.assert_allclose(cam["K"][0][0], 50.0 / 36.0 * 512, rtol=1e-5)  # 50 mm lens, 36 mm sensor, 512 px
    assert res["add_image"] == ["FINISHED"] and res["n_photos"] == 2
    assert res["after_remove"] == 1 and res["after_clear"] == 0
    assert res["check"] == ["FINISHED"]
    assert res["status"].startswith("torch ") and "checkpoint" in res["status"]
    assert res["faces"] == 3


def test_real_worker_cancel_and_serve_again(face_photo: Path, checkpoint: Path) -> None:
    """The worker protocol under cancel, with the real ``glvd worker`` (started the way Blender starts it)."""
    worker = worker_client.Worker(worker_client.worker_command(sys.executable), worker_client.worker_env(sys.path),
                                  cwd=str(REPO)).start()
    try:
        req = jobmod.Request(images=[str(face_photo)], steps=30, device="cpu", checkpoint=str(checkpoint),
                             mode="face")
        job = jobmod.Job(worker, req)
        job.start()
        t0 = time.monotonic()
        while not job.steps_seen and not job.finished and time.monotonic() - t0 < 300:
            job.pump()
            time.sleep(0.02)
        assert job.steps_seen, job.error
        job.cancel()
        while not job.finished and time.monotonic() - t0 < 300:
            job.pump()
            time.sleep(0.02)
        assert job.state == "cancelled" and len(job.steps_seen) < 30
        assert worker.alive
        # the same worker answers the next request
        again = jobmod.Job(worker, jobmod.Request(images=[str(face_photo)], steps=1, device="cpu",
                                                  checkpoint=str(checkpoint), expressions=False, mode="face"))
        again.run()
        assert again.state == "done", again.error
        assert again.result["vertices"].shape[0] == 2
    finally:
        worker.stop()
    assert not worker.alive


def test_live_steps_cancel_and_restore(face_photo: Path, checkpoint: Path, installed_home: Path) -> None:
    """The modal path without a window: what each timer tick does (pump + live keys), then Esc.

    Background Blender runs no modal operators, so this drives the same objects
    (Job.pump, ResultWriter.live_step/abort) that GLVD_OT_reconstruct_face.modal uses.
    """
    res = run_blender(f"""
        import importlib, time
        writer_mod = importlib.import_module(ADDON + ".result_writer")
        prestart = importlib.import_module(ADDON + ".prestart")
        preferences = importlib.import_module(ADDON + ".preferences")
        worker_client = importlib.import_module(ADDON + ".worker_client")
        inputs = importlib.import_module(ADDON + ".inputs")
        jobmod = importlib.import_module(ADDON + ".job")
        r = {{}}
        PHOTO, CKPT = {str(face_photo)!r}, {str(checkpoint)!r}
        ctx = bpy.context
        prefs = PREFS
        def counts():
            return [len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.images), len(bpy.data.materials)]
        results = {{}}
        def run_live(label, target=None, cancel_after=None, cold=False, texture=None):
            if cold:
                worker_client.shutdown_worker()
            # a cancelled run asks for many steps, so that the cancel reaches the worker before the
            # result even when this process is starved for a while (the pump hands over whole batches)
            steps = 24 if cancel_after else 4
            opts = writer_mod.Options(steps=steps, device="cpu", target="UPDATE" if target else "NEW", expressions=False,
                               animate=False, frames_per_step=5, use_cameras=False, checkpoint=CKPT,
                               texture=texture, mode="face")
            photos = inputs.from_paths([PHOTO])
            writer = writer_mod.ResultWriter(ctx, opts, photos, target)
            t0 = time.monotonic()
            job = jobmod.Job(prestart.worker_for(preferences.get(ctx)),
                             jobmod.Request(images=photos.paths, steps=steps, device="cpu", checkpoint=CKPT,
                                            texture=texture, mode="face"))
            job.start()
            first_key, live = None, []
            while not job.finished and time.monotonic() - t0 < 300:
                for u in job.pump():  # one timer tick, as GLVD_OT_reconstruct_face._apply does it
                    if u.kind == "step" and writer.live_step(u.step, u.vertices, job.topology):
                        ob = writer.obj
                        live.append([k.name for k in ob.data.shape_keys.key_blocks])
                        if first_key is None:
                            first_key = time.monotonic() - t0
                        if cancel_after and u.step >= cancel_after:
                            job.cancel()
                time.sleep(0.02)
            if job.state == "done":
                results[label] = dict(job.result)
                writer.finish(job.result, time.monotonic() - t0)
                jobmod.remove_texture_file(job.result)
            else:
                writer.abort()
            return {{"state": job.state, "first_key_s": first_key, "live": live, "warnings": writer.warnings}}
        n0 = (len(bpy.data.objects), len(bpy.data.meshes))
        c_start = counts()
        # first run in this session (nothing cached), cold worker: the "topology" event makes keys live
        r["first"] = run_live("first", cold=True)
        ob = ctx.view_layer.objects.active
        r["first_keys"] = [k.name for k in ob.data.shape_keys.key_blocks]
        mesh_writer = importlib.import_module(ADDON + ".mesh_writer")
        mesh_writer.remove_object(ob)
        r["warm"] = run_live("warm", texture=1024)
        ob = ctx.view_layer.objects.active
        r["warm_material"] = [m.name for m in ob.data.materials]
        # a texture that failed in the runtime, or a PNG that vanished: the mesh comes, a warning, no orphans
        c0 = counts()
        for label, patch in (("texture_error", {{"texture_png": None, "texture_error": "boom"}}),
                             ("texture_missing", {{"texture_png": "/no/such/glvd_tex.png"}})):
            opts = writer_mod.Options(steps=4, device="cpu", target="NEW", expressions=False, animate=False,
                               frames_per_step=5, use_cameras=False, checkpoint=CKPT, texture=1024, mode="face")
            w = writer_mod.ResultWriter(ctx, opts, inputs.from_paths([PHOTO]), None)
            o = w.finish(dict(results["warm"], **patch), 0.0)
            r[label] = {{"warnings": w.warnings, "materials": len(o.data.materials), "added": [
                a - b for a, b in zip(counts(), c0)]}}
            mesh_writer.remove_object(o)
        # the Expression option: the ARKit keys at each photo's weights (two photos: a keyframe each), or all 0
        import numpy as np
        N = len(results["warm"]["vertices"][0])
        fake = dict(results["warm"], expression_names=["jawOpen", "mouthSmile_L"],
                    expressions=np.full((2, N, 3), 0.001, np.float32),
                    expression_weights=np.array([[0.25, 0.5], [0.75, 0.0]], np.float32))
        for pose in ("PHOTO", "NEUTRAL"):
            opts = writer_mod.Options(steps=4, device="cpu", target="NEW", expressions=True, animate=False,
                               frames_per_step=5, use_cameras=False, checkpoint=CKPT, texture=None, mode="face",
                               expression=pose)
            w = writer_mod.ResultWriter(ctx, opts, inputs.from_paths([PHOTO, PHOTO]), None)
            o = w.finish(fake, 0.0)
            kb = o.data.shape_keys.key_blocks
            frames = {{}}
            for n in ("jawOpen", "mouthSmile_L"):
                fc = mesh_writer._fcurve(kb[n])
                frames[n] = [] if fc is None else [[round(p.co[0]), round(p.co[1], 3)] for p in fc.keyframe_points]
            r["pose_" + pose] = {{"values": [round(kb[n].value, 3) for n in ("jawOpen", "mouthSmile_L")],
                                 "frames": frames, "start": ctx.scene.frame_start}}
            mesh_writer.remove_object(o)
        ctx.view_layer.objects.active = ob
        snap_keys = [k.name for k in ob.data.shape_keys.key_blocks]
        import numpy as np
        before = np.empty(len(ob.data.vertices) * 3, np.float32)
        ob.data.shape_keys.key_blocks["GLVD 04"].points.foreach_get("co", before)
        r["n_after_warm"] = (len(bpy.data.objects) - n0[0], len(bpy.data.meshes) - n0[1])
        # cancel an update half-way: the object must come back exactly as it was
        c1 = counts()
        r["cancel_update"] = run_live("cancel_update", target=ob, cancel_after=2, texture=1024)
        r["cancel_update_added"] = [a - b for a, b in zip(counts(), c1)]
        after = np.empty_like(before)
        ob.data.shape_keys.key_blocks["GLVD 04"].points.foreach_get("co", after)
        r["restored_keys"] = [k.name for k in ob.data.shape_keys.key_blocks] == snap_keys
        r["restored_co"] = bool((before == after).all())
        r["values"] = [k.value for k in ob.data.shape_keys.key_blocks]
        # cancel a new object half-way: nothing is left
        n1 = (len(bpy.data.objects), len(bpy.data.meshes))
        r["cancel_new"] = run_live("cancel_new", cancel_after=1, texture=1024)
        r["left_after_cancel"] = (len(bpy.data.objects) - n1[0], len(bpy.data.meshes) - n1[1])
        r["left_images_materials"] = [a - b for a, b in zip(counts()[2:], c_start[2:])]
        result(r)
    """, installed_home, enable=True)
    assert res["first_keys"] == ["Basis", "GLVD 01", "GLVD 02", "GLVD 03", "GLVD 04"]
    for run in ("first", "warm"):
        assert res[run]["state"] == "done"
        assert res[run]["live"][0] == ["Basis", "GLVD 01"]  # the first key appears with the first step
        assert res[run]["live"][-1][-1] == "GLVD 04"
    assert res["n_after_warm"] == [1, 1]
    assert res["first"]["warnings"] == [] and res["warm"]["warnings"] == []
    assert res["warm_material"] == ["GLVD Face"]
    assert res["texture_error"]["warnings"] == ["no texture: boom"]
    assert "missing" in res["texture_missing"]["warnings"][0]
    for label in ("texture_error", "texture_missing"):
        assert res[label]["materials"] == 0 and res[label]["added"] == [1, 1, 0, 0], res[label]
    photo, neutral = res["pose_PHOTO"], res["pose_NEUTRAL"]
    assert photo["values"] == [0.25, 0.5] and neutral["values"] == [0.0, 0.0]
    f0 = photo["start"]
    assert photo["frames"] == {"jawOpen": [[f0, 0.25], [f0 + 1, 0.75]], "mouthSmile_L": [[f0, 0.5], [f0 + 1, 0.0]]}
    assert neutral["frames"] == {"jawOpen": [], "mouthSmile_L": []}
    assert res["cancel_update_added"] == [0, 0, 0, 0]
    assert res["cancel_update"]["state"] == "cancelled"
    assert res["restored_keys"] and res["restored_co"] and res["values"][-1] == 1.0
    assert res["cancel_new"]["state"] == "cancelled" and res["cancel_new"]["live"]
    assert res["left_after_cancel"] == [0, 0]
    assert res["left_images_materials"] == [1, 1]  # only the warm run's texture and material
    print(f"\nbutton -> first visible key: cold worker {res['first']['first_key_s']:.2f} s, "
          f"warm {res['warm']['first_key_s']:.2f} s")
