"""One reconstruction request: worker events in, progress and mesh updates out.

The same object drives both paths: the modal operator calls :meth:`Job.pump`
from a timer (never blocks), background mode calls :meth:`Job.run` (blocks, with
the same timeouts). No bpy here.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import worker_client
from .worker_client import EXIT_EVENT, Event, WorkerError

# progress bar share of the stages before the descent steps
STAGE_PROGRESS = {"load": 0.02, "detect": 0.05, "encode": 0.1}


@dataclass
class Request:
    images: list[str]
    steps: int = 10
    device: str = "auto"
    checkpoint: str | None = None
    cameras: list[dict] | None = None
    expressions: bool = False
    texture: int | None = None  # bake the photos into a square UV texture of this size (None: no texture)
    lens_35mm: float | None = None  # lens of photos without EXIF focal length (None: the runtime's assumption)
    mode: str = "head"  # "head": the whole head around the face; "face": the face area alone

    def message(self) -> dict[str, Any]:
        return {
            "cmd": "reconstruct",
            "images": list(self.images),
            "steps": int(self.steps),
            "device": self.device,
            "checkpoint": self.checkpoint or None,
            "cameras": self.cameras,
            "expressions": bool(self.expressions),
            "texture": int(self.texture) if self.texture else None,
            "lens_35mm": float(self.lens_35mm) if self.lens_35mm else None,
            "mode": self.mode,
        }


@dataclass
class Timeouts:
    startup: float = 180.0  # until the worker says "ready" (imports torch)
    silence: float = 120.0  # longest gap between events while a request runs
    cancel: float = 10.0  # from "cancel" to "cancelled" before the worker is killed


@dataclass
class Update:
    kind: str  # progress | step | result | error | cancelled
    fraction: float = 0.0
    message: str = ""
    step: int = 0
    vertices: np.ndarray | None = None
    result: dict[str, Any] | None = None
    error: WorkerError | None = None


@dataclass
class Job:
    worker: worker_client.Worker
    request: Request
    timeouts: Timeouts = field(default_factory=Timeouts)
    state: str = "starting"  # starting | running | cancelling | done | failed | cancelled
    rid: str | None = None
    fraction: float = 0.0
    message: str = "starting the GLVD runtime"
    error: WorkerError | None = None
    result: dict[str, Any] | None = None
    steps_seen: dict[int, np.ndarray] = field(default_factory=dict)
    topology: dict[str, Any] | None = None
    _activity: float = field(default_factory=time.monotonic)
    _cancel_at: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    # -- driving --------------------------------------------------------------
    def start(self) -> list[Update]:
        """Send the request now if the worker is ready (a warm worker), else on its ``ready``."""
        self._activity = time.monotonic()
        if self.worker.ready:
            return self._send()
        return []

    def pump(self) -> list[Update]:
        """Handle everything that has arrived, then the timeouts. Never blocks."""
        updates: list[Update] = []
        for ev in self.worker.poll():
            updates += self._handle(ev)
            if self.finished:
                return updates
        return updates + self._check_timeouts()

    def run(self, on_update: Callable[[Update], None] | None = None, tick: float = 0.25) -> list[Update]:
        """Block until finished (background mode); returns every update."""
        updates = self.start()
        while not self.finished:
            ev = self.worker.wait_event(tick)
            new = self._handle(ev) if ev is not None else []
            if not self.finished:
                new += self._check_timeouts()
            for u in new:
                if on_update:
                    on_update(u)
            updates += new
        return updates

    def cancel(self) -> list[Update]:
        if self.finished or self.state == "cancelling":
            return []
        if self.state == "starting" or self.rid is None:
            return self._finish_cancelled()
        self.state = "cancelling"
        self._cancel_at = time.monotonic()
        self.message = "cancelling"
        try:
            self.worker.send({"id": self.worker.new_id(), "cmd": "cancel", "target": self.rid})
        except WorkerError:
            worker_client.discard_worker(self.worker)
            return self._finish_cancelled()
        return [Update("progress", self.fraction, "cancelling")]

    # -- internals ------------------------------------------------------------
    def _send(self) -> list[Update]:
        try:
            self.rid = self.worker.request(**self.request.message())
        except WorkerError as exc:
            return self._fail(exc)
        self.state = "running"
        self._activity = time.monotonic()
        self.message = "loading the model"
        return [Update("progress", self.fraction, self.message)]

    def _handle(self, ev: Event) -> list[Update]:
        kind = ev.get("event")
        self._activity = time.monotonic()
        if kind == EXIT_EVENT:
            if self.state == "cancelling":
                worker_client.discard_worker(self.worker)
                return self._finish_cancelled()
            worker_client.discard_worker(self.worker)
            return self._fail(worker_client.explain_exit(ev.get("returncode"), self.worker.stderr_tail()))
        if kind == "ready":
            return self._send() if self.state == "starting" else []
        if self.rid is None or ev.get("id") != self.rid:
            if kind == "result":
                remove_texture_file(ev)  # nobody will load it
            return []  # late events of an earlier (cancelled) request, or of `info`
        try:
            return self._handle_own(kind, ev)
        except WorkerError as exc:
            return self._fail(exc)
        except (KeyError, TypeError, ValueError) as exc:
            return self._fail(WorkerError(f"unexpected worker output ({kind}): {exc}", "internal"))

    def _handle_own(self, kind: str | None, ev: Event) -> list[Update]:
        if kind == "progress":
            stage = ev.get("stage", "")
            steps = max(1, int(ev.get("steps") or self.request.steps))
            if stage == "step":
                self.fraction = 0.1 + 0.9 * min(int(ev.get("step", 0)), steps) / steps
            else:
                self.fraction = max(self.fraction, STAGE_PROGRESS.get(stage, self.fraction))
            self.message = str(ev.get("message") or stage)
            return [Update("progress", self.fraction, self.message)]
        if kind == "topology":
            self.topology = decode_fields(ev)
            return []
        if kind == "step":
            step = int(ev["step"])
            verts = np.asarray(worker_client.decode_array(ev["vertices"]), dtype=np.float32)
            self.steps_seen[step] = verts
            steps = max(1, int(ev.get("steps") or self.request.steps))
            self.fraction = max(self.fraction, 0.1 + 0.9 * min(step, steps) / steps)
            self.message = f"step {step}/{steps}"
            return [Update("step", self.fraction, self.message, step=step, vertices=verts)]
        if kind == "result":
            self.result = decode_fields(ev)
            check_result(self.result)
            self.state, self.fraction, self.message = "done", 1.0, "done"
            return [Update("result", 1.0, "done", result=self.result)]
        if kind == "error":
            return self._fail(WorkerError(str(ev.get("message", "unknown error")), str(ev.get("code", "internal"))))
        if kind == "cancelled":
            return self._finish_cancelled()
        return []

    def _check_timeouts(self) -> list[Update]:
        now = time.monotonic()
        if self.state == "starting" and now - self.worker.started_at > self.timeouts.startup:
            worker_client.discard_worker(self.worker)
            return self._fail(WorkerError(
                f"the GLVD worker did not start within {self.timeouts.startup:.0f} s "
                f"(see the worker settings in the preferences){_tail(self.worker)}", "timeout"))
        if self.state == "running":
            quiet = now - max(self._activity, self.worker.last_event_at)
            if quiet > self.timeouts.silence:
                worker_client.discard_worker(self.worker)
                return self._fail(WorkerError(
                    f"the GLVD worker sent nothing for {quiet:.0f} s and was stopped (hung?)", "timeout"))
            # a dead worker is reported by the reader thread's exit event (with its stderr)
        if self.state == "cancelling" and now - self._cancel_at > self.timeouts.cancel:
            worker_client.discard_worker(self.worker)  # it ignored the cancel: stop it the hard way
            return self._finish_cancelled()
        return []

    def _fail(self, exc: WorkerError) -> list[Update]:
        self.state, self.error, self.message = "failed", exc, exc.message
        return [Update("error", self.fraction, exc.message, error=exc)]

    def _finish_cancelled(self) -> list[Update]:
        self.state, self.message = "cancelled", "cancelled"
        return [Update("cancelled", self.fraction, "cancelled")]


def focal_note(focal_codes: list[str], assumed_distance_m: float = 1.2) -> str:
    """A note for the artist when photos had no focal length and the runtime assumed one ("" otherwise).

    ``focal_codes``: the result's per-photo codes (``given``, ``exif``, ``lens``, ``camera``, ``assumed``);
    ``assumed_distance_m``: the face distance the runtime assumed for the ``assumed`` ones.
    """
    assumed = [c for c in focal_codes if c == "assumed"]
    if not assumed:
        return ""
    n = f"{len(assumed)} of {len(focal_codes)} photos" if len(focal_codes) > 1 else "the photo"
    return f"no focal length in {n}: face {assumed_distance_m:g} m away assumed (set Lens if you know it)"


def _tail(worker: worker_client.Worker) -> str:
    tail = worker.stderr_tail(3).strip()
    return f"; worker log: {tail.splitlines()[-1]}" if tail else ""


def decode_fields(ev: Event) -> dict[str, Any]:
    """Every ARRAY field decoded, the rest as is."""
    return {k: worker_client.decode_array(v) if isinstance(v, dict) and "b64" in v else v for k, v in ev.items()}


def remove_texture_file(res: dict[str, Any] | None) -> None:
    """Delete the temporary PNG a result points at (after loading it, or when the result is dropped)."""
    path = (res or {}).get("texture_png")
    if isinstance(path, str) and path:
        with contextlib.suppress(OSError):
            os.remove(path)


def check_result(res: dict[str, Any]) -> None:
    """The arrays the mesh writer needs, with consistent shapes."""
    v = res.get("vertices")
    if v is None or v.ndim != 3 or v.shape[-1] != 3 or v.shape[0] < 2:
        raise WorkerError("the worker's result has no (T+1, N, 3) vertices", "internal")
    n = v.shape[1]
    quads = res.get("quads")
    if quads is None or quads.ndim != 2 or quads.shape[1] not in (3, 4):
        raise WorkerError("the worker's result has no quads", "internal")
    if quads.max() >= n:
        raise WorkerError("the worker's quads index past the vertices", "internal")
    exp = res.get("expressions")
    if exp is not None and (exp.ndim != 3 or exp.shape[1] != n):
        raise WorkerError("the worker's expression deltas do not match the vertices", "internal")
    pmat, mats = res.get("polygon_material"), res.get("materials")
    if pmat is not None and (pmat.shape != (len(quads),) or not mats or pmat.min() < 0 or pmat.max() >= len(mats)):
        raise WorkerError("the worker's polygon materials do not match the polygons", "internal")
