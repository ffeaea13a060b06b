"""The built zip installs, registers, re-registers and uninstalls cleanly in real Blender (bpy module)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_blender


def test_install_enable_register_twice_disable_uninstall(ext_zip: Path, tmp_path: Path) -> None:
    res = run_blender(f"""
        import addon_utils
        out = {{}}
        r = bpy.ops.extensions.package_install_files(filepath={str(ext_zip)!r}, repo="user_default",
                                                     enable_on_install=True)
        out["install"] = sorted(r)
        def state():
            return {{
                "enabled": ADDON in bpy.context.preferences.addons,
                "operator": hasattr(bpy.types, "GLVD_OT_reconstruct_face"),
                "panel": hasattr(bpy.types, "VIEW3D_PT_glvd_reconstruct"),
                "scene_props": hasattr(bpy.types.Scene, "glvd"),
                "wm_props": hasattr(bpy.types.WindowManager, "glvd_job"),
            }}
        out["after_install"] = state()
        op = bpy.ops.glvd.reconstruct_face
        out["op_idname"] = op.idname()
        out["op_options"] = sorted(op.get_rna_type().bl_rna.properties.keys())
        out["op_poll"] = op.poll()
        pt = bpy.types.VIEW3D_PT_glvd_reconstruct
        out["panel_meta"] = [pt.bl_space_type, pt.bl_region_type, pt.bl_category, pt.bl_label]
        out["prefs"] = type(bpy.context.preferences.addons[ADDON].preferences).__name__
        # the wheel's runtime is importable in Blender (the worker gets this sys.path)
        import glvd
        out["glvd_from_extension"] = "extensions" in glvd.__file__
        out["cycles"] = []
        for _ in range(2):  # register/unregister twice
            bpy.ops.preferences.addon_disable(module=ADDON)
            off = state()
            bpy.ops.preferences.addon_enable(module=ADDON)
            out["cycles"].append([off, state()])
        bpy.ops.preferences.addon_disable(module=ADDON)
        out["disabled"] = state()
        repos = [r.module for r in bpy.context.preferences.extensions.repos]
        r = bpy.ops.extensions.package_uninstall(repo_index=repos.index("user_default"), pkg_id="glvd_face")
        out["uninstall"] = sorted(r)
        d = os.path.join(bpy.utils.user_resource("EXTENSIONS"), "user_default", "glvd_face")
        out["dir_left"] = os.path.exists(d)
        out["final"] = state()
        result(out)
    """, tmp_path / "home")
    on = {"enabled": True, "operator": True, "panel": True, "scene_props": True, "wm_props": True}
    off = {k: False for k in on}
    assert res["install"] == ["FINISHED"]
    assert res["after_install"] == on
    assert res["op_idname"] == "GLVD_OT_reconstruct_face"
    assert {"images", "steps", "device", "target", "expressions", "animate", "checkpoint"} <= set(res["op_options"])
    assert res["op_poll"] is True
    assert res["panel_meta"] == ["VIEW_3D", "UI", "GLVD", "Reconstruct Face"]
    assert res["prefs"] == "GLVD_AP_preferences"
    assert res["glvd_from_extension"] is True
    assert res["cycles"] == [[off, on], [off, on]]
    assert res["disabled"] == off
    assert res["uninstall"] == ["FINISHED"]
    assert res["dir_left"] is False
    assert res["final"] == off
