"""Check Runtime: start the worker and show its torch version, device and checkpoint.

In the UI the answer is polled from a timer (the operator returns at once); in background mode
the operator waits for it, up to the start timeout.
"""

from __future__ import annotations

import os
import time
from typing import Any

import bpy

from . import preferences, worker_client
from .prestart import worker_for
from .worker_client import WorkerError

_checking_runtime = False


def runtime_status_text(ev: dict[str, Any]) -> str:
    ck = os.path.basename(str(ev.get("checkpoint") or "?"))
    date = ev.get("checkpoint_date") or "no date"
    trained = "" if ev.get("trained", True) else ", UNTRAINED"
    gpu = "CUDA available" if ev.get("cuda") else "no CUDA"
    return (f"torch {ev.get('torch', '?')}, {gpu}, device {ev.get('device', '?')} | "
            f"checkpoint {ck} ({date}{trained})")


class GLVD_OT_check_runtime(bpy.types.Operator):
    """Start the GLVD runtime and show its torch version, device and checkpoint"""

    bl_idname = "glvd.check_runtime"
    bl_label = "Check Runtime"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not context.window_manager.glvd_job.running and not _checking_runtime

    def execute(self, context: bpy.types.Context) -> set[str]:
        global _checking_runtime
        prefs = preferences.get(context)
        try:
            worker = worker_for(prefs)
        except WorkerError as exc:
            return self._show(context, f"failed: {exc.message}", error=True)
        checker = _RuntimeCheck(worker, prefs)
        if bpy.app.background:
            deadline = time.monotonic() + prefs.startup_timeout
            while checker.state is None and time.monotonic() < deadline:
                ev = worker.wait_event(0.25)
                if ev is not None:
                    checker.handle(ev)
            text, ok = checker.state or (f"failed: no answer within {prefs.startup_timeout:.0f} s", False)
            return self._show(context, text, error=not ok)
        _checking_runtime = True
        self._show(context, "checking...", error=False)
        bpy.app.timers.register(lambda: _poll_check(checker), first_interval=0.1)
        return {"FINISHED"}

    def _show(self, context: bpy.types.Context, text: str, error: bool) -> set[str]:
        _set_runtime_status(text)
        self.report({"ERROR" if error else "INFO"}, f"GLVD runtime: {text}")
        return {"CANCELLED"} if error else {"FINISHED"}


class _RuntimeCheck:
    def __init__(self, worker: worker_client.Worker, prefs: preferences.Prefs) -> None:
        self.worker, self.prefs = worker, prefs
        self.rid: str | None = None
        self.state: tuple[str, bool] | None = None
        self.t0 = time.monotonic()
        if worker.ready:
            self._send()

    def _send(self) -> None:
        try:
            self.rid = self.worker.request("info", device=self.prefs.device.lower(),
                                           checkpoint=self.prefs.checkpoint or None)
        except WorkerError as exc:
            self.state = (f"failed: {exc.message}", False)

    def handle(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "ready" and self.rid is None:
            self._send()
        elif kind == worker_client.EXIT_EVENT:
            err = worker_client.explain_exit(ev.get("returncode"), self.worker.stderr_tail())
            worker_client.discard_worker(self.worker)
            self.state = (f"failed: {err.message}", False)
        elif ev.get("id") == self.rid and kind == "info":
            self.state = (runtime_status_text(ev), True)
        elif ev.get("id") == self.rid and kind == "error":
            self.state = (f"failed: {ev.get('message')} [{ev.get('code')}]", False)


def _poll_check(checker: _RuntimeCheck) -> float | None:
    global _checking_runtime
    for ev in checker.worker.poll():
        checker.handle(ev)
    if checker.state is None and time.monotonic() - checker.t0 > checker.prefs.startup_timeout:
        worker_client.discard_worker(checker.worker)
        checker.state = ("failed: the runtime did not answer in time", False)
    if checker.state is None:
        return 0.1
    _set_runtime_status(checker.state[0])
    _checking_runtime = False
    return None


def _set_runtime_status(text: str) -> None:
    addon = bpy.context.preferences.addons.get(preferences.ADDON_ID)
    if addon and addon.preferences:
        addon.preferences.runtime_status = text
    wm = bpy.context.window_manager
    if wm is not None and hasattr(wm, "glvd_job"):
        wm.glvd_job.last_message = text
    if not bpy.app.background:
        for win in wm.windows:
            for area in win.screen.areas:
                area.tag_redraw()


classes = (GLVD_OT_check_runtime,)
