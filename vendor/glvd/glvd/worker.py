"""``glvd worker``: the long-lived process Blender talks to (docs/worker_protocol.md).

JSON lines in on stdin, JSON lines out on stdout. A reader thread keeps stdin
flowing while a reconstruction runs, so ``cancel`` takes effect between steps.
stdout carries only protocol lines: anything else printed goes to stderr.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import sys
import threading
import time
import traceback
from typing import IO, Any

import numpy as np

from . import __version__
from .errors import Cancelled, GLVDError


def encode_array(a: np.ndarray) -> dict:
    """``{"dtype", "shape", "b64"}`` of a C-order array."""
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"])).reshape(d["shape"])


class _Emitter:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, event: str, rid: Any, **fields: Any) -> None:
        line = json.dumps({"event": event, "id": rid, **fields})
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


class Worker:
    """Serves requests one at a time; the model is loaded on first use and kept."""

    def __init__(self, out: IO[str], device: str = "auto", checkpoint: str | None = None) -> None:
        self.emit = _Emitter(out)
        self.device = device
        self.checkpoint = checkpoint
        self.rec = None
        self.requests: queue.Queue[dict | None] = queue.Queue()
        self.current: str | None = None
        self.cancel = threading.Event()
        self.step_delay = float(os.environ.get("GLVD_WORKER_STEP_DELAY", "0") or 0)
        self._load_lock = threading.Lock()  # the warm-up thread and a request may both want the model

    def warm_up(self) -> threading.Thread:
        """Load the model, then start the face detector, in a background thread.

        A worker started ahead of time (Blender starts one when the panel is first drawn) is then
        fully warm when the first request comes: without this, that request would pay torch's
        import, the model load and MediaPipe's start-up. One thread, one thing after the other:
        they all hold the GIL for most of their time, so running them side by side gains nothing.
        Errors are left for the request to hit and report (a missing checkpoint, no torch).
        """
        def run() -> None:
            try:
                self._reconstructor(None, None)
                from . import detect

                detect.warm_up()
            except Exception:  # noqa: BLE001 (reported by the request that needs it)
                pass

        t = threading.Thread(target=run, daemon=True, name="glvd-warm-up")
        t.start()
        return t

    def reader(self, inp: IO[str]) -> None:
        for line in inp:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("a request must be a JSON object")
            except ValueError as exc:
                self.emit("error", None, code="bad_request", message=f"malformed request: {exc}")
                continue
            if req.get("cmd") == "cancel":
                if self.current is not None and req.get("target") in (None, self.current):
                    self.cancel.set()
                continue
            self.requests.put(req)
        self.requests.put(None)  # end of input: shut down

    def _reconstructor(self, device: str | None, checkpoint: str | None):
        from .api import Reconstructor

        device = device or self.device
        checkpoint = checkpoint if checkpoint is not None else self.checkpoint
        with self._load_lock:
            if self.rec is None or (device, checkpoint) != (self._loaded_device, self._loaded_ckpt):
                self.rec = Reconstructor(checkpoint=checkpoint, device=device)
                self._loaded_device, self._loaded_ckpt = device, checkpoint
            return self.rec

    def handle(self, req: dict) -> bool:
        """Handle one request; False when the worker should exit."""
        rid, cmd = req.get("id"), req.get("cmd")
        if cmd == "shutdown":
            self.emit("bye", rid)
            return False
        try:
            if cmd == "info":
                self._info(rid, req)
            elif cmd == "reconstruct":
                self._reconstruct(rid, req)
            else:
                self.emit("error", rid, code="bad_request", message=f"unknown cmd {cmd!r}")
        except Cancelled:
            self.emit("cancelled", rid)
        except GLVDError as exc:
            self.emit("error", rid, code=exc.code, message=str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            self.emit("error", rid, code="bad_request", message=f"bad request: {exc!r}")
        except Exception as exc:  # keep serving: report and go on
            traceback.print_exc(file=sys.stderr)
            self.emit("error", rid, code="internal", message=f"{type(exc).__name__}: {exc}")
        finally:
            self.current = None
            self.cancel.clear()
        return True

    def _info(self, rid: Any, req: dict) -> None:
        import torch

        rec = self._reconstructor(req.get("device"), req.get("checkpoint"))
        self.emit("info", rid, torch=torch.__version__, cuda=torch.cuda.is_available(), device=str(rec.device),
                  checkpoint=rec.checkpoint_path, checkpoint_date=rec.provenance.get("saved", ""),
                  trained=rec.trained, provenance={k: v for k, v in rec.provenance.items()
                                                   if isinstance(v, (str, int, float, bool))})

    def _reconstruct(self, rid: Any, req: dict) -> None:
        images = req["images"]
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            raise ValueError("'images' must be a non-empty list of file paths")
        steps = int(req.get("steps", 10))
        self.current = rid
        self.cancel.clear()
        self.emit("progress", rid, stage="load", step=0, steps=steps, message="loading the model")
        rec = self._reconstructor(req.get("device"), req.get("checkpoint"))
        tpl = rec.template
        topology = {"template": encode_array(tpl.vertices.astype(np.float32)),
                    "quads": encode_array(tpl.quads.astype(np.int32)), "uvs": encode_array(tpl.uvs),
                    "quad_uvs": encode_array(tpl.quad_uvs.astype(np.int32))}
        # the mesh can be built before the first step arrives, so steps show live from the first run
        self.emit("topology", rid, **topology)

        def on_progress(stage: str, message: str) -> None:
            if stage != "step":
                self.emit("progress", rid, stage=stage, step=0, steps=steps, message=message)

        def on_step(i: int, verts: np.ndarray) -> None:
            if self.step_delay:
                time.sleep(self.step_delay)  # tests slow the descent down to cancel mid-run
            self.emit("step", rid, step=i, steps=steps, vertices=encode_array(verts.astype(np.float32)))
            self.emit("progress", rid, stage="step", step=i, steps=steps, message=f"step {i}/{steps}")

        res = rec.reconstruct(images, cameras=req.get("cameras"), steps=steps, on_step=on_step,
                              lens_35mm=req.get("lens_35mm"),
                              cancel=self.cancel, on_progress=on_progress)
        expr = encode_array(res.expressions()) if req.get("expressions", True) else None
        texture_png, texture_error = None, None
        if req.get("texture"):
            texture_png, texture_error = self._bake(rid, res, images, req)
        cams = [{"K": res.cameras["K"][v].tolist(), "R": res.cameras["R"][v].tolist(),
                 "t": res.cameras["t"][v].tolist()} for v in range(len(images))]
        self.emit("result", rid, vertices=encode_array(res.vertices), **topology,
                  expressions=expr, expression_names=res.expression_names, cameras=cams,
                  texture_png=texture_png, texture_error=texture_error,
                  landmarks2d=encode_array(res.landmarks2d.astype(np.float32)), checkpoint=res.checkpoint,
                  trained=res.trained, timings=res.timings, camera_sources=res.camera_sources,
                  focal_sources=res.focal_sources)

    def _bake(self, rid: Any, res, images: list[str], req: dict) -> tuple[str | None, str | None]:
        """Bake the photos into a UV texture; a failure here still delivers the mesh."""
        import tempfile

        from .texture import bake_texture

        size = int(req["texture"])
        if size not in (512, 1024, 2048, 4096):
            raise ValueError(f"texture size must be 512, 1024, 2048 or 4096 (got {size})")
        path = req.get("texture_path") or os.path.join(tempfile.gettempdir(), f"glvd_{os.getpid()}_{rid}.png")
        self.emit("progress", rid, stage="texture", step=res.steps, steps=res.steps, message="baking texture")
        t0 = time.perf_counter()
        try:
            out = bake_texture(res, images, path, size=size)
        except Exception as exc:  # the mesh is still worth delivering
            traceback.print_exc(file=sys.stderr)
            return None, f"{type(exc).__name__}: {exc}"
        res.timings["texture_s"] = time.perf_counter() - t0
        return str(out), None


def serve(inp: IO[str] | None = None, out: IO[str] | None = None, device: str = "auto",
          checkpoint: str | None = None, warm: bool = True) -> int:
    """Run the worker until ``shutdown`` or end of input."""
    out = out or sys.stdout
    inp = inp or sys.stdin
    if out is sys.stdout:
        sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    w = Worker(out, device=device, checkpoint=checkpoint)
    threading.Thread(target=w.reader, args=(inp,), daemon=True).start()
    w.emit("ready", None, version=__version__, pid=os.getpid())
    if warm:
        w.warm_up()
    while True:
        req = w.requests.get()
        if req is None or not w.handle(req):
            return 0
