"""Start the GLVD runtime worker and talk to it (docs/worker_protocol.md).

Blender never imports torch: the runtime runs in a child process,
``<python> -m glvd worker``, with the Blender process's ``sys.path`` as its
``PYTHONPATH`` so the extension's wheels (glvd, torch) are found. One JSON
object per line each way. A reader thread turns stdout lines into events on a
queue, so nothing here ever blocks Blender's UI; a second thread keeps the
tail of stderr for error messages.

No bpy in this module (unit-tested with a fake worker).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import itertools
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

Event = dict[str, Any]

# A synthetic event the reader thread posts when the worker's stdout closes.
EXIT_EVENT = "_exit"


class WorkerError(Exception):
    """A failure with a code from the protocol (or ``worker_exit``/``timeout``) and a clear message."""

    def __init__(self, message: str, code: str = "internal") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_array(obj: Any) -> np.ndarray:
    """``{"dtype", "shape", "b64"}`` -> numpy array (C order)."""
    if not isinstance(obj, dict) or "b64" not in obj:
        raise WorkerError(f"malformed array in worker output: {str(obj)[:80]}", "internal")
    data = base64.b64decode(obj["b64"])
    return np.frombuffer(data, dtype=np.dtype(obj.get("dtype", "float32"))).reshape(obj["shape"])


def worker_command(python: str) -> list[str]:
    return [python, "-m", "glvd", "worker"]


def worker_env(pythonpath: Iterable[str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: our ``sys.path`` first, unbuffered UTF-8 pipes."""
    env = dict(os.environ if base is None else base)
    paths = [p for p in pythonpath if p and os.path.isdir(p)]
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def explain_exit(returncode: int | None, stderr_tail: str) -> WorkerError:
    """A clear error for a worker that died, using what it wrote to stderr."""
    text = stderr_tail.strip()
    last = text.splitlines()[-1] if text else ""
    if "No module named 'torch'" in text or "No module named torch" in text:
        return WorkerError(
            "PyTorch is not available to the GLVD runtime (the extension was built without it?): " + last,
            "torch_missing",
        )
    if "No module named glvd" in text or "No module named 'glvd'" in text:
        return WorkerError("the GLVD runtime (package glvd) is not installed: " + last, "runtime_missing")
    detail = f": {last}" if last else ""
    return WorkerError(f"the GLVD worker stopped unexpectedly (exit code {returncode}){detail}", "worker_exit")


class Worker:
    """One ``glvd worker`` child process."""

    _ids = itertools.count(1)

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.events: queue.Queue[Event] = queue.Queue()
        self.ready = False
        self.ready_info: Event = {}
        self.started_at = 0.0
        self.last_event_at = 0.0
        self.exited = False
        self._stderr: collections.deque[str] = collections.deque(maxlen=60)
        self._write_lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------
    def start(self) -> Worker:
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                cwd=self.cwd,
                # its own process group: Ctrl+C in Blender's terminal must not kill it mid-line
                start_new_session=True,
            )
        except OSError as exc:
            raise WorkerError(f"could not start the GLVD worker ({self.argv[0]}): {exc}", "worker_exit") from exc
        self.started_at = self.last_event_at = time.monotonic()
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="glvd-worker-stderr", daemon=True)
        self._stderr_thread.start()
        threading.Thread(target=self._read_stdout, name="glvd-worker-stdout", daemon=True).start()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and not self.exited

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 3.0) -> None:
        """Ask politely (``shutdown``), then kill."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(WorkerError):
                self.send({"id": self.new_id(), "cmd": "shutdown"})
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self.exited = True
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    # -- io -------------------------------------------------------------------
    def new_id(self) -> str:
        return f"b{next(self._ids)}"

    def send(self, message: Event) -> None:
        if self.proc is None or self.proc.stdin is None or self.proc.poll() is not None:
            raise explain_exit(self.proc.returncode if self.proc else None, self.stderr_tail())
        line = (json.dumps(message) + "\n").encode("utf-8")
        try:
            with self._write_lock:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise explain_exit(self.proc.poll(), self.stderr_tail()) from exc

    def request(self, cmd: str, **fields: Any) -> str:
        rid = self.new_id()
        self.send({"id": rid, "cmd": cmd, **fields})
        return rid

    def poll(self) -> list[Event]:
        """All events that have arrived, without waiting."""
        out = []
        while True:
            try:
                out.append(self._note(self.events.get_nowait()))
            except queue.Empty:
                return out

    def wait_event(self, timeout: float) -> Event | None:
        try:
            return self._note(self.events.get(timeout=max(0.0, timeout)))
        except queue.Empty:
            return None

    def _note(self, ev: Event) -> Event:
        if ev.get("event") == "ready":
            self.ready = True
            self.ready_info = ev
        if ev.get("event") == EXIT_EVENT:
            self.exited = True
        return ev

    def stderr_tail(self, lines: int = 8) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.last_event_at = time.monotonic()
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                ev = json.loads(text)
                if not isinstance(ev, dict) or "event" not in ev:
                    raise ValueError("not an event")
            except ValueError:
                # stray prints from libraries: keep them with the log, not as events
                self._stderr.append("[stdout] " + text[:300])
                continue
            self.events.put(ev)
        rc = self.proc.wait()
        # the exit event must carry the whole stderr (the reason it died): let that reader finish
        self._stderr_thread.join(timeout=2.0)
        self.events.put({"event": EXIT_EVENT, "id": None, "returncode": rc})

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip()[:500])


# -- one shared worker per Blender session (keeps the model warm) -------------
_shared: Worker | None = None
_shared_key: tuple | None = None


def get_worker(argv: Sequence[str], env: dict[str, str]) -> Worker:
    """The running worker for this command, or a freshly started one."""
    global _shared, _shared_key
    key = (tuple(argv), env.get("PYTHONPATH"))
    if _shared is not None and (_shared_key != key or not _shared.alive):
        _shared.stop(timeout=1.0)
        _shared = None
    if _shared is None:
        _shared = Worker(argv, env).start()
        _shared_key = key
    return _shared


def current_worker() -> Worker | None:
    return _shared if _shared is not None and _shared.alive else None


def discard_worker(worker: Worker | None = None) -> None:
    """Kill the shared worker (after a hang or crash) so the next job starts afresh."""
    global _shared, _shared_key
    if worker is None or worker is _shared:
        if _shared is not None:
            _shared.kill()
        _shared, _shared_key = None, None
    elif worker is not None:
        worker.kill()


def shutdown_worker() -> None:
    global _shared, _shared_key
    if _shared is not None:
        _shared.stop(timeout=2.0)
    _shared, _shared_key = None, None
