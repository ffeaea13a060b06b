"""Shared fixtures: the built extension, a clean Blender per test (a subprocess), a face photo, a checkpoint.

Blender-side tests never import bpy in the pytest process: each Blender session
runs as ``python script.py`` with its own HOME, so every test gets a clean
Blender and register/unregister is exercised for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ADDON_MODULE = "bl_ext.user_default.glvd_face"
SHIPPED_CHECKPOINT = REPO / "vendor" / "glvd" / "glvd" / "weights" / "glvd_face.pt"
RESULT_TAG = "GLVD_TEST_RESULT "


# -- pure modules of the extension, without bpy ------------------------------------
def load_pure(name: str) -> types.ModuleType:
    """Import ``glvd_blender.<name>`` without running its ``__init__`` (which imports bpy)."""
    import importlib

    pkg_name = "glvd_blender_pure"
    if pkg_name not in sys.modules:
        pkg = types.ModuleType(pkg_name)
        pkg.__path__ = [str(REPO / "glvd_blender")]
        sys.modules[pkg_name] = pkg
    return importlib.import_module(f"{pkg_name}.{name}")


# -- inputs ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def face_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo of a face (NASA's astronaut portrait from scikit-image, public domain)."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped checkpoint when it exists, else an explicitly UNTRAINED one for plumbing tests.

    With ../shared's ICT kit the untrained model has the real 9,409-vertex template,
    without it a tiny stand-in kit (glvd_train.tinykit).
    """
    if SHIPPED_CHECKPOINT.is_file():
        return SHIPPED_CHECKPOINT
    import warnings

    import torch
    from glvd.checkpoint import save_checkpoint
    from glvd.model import GLVD, ModelConfig
    from glvd.topology import default_kit_path, load_kit, template_from_kit

    tmp = tmp_path_factory.mktemp("ckpt")
    kit = default_kit_path()
    if not kit.is_file():
        from glvd_train.tinykit import make_tiny_kit

        kit = make_tiny_kit(tmp / "tiny_kit.npz")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = GLVD(ModelConfig(), template_from_kit(load_kit(kit)))
    # output layers start at zero (no motion); make them random so every step moves the mesh
    # and a mix-up of steps would show
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 1 and float(p.abs().sum()) == 0.0:
                torch.nn.init.normal_(p, std=0.02)
    return save_checkpoint(tmp / "untrained.pt", model.eval(),
                           {"trained": False, "note": "UNTRAINED: random weights, for tests only"})


# -- the extension -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ext_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``build.py --no-deps`` into a temporary folder (the developer's dist/ is left alone)."""
    tmp = tmp_path_factory.mktemp("build")
    proc = subprocess.run([sys.executable, str(REPO / "build.py"), "--no-deps", "--build-dir", str(tmp / "build"),
                           "--dist-dir", str(tmp / "dist")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"build.py failed:\n{proc.stdout}\n{proc.stderr}"
    zips = sorted((tmp / "dist").glob("glvd_face-*-linux-x64.zip"))
    assert len(zips) == 1, proc.stdout
    return zips[0]


def run_blender(code: str, home: Path, enable: bool = False, timeout: float = 600,
                env: dict[str, str] | None = None, python: str | None = None) -> dict:
    """Run ``code`` in a fresh Blender (the bpy module) with HOME=home; return what it passed to ``result()``.

    ``python``: the interpreter whose bpy runs it (default this one's, bpy 5.0.1; the Blender 5.2
    tests pass .venv52's, bpy 5.2.3).

    The script gets ``bpy``, ``json``, ``ADDON`` and ``result(dict)``; it fails the test on any exception.
    With ``enable`` the installed extension is enabled first and ``PREFS`` holds its preferences.
    """
    home.mkdir(parents=True, exist_ok=True)
    script = home / "_session.py"
    prelude = textwrap.dedent(f"""
        import json, os, sys
        import bpy
        ADDON = {ADDON_MODULE!r}
        def result(d):
            print({RESULT_TAG!r} + json.dumps(d), flush=True)
    """)
    script.write_text(prelude + (ENABLE if enable else "") + textwrap.dedent(code), encoding="utf-8")
    full_env = dict(os.environ, HOME=str(home))
    full_env.pop("BLENDER_USER_RESOURCES", None)
    full_env.pop("BLENDER_USER_CONFIG", None)
    full_env.update(env or {})
    proc = subprocess.run([python or sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=str(home))
    out = proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    assert proc.returncode == 0 and lines, f"Blender session failed (exit {proc.returncode}):\n{out[-6000:]}"
    return json.loads(lines[-1][len(RESULT_TAG):])


@pytest.fixture(scope="session")
def installed_home(ext_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME where the built zip is installed (later sessions enable it, as Blender does at start-up)."""
    home = tmp_path_factory.mktemp("home_installed")
    res = run_blender(f"""
        r = bpy.ops.extensions.package_install_files(filepath={str(ext_zip)!r}, repo="user_default",
                                                     enable_on_install=True)
        result({{"ret": sorted(r), "enabled": ADDON in bpy.context.preferences.addons}})
    """, home)
    assert res == {"ret": ["FINISHED"], "enabled": True}
    return home


ENABLE = """
bpy.ops.preferences.addon_enable(module=ADDON)
PREFS = bpy.context.preferences.addons[ADDON].preferences
"""


def obj_vertices(path: Path) -> np.ndarray:
    rows = [ln.split()[1:4] for ln in path.read_text().splitlines() if ln.startswith("v ")]
    return np.asarray(rows, dtype=np.float64)
