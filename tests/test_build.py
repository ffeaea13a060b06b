"""build.py: the zip, its manifest (Blender's own validator), what it must and must not contain."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

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
    # exclusive: through 5.2 LTS; build.py bundles wheels for Python 3.11 (4.2-5.0) and 3.13 (5.1+)
    assert m["blender_version_max"] == "5.3.0"
    assert m["license"] == ["SPDX:GPL-3.0-or-later"]
    assert m["copyright"] == ["2026 GLVD Face developers"]
    assert "website" not in m  # no public URL yet: a dead link would be worse than none
    assert m["permissions"]["files"]
    assert all(v not in ("", [], {}) for v in m.values())


def test_zip_builds_validates_and_has_the_runtime(ext_zip: Path) -> None:
    assert ext_zip.name == "glvd_face-0.1.0-linux-x64.zip"
    with zipfile.ZipFile(ext_zip) as zf:
        names = zf.namelist()
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    for mod in ("__init__.py", "worker_client.py", "frames.py", "mesh_writer.py", "reconstruct.py",
                "result_writer.py", "photo_list.py", "runtime_check.py", "prestart.py", "panels.py",
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


def _fake_wheel(path: Path, requires: list[str]) -> Path:
    name, version = path.name.split("-")[:2]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", "Metadata-Version: 2.1\nName: torch\n"
                    + "".join(f"Requires-Dist: {r}\n" for r in requires))
    return path


def test_wheels_for_both_pythons_plan(tmp_path: Path) -> None:
    """Which torch each Python gets per platform, and the pip commands (no download: offline)."""
    b = _build_module()
    assert b.PYTHONS == ("3.11", "3.13")
    assert b.wheel_python("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl") == "3.11"
    assert b.wheel_python("scipy-1.16.3-cp313-cp313-win_amd64.whl") == "3.13"
    assert b.wheel_python("sympy-1.14.0-py3-none-any.whl") is None
    both = ["3.11", "3.13"]
    # Linux + 3.13: the registry's torch is the CUDA build (~3 GB): none, the Python preference instead
    assert b.torch_for("linux-x64", both, []) == {"3.11": b.TORCH_PIN, "3.13": None}
    assert b.torch_for("windows-x64", both, []) == {"3.11": b.TORCH_PIN, "3.13": b.TORCH_PIN}
    assert b.torch_for("macos-arm64", both, []) == {"3.11": b.TORCH_PIN, "3.13": b.TORCH_PIN}
    cpu313 = _fake_wheel(tmp_path / "torch-2.13.0+cpu-cp313-cp313-manylinux_2_28_x86_64.whl", [])
    assert b.torch_for("linux-x64", both, [cpu313]) == {"3.11": b.TORCH_PIN, "3.13": str(cpu313)}
    with pytest.raises(b.BuildError, match="is for Python 3.13"):
        b.torch_for("linux-x64", ["3.11"], [cpu313])
    with pytest.raises(b.BuildError, match="two wheels for Python 3.13"):
        b.torch_for("linux-x64", both, [cpu313, cpu313])
    with pytest.raises(b.BuildError, match="not a CPython torch wheel"):
        b.torch_for("linux-x64", both, [_fake_wheel(tmp_path / "numpy-2.0-cp313-cp313-win_amd64.whl", [])])
    cmd = b.pip_download_command(tmp_path, "windows-x64", "3.13")
    assert cmd[cmd.index("--python-version") + 1] == "3.13" and cmd[cmd.index("--abi") + 1] == "cp313"
    assert cmd[cmd.index("--platform") + 1] == "win_amd64" and "--only-binary=:all:" in cmd
    # the runtime's dependencies: torch, numpy (Blender's), cv2, PIL, scipy; nothing of mediapipe's
    names = [r.split("==")[0] for r in b.DEP_PINS]
    assert names == ["pillow", "opencv-python-headless", "scipy"]
    assert not hasattr(b, "MEDIAPIPE_PIN") and "numpy" in b.NEVER_BUNDLE


def test_torch_dependencies_follow_the_target_platform(tmp_path: Path) -> None:
    """pip evaluates a --platform download's markers on this machine: build.py evaluates torch's for the target."""
    b = _build_module()
    whl = _fake_wheel(tmp_path / "torch-2.13.0-cp313-cp313-win_amd64.whl", [
        "filelock", "setuptools>=77.0.3", "sympy>=1.13.3",
        'nvidia-nccl-cu13==2.29.7; platform_system == "Linux"',
        'typing-extensions>=4.10.0; python_version >= "3.12"',
        'optree>=0.13.0; extra == "optree"'])
    assert b.wheel_requirements(whl, "windows-x64", "3.13") == ["filelock", "sympy>=1.13.3",
                                                                "typing-extensions>=4.10.0"]
    assert "nvidia-nccl-cu13==2.29.7" in b.wheel_requirements(whl, "linux-x64", "3.13")
    assert "typing-extensions>=4.10.0" not in b.wheel_requirements(whl, "macos-arm64", "3.11")


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
