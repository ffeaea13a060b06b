#!/usr/bin/env python3
"""Build the GLVD Face Blender extension: dist/glvd_face-<version>-<platform>.zip.

Stages glvd_blender/ + blender_manifest.toml + wheels into build/extension/,
writes the manifest's ``wheels`` list, and runs Blender's own extension tool
(``blender_ext.py build`` then ``validate``), which ships inside the bpy package.

Wheels:
- ``glvd`` built from vendor/glvd (``pip wheel --no-deps``); the checkpoint and the
  frozen networks (glvd/weights/*.pt) travel inside it as package data. Its version
  carries a fingerprint of the package's files (``0.1.0+<hash>``): Blender keeps an
  installed wheel whose ``name-version`` it already has, so without it a reinstalled
  extension would keep the old runtime and checkpoint.
- unless ``--no-deps``: for each Python (3.11: Blender 4.2-5.0; 3.13: Blender 5.1+;
  Blender installs the wheels that match its own) torch (``--torch-wheel`` or the
  pinned release), its pure-Python dependencies, pillow, opencv-python-headless and
  scipy for the platform. numpy is never bundled: Blender ships its own and all
  extensions share one site-packages.
- Linux + Python 3.13 bundles no torch unless ``--torch-wheel`` gives a cp313 one: the
  registry's Linux torch is the CUDA build (about 3 GB of nvidia-* wheels). Blender 5.1+
  on Linux then runs the worker in a Python that has torch (the "Python" preference,
  docs/blender.md); Check Runtime says so. Windows and macOS cp313 torch wheels are
  CPU/MPS builds and are bundled.

    python build.py                       # linux-x64, wheels for Python 3.11 and 3.13
    python build.py --platform windows-x64
    python build.py --python 3.11         # only Blender 4.2-5.0's Python (smaller)
    python build.py --no-deps             # fast developer build (runtime wheel only)
    python build.py --torch-wheel /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MANIFEST = ROOT / "blender_manifest.toml"
ADDON_SRC = ROOT / "glvd_blender"
RUNTIME_SRC = ROOT / "vendor" / "glvd"

TORCH_PIN = "torch==2.13.0"
# Dependencies of the runtime inside Blender (vendor/glvd imports torch, numpy, cv2, PIL and
# scipy, nothing else). numpy is left out on purpose. Releases that accept numpy 1.26 (Blender
# 4.2-5.0) and numpy 2 (Blender 5.1+), with wheels for cp311 and cp313.
DEP_PINS = ["pillow==13.0.0", "opencv-python-headless==4.11.0.86", "scipy==1.16.3"]
# numpy: Blender's own. setuptools: torch lists it (for C++ extensions), unused at run time,
# and it would shadow tooling in the site-packages every extension shares.
NEVER_BUNDLE = ("numpy", "setuptools")
# Blender platform -> pip --platform tags (several: pip accepts any of them).
PLATFORM_TAGS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "linux-arm64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_14_0_arm64", "macosx_11_0_arm64"],
}
# Blender's Pythons: 3.11 in Blender 4.2-5.0, 3.13 in 5.1+ (see blender_version_max).
PYTHONS = ("3.11", "3.13")
# Where the registry's torch for that platform and Python is the CUDA build (its nvidia-* wheels
# are ~3 GB): no torch is bundled there unless --torch-wheel gives one.
NO_REGISTRY_TORCH = {("linux-x64", "3.13"), ("linux-arm64", "3.13")}


class BuildError(Exception):
    """A failure with a message for the user (no traceback)."""


def blender_ext_tool() -> Path:
    """Blender's extension CLI from the installed bpy package."""
    # find_spec locates bpy without importing it (importing starts Blender).
    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise BuildError("the bpy package is not installed (run `make setup`)")
    base = Path(spec.origin).resolve().parent
    found = sorted(base.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise BuildError(f"blender_ext.py not found under {base}")
    return found[-1]


def valid_tags_file(tool: Path) -> Path | None:
    """Blender's list of extension tags (so tags are validated like on the platform)."""
    tags = tool.parents[3] / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    return tags if tags.is_file() else None


def run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def runtime_fingerprint(src: Path = RUNTIME_SRC) -> str:
    """10 hex digits hashing the runtime package's files (code, assets, checkpoint) and pyproject.toml."""
    h = hashlib.sha256()
    files = [src / "pyproject.toml", *sorted((src / "glvd").rglob("*"))]
    for p in files:
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            h.update(p.relative_to(src).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:10]


def build_runtime_wheel(dest: Path, work: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of vendor/glvd versioned ``<version>+<fingerprint>``.

    The copy in ``work`` (no build isolation: offline and fast) also keeps setuptools' build/ and
    egg-info out of the source tree, so no stale file can ship.
    """
    if not (RUNTIME_SRC / "pyproject.toml").is_file():
        raise BuildError(f"runtime package not found: {RUNTIME_SRC}/pyproject.toml")
    src = work / "runtime"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    shutil.copy2(RUNTIME_SRC / "pyproject.toml", src / "pyproject.toml")
    shutil.copytree(RUNTIME_SRC / "glvd", src / "glvd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyproject = (src / "pyproject.toml").read_text(encoding="utf-8")
    version = tomllib.loads(pyproject)["project"]["version"]
    local = f"{version}+{runtime_fingerprint()}"
    pyproject, n = re.subn(r'(?m)^version\s*=\s*"[^"]*"', f'version = "{local}"', pyproject, count=1)
    if n != 1:
        raise BuildError(f"no version line in {RUNTIME_SRC}/pyproject.toml")
    (src / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    before = set(dest.glob("glvd-*.whl"))
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dest), str(src)],
        "building the glvd wheel",
    )
    shutil.rmtree(src, ignore_errors=True)
    new = sorted(set(dest.glob("glvd-*.whl")) - before) or sorted(dest.glob("glvd-*.whl"))
    if not new:
        raise BuildError("pip wheel produced no glvd-*.whl")
    return new[-1]


def wheel_python(wheel: Path | str) -> str | None:
    """``"3.13"`` for a ``...-cp313-cp313-...whl``; None for a pure (py3) or unparsable name."""
    parts = Path(wheel).name[:-4].split("-")
    m = re.fullmatch(r"cp3(\d+)", parts[-3]) if len(parts) >= 5 else None
    return f"3.{m.group(1)}" if m else None


def torch_for(platform: str, pythons: list[str], torch_wheels: list[Path]) -> dict[str, str | None]:
    """Per Python: the torch requirement to bundle (a wheel's path or the pin), or None for no torch."""
    given: dict[str, Path] = {}
    for w in torch_wheels:
        if not w.is_file():
            raise BuildError(f"--torch-wheel: no such file: {w}")
        py = wheel_python(w)
        if not w.name.lower().startswith("torch-") or py is None:
            raise BuildError(f"--torch-wheel: not a CPython torch wheel: {w.name}")
        if py not in pythons:
            raise BuildError(f"--torch-wheel: {w.name} is for Python {py}; building for {', '.join(pythons)}")
        if py in given:
            raise BuildError(f"--torch-wheel: two wheels for Python {py}")
        given[py] = w
    plan: dict[str, str | None] = {}
    for py in pythons:
        if py in given:
            plan[py] = str(given[py])
        elif (platform, py) in NO_REGISTRY_TORCH:
            plan[py] = None
        else:
            plan[py] = TORCH_PIN
    return plan


def pip_download_command(dest: Path, platform: str, python: str) -> list[str]:
    """``pip download`` of binary wheels for ``platform`` and CPython ``python``."""
    abi = "cp" + python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--abi", abi, "-d", str(dest)]
    for tag in PLATFORM_TAGS[platform]:
        cmd += ["--platform", tag]
    return cmd


# Environment markers of each platform (pip evaluates a --platform download's markers against the
# machine it runs on, so torch's own "platform_system == 'Linux'" CUDA pieces are resolved here).
PLATFORM_MARKERS = {
    "linux-x64": {"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64",
                  "os_name": "posix"},
    "linux-arm64": {"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "aarch64",
                    "os_name": "posix"},
    "windows-x64": {"platform_system": "Windows", "sys_platform": "win32", "platform_machine": "AMD64",
                    "os_name": "nt"},
    "macos-arm64": {"platform_system": "Darwin", "sys_platform": "darwin", "platform_machine": "arm64",
                    "os_name": "posix"},
}


def wheel_requirements(wheel: Path, platform: str, python: str) -> list[str]:
    """The wheel's ``Requires-Dist`` that apply on ``platform`` + ``python`` (no extras), minus NEVER_BUNDLE."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement
    with zipfile.ZipFile(wheel) as zf:
        meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise BuildError(f"{wheel.name}: no METADATA")
        text = zf.read(meta).decode("utf-8", "replace")
    env = {"python_version": python, "python_full_version": f"{python}.0", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "extra": "", **PLATFORM_MARKERS[platform]}
    out = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if req.name.lower().replace("_", "-") in NEVER_BUNDLE:
            continue
        req.marker = None
        out.append(str(req))
    return out


def download_dependency_wheels(dest: Path, platform: str, torch_wheels: list[Path],
                               pythons: list[str]) -> list[Path]:
    """Binary wheels for ``platform`` and each Python, torch's own dependencies included."""
    plan = torch_for(platform, pythons, torch_wheels)
    for py, torch in plan.items():
        pip = pip_download_command(dest, platform, py)
        run(pip + DEP_PINS, f"downloading dependency wheels for {platform}, Python {py}")
        if torch is None:
            print(f"note: no torch for Python {py} on {platform} (the registry's build is the CUDA one, "
                  f"~3 GB): Blender {'5.1+' if py == '3.13' else py} there runs the worker in a Python "
                  "that has torch (the extension's Python preference, docs/blender.md), "
                  "or pass --torch-wheel with a CPU build for that Python")
            continue
        if Path(torch).is_file():
            wheel = dest / Path(torch).name
            shutil.copy2(torch, wheel)
        else:
            before = set(dest.glob("torch-*.whl"))
            run(pip + ["--no-deps", torch], f"downloading {torch} for {platform}, Python {py}")
            wheel = next((w for w in sorted(dest.glob("torch-*.whl")) if wheel_python(w) == py), None)
            if wheel is None:
                raise BuildError(f"pip download {torch} left no torch wheel for Python {py}: "
                                 f"{sorted(w.name for w in set(dest.glob('torch-*.whl')) - before)}")
        # torch's own dependencies, with the markers of the target platform (not this machine's)
        deps = wheel_requirements(wheel, platform, py)
        if deps:
            run(pip + deps, f"downloading torch's dependencies for {platform}, Python {py}")
    removed = []
    for whl in sorted(dest.glob("*.whl")):
        dist = whl.name.split("-")[0].lower().replace("_", "-")
        # nvidia-*/triton: CUDA runtime pieces a CPU build does not need.
        if dist in NEVER_BUNDLE or dist.startswith(("nvidia-", "triton")):
            whl.unlink()
            removed.append(whl.name)
    if removed:
        print(f"not bundled: {', '.join(removed)}")
    return sorted(dest.glob("*.whl"))


def write_staged_manifest(src: Path, dest: Path, wheels: list[str], platform: str) -> None:
    """The manifest with ``wheels`` and ``platforms`` filled in (TOML written by hand, no tomli_w)."""
    text = src.read_text(encoding="utf-8")
    # drop any existing wheels/platforms lines (top-level keys only)
    text = re.sub(r"(?m)^(wheels|platforms)\s*=\s*\[[^\]]*\]\s*\n", "", text)
    lines = ",\n  ".join(f'"./wheels/{w}"' for w in wheels)
    block = f'platforms = ["{platform}"]\nwheels = [\n  {lines},\n]\n' if wheels else f'platforms = ["{platform}"]\n'
    # insert before the first table header so the keys stay top-level
    m = re.search(r"(?m)^\[", text)
    text = text[: m.start()] + block + "\n" + text[m.start():] if m else text + "\n" + block
    dest.write_text(text, encoding="utf-8")


def stage(build_dir: Path, platform: str, no_deps: bool, torch_wheels: list[Path] | None = None,
          pythons: list[str] | None = None) -> Path:
    stage_dir = build_dir / "extension"
    shutil.rmtree(stage_dir, ignore_errors=True)
    shutil.copytree(ADDON_SRC, stage_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    wheels_dir = stage_dir / "wheels"
    wheels_dir.mkdir()
    runtime = build_runtime_wheel(wheels_dir, build_dir)
    with zipfile.ZipFile(runtime) as zf:
        weights = [n for n in zf.namelist() if n.startswith("glvd/weights/") and n.endswith(".pt")]
    if weights:
        print(f"checkpoint in the runtime wheel: {', '.join(weights)}")
    else:
        print("note: no checkpoint (glvd/weights/*.pt) in the runtime wheel; "
              "set one in the add-on preferences")
    if not no_deps:
        download_dependency_wheels(wheels_dir, platform, torch_wheels or [], pythons or list(PYTHONS))
    wheels = sorted(p.name for p in wheels_dir.glob("*.whl"))
    write_staged_manifest(MANIFEST, stage_dir / "blender_manifest.toml", wheels, platform)
    return stage_dir


def summarize(zip_path: Path) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
    size = zip_path.stat().st_size
    print(f"\n{zip_path.relative_to(ROOT) if zip_path.is_relative_to(ROOT) else zip_path}: "
          f"{size / 1e6:.1f} MB, {len(infos)} files")
    code = [i for i in infos if not i.filename.startswith("wheels/")]
    wheels = [i for i in infos if i.filename.startswith("wheels/")]
    for i in code:
        print(f"  {i.filename:48s} {i.file_size:>10,d} B")
    for i in wheels:
        print(f"  {i.filename:48s} {i.compress_size / 1e6:>8.1f} MB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", default="linux-x64", choices=sorted(PLATFORM_TAGS))
    ap.add_argument("--python", action="append", choices=PYTHONS, default=None,
                    help="bundle wheels for this Python only (repeatable; default: 3.11 and 3.13)")
    ap.add_argument("--torch-wheel", type=Path, action="append", default=[],
                    help="bundle this torch wheel for the Python its tag names (repeatable)")
    ap.add_argument("--no-deps", action="store_true", help="only the runtime wheel (fast developer build)")
    ap.add_argument("--build-dir", type=Path, default=ROOT / "build")
    ap.add_argument("--dist-dir", type=Path, default=ROOT / "dist")
    args = ap.parse_args(argv)
    try:
        manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
        ext_id, version = manifest["id"], manifest["version"]
        tool = blender_ext_tool()
        pythons = sorted(set(args.python or PYTHONS))
        if not args.no_deps:  # check the given torch wheels before building anything
            torch_for(args.platform, pythons, args.torch_wheel)
        stage_dir = stage(args.build_dir.resolve(), args.platform, args.no_deps, args.torch_wheel, pythons)
        args.dist_dir.mkdir(parents=True, exist_ok=True)
        out = args.dist_dir.resolve() / f"{ext_id}-{version}-{args.platform}.zip"
        out.unlink(missing_ok=True)
        tags = valid_tags_file(tool)
        tag_args = [f"--valid-tags={tags}"] if tags else []
        run([sys.executable, str(tool), "build", "--source-dir", str(stage_dir),
             "--output-filepath", str(out), *tag_args], "blender_ext.py build")
        run([sys.executable, str(tool), "validate", *tag_args, str(out)], "blender_ext.py validate")
        with zipfile.ZipFile(out) as zf:
            bad = [n for n in zf.namelist() if re.match(r"wheels/numpy-", n)]
        if bad:
            raise BuildError(f"numpy must never be bundled, found {bad}")
        summarize(out)
        print(f"validated by Blender's extension tool: {out}")
        return 0
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        print(f"build.py: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
