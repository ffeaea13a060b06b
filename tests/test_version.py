"""One version for the project: the runtime's ``glvd.__version__``; everything else must agree with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import glvd

REPO = Path(__file__).resolve().parents[1]


def _toml(path: str) -> dict:
    return tomllib.loads((REPO / path).read_text(encoding="utf-8"))


def test_every_version_is_the_runtimes() -> None:
    v = glvd.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", v), v  # the manifest's rule (semantic version, no local part)
    assert _toml("blender_manifest.toml")["version"] == v
    assert _toml("vendor/glvd/pyproject.toml")["project"]["version"] == v
    assert _toml("training/pyproject.toml")["project"]["version"] == v
    import glvd_train

    assert glvd_train.__version__ == v
    # the extension marks its objects with the version (mesh_writer.VERSION), without importing glvd
    text = (REPO / "glvd_blender" / "mesh_writer.py").read_text(encoding="utf-8")
    assert re.search(r'^VERSION = "([^"]+)"', text, re.M).group(1) == v
