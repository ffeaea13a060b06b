"""glvd_blender.runtime_python: which Python runs the worker, what it is given, what it says when something is missing.

No Blender: the module is pure (the Blender 5.2 route through it runs in tests/test_blender52.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, load_pure

rp = load_pure("runtime_python")


def test_blenders_own_python_gets_sys_path_and_the_module_command() -> None:
    assert rp.is_blenders("") and rp.is_blenders(sys.executable)
    assert not rp.is_blenders("/bin/sh")
    path = ["/a", "/b"]
    assert rp.worker_launch("", path) == ([sys.executable, "-m", "glvd", "worker"], path)
    assert rp.worker_launch(sys.executable, path) == ([sys.executable, "-m", "glvd", "worker"], path)


def test_blenders_own_python_without_torch_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rp, "missing_here", lambda: ["torch", "scipy"])
    with pytest.raises(ValueError) as exc:
        rp.worker_launch("", sys.path)
    msg = str(exc.value)
    assert msg.startswith("PyTorch is missing")
    assert f"Python {sys.version_info[0]}.{sys.version_info[1]}" in msg
    assert "Preferences > Add-ons > GLVD Face > Python" in msg
    assert rp.VENV_COMMAND in msg and "torch==2.13.0" in rp.VENV_COMMAND and "docs/blender.md" in msg
    monkeypatch.setattr(rp, "missing_here", lambda: ["scipy"])
    with pytest.raises(ValueError, match="lacks scipy"):
        rp.worker_launch("", sys.path)


def test_another_python_gets_only_the_extensions_runtime() -> None:
    argv, path = rp.worker_launch("/opt/other/bin/python3", ["/blender/site-packages"])
    assert path == []  # Blender's binary packages would shadow that Python's own
    assert argv[:3] == ["/opt/other/bin/python3", "-c", rp.BOOTSTRAP]
    # the folder holding this process's glvd (the extension's wheel in Blender; vendor/glvd here, editable)
    assert (Path(argv[3]) / "glvd" / "__init__.py").is_file()
    assert argv[3] == rp.runtime_folder()


def test_bootstrap_runs_the_given_runtime_not_its_own(tmp_path: Path) -> None:
    # a stand-in runtime: proves the bootstrap loads glvd from the folder even though this Python has one
    pkg = tmp_path / "ext" / "glvd"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("MARK = 'extension copy'\n")
    (pkg / "__main__.py").write_text(
        "import json, sys\nimport glvd\n"
        "print(json.dumps({'event': 'ready', 'id': None, 'mark': glvd.MARK, 'argv': sys.argv[1:]}))\n")
    proc = subprocess.run([sys.executable, "-c", rp.BOOTSTRAP, str(tmp_path / "ext")], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"event": "ready", "id": None, "mark": "extension copy", "argv": ["worker"]}


def test_bootstrap_starts_the_real_worker() -> None:
    proc = subprocess.Popen([sys.executable, "-c", rp.BOOTSTRAP, str(REPO / "vendor" / "glvd")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["pid"] == proc.pid
        proc.stdin.write(json.dumps({"id": "t1", "cmd": "shutdown"}) + "\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_bootstrap_names_what_that_python_lacks() -> None:
    # -S: no site-packages, so none of the runtime's imports is there
    proc = subprocess.run([sys.executable, "-S", "-c", rp.BOOTSTRAP, ""], capture_output=True, text=True, timeout=60)
    assert proc.returncode == rp.EXIT_MISSING and proc.stdout == ""
    line = proc.stderr.strip().splitlines()[-1]  # the worker client shows the last stderr line
    assert line.startswith(f"GLVD: the worker Python {sys.executable} (Python {sys.version_info[0]}.")
    assert "has no torch, numpy, cv2, PIL, scipy" in line
    assert f"{sys.executable} -m pip install torch==2.13.0 numpy opencv-python-headless==4.11.0.86" in line
