"""Blender 5.2 LTS (bpy 5.2.3, Python 3.13): install the zip, Check Runtime, reconstruct a photo through bpy.ops.

The Linux zip carries no torch for Python 3.13 (the registry's is the CUDA build), so
this is the documented Linux route: Check Runtime first says what is missing and how
to make a Python for the worker; then the "Python" preference points at this
project's 3.11 venv (the pytest interpreter, which has torch) and Reconstruct Face
writes exactly the CLI's steps as keys.

`make test-blender52` runs it with GLVD_BPY52_PYTHON = .venv52's python (bpy 5.2.3
installed there); skipped otherwise, so `make test` does not run it twice.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import load_pure, run_blender
from test_blender_reconstruct import cli_reconstruct

BPY52 = os.environ.get("GLVD_BPY52_PYTHON", "")
pytestmark = pytest.mark.skipif(not BPY52, reason="Blender 5.2 (bpy 5.2.3, Python 3.13) runs in `make test-blender52`")

frames = load_pure("frames")
rp = load_pure("runtime_python")


def test_blender52_install_check_runtime_reconstruct(ext_zip: Path, face_photo: Path, checkpoint: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "arrays"
    out.mkdir()
    t0 = time.monotonic()
    res = run_blender(f"""
        import numpy as np
        r = {{"blender": list(bpy.app.version), "python": list(sys.version_info[:2]), "numpy": np.__version__}}
        ret = bpy.ops.extensions.package_install_files(filepath={str(ext_zip)!r}, repo="user_default",
                                                       enable_on_install=True)
        r["install"] = sorted(ret)
        r["enabled"] = ADDON in bpy.context.preferences.addons
        PREFS = bpy.context.preferences.addons[ADDON].preferences
        import glvd
        r["glvd_from_extension"] = "extensions" in glvd.__file__
        def check():
            try:
                return sorted(bpy.ops.glvd.check_runtime()), PREFS.runtime_status
            except RuntimeError as exc:  # bpy.ops raises on an ERROR report
                return ["ERROR"], str(exc)
        # Blender's own Python 3.13 has no torch here: Check Runtime says what is missing and what to do
        r["check_own"] = check()
        r["status_own"] = PREFS.runtime_status
        PREFS.python = {sys.executable!r}  # the project's 3.11 venv: torch, numpy 1.26, opencv, scipy, pillow
        r["check_venv"] = check()
        ret = bpy.ops.glvd.reconstruct_face(images=[{{"name": "", "filepath": {str(face_photo)!r}}}], steps=3,
                                            device="CPU", checkpoint={str(checkpoint)!r}, expressions=True,
                                            output="FACE")
        r["ret"] = sorted(ret)
        ob = bpy.context.view_layer.objects.active
        keys = ob.data.shape_keys.key_blocks
        r["keys"] = [k.name for k in keys]
        r["values"] = [k.value for k in keys]
        r["active_key"] = ob.active_shape_key.name
        for k in keys[:4]:
            a = np.empty(len(k.data) * 3, np.float32)
            k.points.foreach_get("co", a)
            np.save(os.path.join({str(out)!r}, k.name.replace(" ", "_") + ".npy"), a.reshape(-1, 3))
        result(r)
    """, tmp_path / "home", python=BPY52)
    blender_s = time.monotonic() - t0
    print(f"Blender {res['blender']} (Python {res['python']}, numpy {res['numpy']}): {blender_s:.1f} s")
    assert res["blender"][:2] == [5, 2] and res["python"] == [3, 13]
    assert res["install"] == ["FINISHED"] and res["enabled"] and res["glvd_from_extension"]
    ret, msg = res["check_own"]
    assert ret == ["ERROR"] and "PyTorch is missing" in msg and "Python 3.13" in msg
    assert rp.VENV_COMMAND in msg and "Python" in msg
    assert res["status_own"].startswith("failed: PyTorch is missing")
    ret, status = res["check_venv"]
    assert ret == ["FINISHED"], status
    import torch

    assert status.startswith(f"torch {torch.__version__}") and checkpoint.name in status
    assert res["ret"] == ["FINISHED"]
    keys = res["keys"]
    assert keys[:4] == ["Basis", "GLVD 01", "GLVD 02", "GLVD 03"] and len(keys) == 4 + 53
    assert res["values"][1:4] == [0.0, 0.0, 1.0] and res["active_key"] == "GLVD 03"
    # the same steps as the CLI in this venv (the worker ran here, Blender 5.2 only wrote the keys)
    for i, cli_v in enumerate(cli_reconstruct(face_photo, checkpoint, 3, tmp_path / "cli.obj"), start=1):
        np.testing.assert_allclose(np.load(out / f"GLVD_{i:02d}.npy"), frames.head_to_blender(cli_v), atol=2e-5,
                                   err_msg=f"GLVD {i:02d}")
