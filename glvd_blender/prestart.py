"""The runtime worker of this Blender session: how it is started, and the timer that starts it early.

``worker_for(prefs)`` returns the shared warm worker (worker_client.get_worker) for the preferences'
Python; ``schedule_prestart()`` (called when the panel is first drawn) and ``prestart(context)``
(after a photo is added) start it, and load the model, while the user is still picking photos.
"""

from __future__ import annotations

import bpy

from . import preferences, worker_client
from .worker_client import WorkerError


def worker_for(prefs: preferences.Prefs) -> worker_client.Worker:
    from . import runtime_python  # Blender's Python or another one (the preference): argv and PYTHONPATH

    python = preferences.python_executable(prefs)
    try:
        argv, path = runtime_python.worker_launch(python, _sys_path())
    except ValueError as exc:  # Blender's own Python lacks torch & co.: say what and how to fix it
        raise WorkerError(str(exc), "runtime_missing") from exc
    return worker_client.get_worker(argv, worker_client.worker_env(path))


def _sys_path() -> list[str]:
    import sys

    # the worker must see what Blender sees: the extension's wheels (glvd, torch) are on it
    return list(sys.path)


def prestart(context: bpy.types.Context) -> None:
    """Start the worker and load the model while the user is still picking photos.

    The worker loads the model lazily; an ``info`` request makes it load now, so the
    Reconstruct button then finds a warm worker (its reply is ignored: other id).
    """
    prefs = preferences.get(context)
    if not prefs.prestart or bpy.app.background or context.window_manager.glvd_job.running:
        return
    fresh = worker_client.current_worker() is None
    try:
        worker = worker_for(prefs)
        if fresh:
            worker.request("info", device=prefs.device.lower(), checkpoint=prefs.checkpoint or None)
    except WorkerError:
        pass  # reported when the user presses Reconstruct


_prestart_scheduled = False


def schedule_prestart() -> None:
    """Once per session, when the panel is first drawn: start the worker from a timer (not inside draw)."""
    global _prestart_scheduled
    if _prestart_scheduled or bpy.app.background:
        return
    _prestart_scheduled = True
    bpy.app.timers.register(_prestart_timer, first_interval=0.0)


def _prestart_timer() -> None:
    if worker_client.current_worker() is None:
        prestart(bpy.context)
    return None
