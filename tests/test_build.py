"""build.py: the zip, its manifest (Blender's own validator), what it must and must not contain."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from conftest import REPO

TOOL_GLOB = "bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"


def _tool() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    assert spec is not None and spec.origin
    found = sorted(Path(spec.origin).parent.parent.glob(TOOL_GLOB))
    assert found, "blender_ext.py not found in the bpy package"
    return found[-1]


def _build_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("glvd_build", REPO / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_runtime_fingerprint_follows_the_package_files(tmp_path: Path) -> None:
    fingerprint = _build_module().runtime_fingerprint
    (tmp_path / "glvd" / "weights").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "0.1.0"\n')
    (tmp_path / "glvd" / "model.py").write_text("A = 1\n")
    (tmp_path / "glvd" / "weights" / "glvd_face.pt").write_bytes(b"weights v1")
    first = fingerprint(tmp_path)
    assert len(first) == 10 and int(first, 16) >= 0
    (tmp_path / "glvd" / "__pycache__").mkdir()
    (tmp_path / "glvd" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"cache")
    assert fingerprint(tmp_path) == first  # byte-code caches do not count
    (tmp_path / "glvd" / "weights" / "glvd_face.pt").write_bytes(b"weights v2")
    second = fingerprint(tmp_path)
    assert second != first  # a new checkpoint is a new wheel version
    (tmp_path / "glvd" / "model.py").write_text("A = 2\n")
    assert fingerprint(tmp_path) not in (first, second)  # so is changed code


def test_root_manifest_rules() -> None:
    m = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    assert m["id"] == "glvd_face" and m["id"].isidentifier()
    assert len(m["tagline"]) <= 64 and not m["tagline"].endswith(".")
    assert m["blender_version_min"] == "4.2.0"
    assert m["blender_version_max"] == "5.1.0"  # Blender 5.1 moved to Python 3.13; our wheels are cp311
    assert m["license"] == ["SPDX:GPL-3.0-or-later"]
    assert m["permissions"]["files"]
    assert all(v not in ("", [], {}) for v in m.values())


def test_zip_builds_validates_and_has_the_runtime(ext_zip: Path) -> None:
    assert ext_zip.name == "glvd_face-0.1.0-linux-x64.zip"
    with zipfile.ZipFile(ext_zip) as zf:
        names = zf.namelist()
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    for mod in ("__init__.py", "engine.py", "frames.py", "mesh_writer.py", "operators.py", "panels.py",
                "preferences.py", "properties.py"):
        assert mod in names
    wheels = [n for n in names if n.startswith("wheels/")]
    # the runtime wheel's version carries the fingerprint of its files, so Blender reinstalls a changed runtime
    assert [w for w in wheels if Path(w).name.startswith("glvd-")] == \
        [f"wheels/glvd-0.1.0+{_build_module().runtime_fingerprint()}-py3-none-any.whl"]
    assert not any(Path(w).name.lower().startswith("numpy") for w in wheels), "numpy must never be bundled"
    # the runtime ships inference only: training, the data engine and evaluation live in training/
    with zipfile.ZipFile(ext_zip) as zf, zipfile.ZipFile(zf.open(next(w for w in wheels if "/glvd-" in w))) as wf:
        runtime = wf.namelist()
    assert "glvd/raster.py" in runtime and "glvd/texture.py" in runtime
    for gone in ("glvd/train.py", "glvd/evaluate.py", "glvd/baselines.py", "glvd/tinykit.py", "glvd/synth/"):
        assert not any(n.startswith(gone) for n in runtime), gone
    assert not any(n.startswith("glvd_train") for n in runtime)
    assert not any("__pycache__" in n for n in names)
    # the staged manifest lists exactly the bundled wheels
    assert sorted(manifest["wheels"]) == sorted(f"./{w}" for w in wheels)
    assert manifest["platforms"] == ["linux-x64"]
    proc = subprocess.run([sys.executable, str(_tool()), "validate", str(ext_zip)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_fails_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "build.py"), "--platform", "amiga"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr
    proc = subprocess.run([sys.executable, str(REPO / "build.py"), "--torch-wheel", str(tmp_path / "nope.whl"),
                           "--build-dir", str(tmp_path / "b"), "--dist-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "build.py: error: --torch-wheel: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
