"""Which Python runs the GLVD worker, how it finds the runtime, and what is missing there (no bpy).

Blender's own Python (the default) runs ``<python> -m glvd worker`` with Blender's
``sys.path`` as ``PYTHONPATH``: the extension's wheels (glvd, torch, opencv, ...) are on it.

Another Python (the "Python" preference: Blender 5.1+ on Linux, whose extension zip
carries no torch for Python 3.13, or a Python with a CUDA torch) must not see
Blender's ``sys.path``: its binary packages are built for Blender's Python and would
shadow its own. It gets only the extension's ``glvd`` package, loaded from its folder
by a small bootstrap (``python -c``), and its own torch, numpy, opencv, pillow and
scipy. The bootstrap first checks that they are there and otherwise exits with one
line that names what is missing and the command that installs it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence

# import name -> the pip requirement that provides it (the runtime imports these and nothing else)
REQUIRED = {
    "torch": "torch==2.13.0",
    "numpy": "numpy",
    "cv2": "opencv-python-headless==4.11.0.86",
    "PIL": "pillow==13.0.0",
    "scipy": "scipy==1.16.3",
}
DOCS = "docs/blender.md, 'A Python for the worker'"
# the one command that makes a Python for the worker (docs/blender.md)
VENV_COMMAND = ("python3 -m venv ~/glvd-py && ~/glvd-py/bin/pip install "
                + " ".join(REQUIRED.values()))
EXIT_MISSING = 3

# Run as ``python -c BOOTSTRAP <folder holding glvd or ''>``. No f-strings: an old Python must
# still get to the version check and say why it cannot run the worker.
BOOTSTRAP = r"""
import sys
want = @WANT@
if sys.version_info < (3, 11):
    sys.stderr.write("GLVD: the worker Python %s is Python %d.%d; the runtime needs 3.11 or newer\n"
                     % (sys.executable, sys.version_info[0], sys.version_info[1]))
    sys.exit(@CODE@)
import importlib.util, os, runpy
missing = [m for m in want if importlib.util.find_spec(m) is None]
if missing:
    sys.stderr.write("GLVD: the worker Python %s (Python %d.%d) has no %s: install with: %s -m pip install %s\n"
                     % (sys.executable, sys.version_info[0], sys.version_info[1], ", ".join(missing),
                        sys.executable, " ".join(want[m] for m in missing)))
    sys.exit(@CODE@)
home = sys.argv[1] if len(sys.argv) > 1 else ""
init = os.path.join(home, "glvd", "__init__.py")
if home and os.path.isfile(init):  # the extension's runtime, whatever this Python has installed
    spec = importlib.util.spec_from_file_location("glvd", init,
                                                  submodule_search_locations=[os.path.dirname(init)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["glvd"] = mod
    spec.loader.exec_module(mod)
elif importlib.util.find_spec("glvd") is None:
    sys.stderr.write("GLVD: the GLVD runtime (package glvd) is found neither in the extension nor in %s\n"
                     % sys.executable)
    sys.exit(@CODE@)
sys.argv = ["glvd", "worker"]
runpy.run_module("glvd", run_name="__main__", alter_sys=True)
""".replace("@WANT@", repr(REQUIRED)).replace("@CODE@", str(EXIT_MISSING))


def is_blenders(python: str) -> bool:
    """Whether ``python`` is this process's own interpreter (Blender's, or the venv's under the bpy module)."""
    if not python:
        return True
    try:
        return os.path.samefile(python, sys.executable)
    except OSError:
        return os.path.abspath(python) == os.path.abspath(sys.executable)


def missing_here() -> list[str]:
    """The runtime's imports that this process's ``sys.path`` lacks (the worker gets the same path)."""
    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def runtime_folder() -> str:
    """The folder that holds this Blender's ``glvd`` package (the extension's wheel), or ''."""
    try:
        spec = importlib.util.find_spec("glvd")
    except (ImportError, ValueError):
        return ""
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    return os.path.dirname(os.path.abspath(locs[0])) if locs else ""


def missing_message(missing: Sequence[str]) -> str:
    """What to do when Blender's own Python lacks runtime packages (`` | `` separates display lines)."""
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if "torch" in missing:
        why = " (the Linux build bundles none for Python 3.13)" if sys.platform.startswith("linux") else ""
        head = f"PyTorch is missing: this extension build has no torch for Blender's Python {py}{why}"
    else:
        head = f"Blender's Python {py} lacks {', '.join(missing)} (the extension's wheels did not install?)"
    return (f"{head} | set Preferences > Add-ons > GLVD Face > Python to a Python that has them, "
            f"e.g. made with: {VENV_COMMAND} | then Python = ~/glvd-py/bin/python ({DOCS})")


def worker_launch(python: str, sys_path: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(argv, PYTHONPATH entries)`` of the worker for ``python``.

    Raises ``ValueError`` with :func:`missing_message` when ``python`` is Blender's own and the
    runtime's packages are not importable here (the worker would die on its first import).
    """
    if is_blenders(python):
        missing = missing_here()
        if missing:
            raise ValueError(missing_message(missing))
        return [python or sys.executable, "-m", "glvd", "worker"], list(sys_path)
    return [python, "-c", BOOTSTRAP, runtime_folder()], []
