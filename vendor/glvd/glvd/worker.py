"""``glvd worker``: the long-lived process Blender talks to (docs/worker_protocol.md).

JSON lines in on stdin, JSON lines out on stdout. A reader thread keeps stdin
flowing while a reconstruction runs, so ``cancel`` takes effect between steps.
stdout carries only protocol lines: anything else printed goes to stderr.
"""

from __future__ import annotations

import base64
import json
import math
import os
import queue
import re
import sys
import threading
import time
import traceback
from typing import IO, Any

import numpy as np

from . import __version__
from .errors import BadRequest, Cancelled, GLVDError

MAX_PHOTOS = 8
MAX_STEPS = 30
TEXTURE_SIZES = (512, 1024, 2048, 4096)
MAX_LENS_35MM = 2000.0
MODES = ("face", "head")  # the face area alone (the default of the protocol), or the whole head (glvd.head)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def encode_array(a: np.ndarray) -> dict:
    """``{"dtype", "shape", "b64"}`` of a C-order array."""
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"])).reshape(d["shape"])


# -- request fields: every argument error is a BadRequest naming its field -----------------------------------
def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"'{field}' must be a finite number (got {value!r})")
    return float(value)


def _matrix(value: Any, field: str, shape: tuple[int, ...]) -> list:
    """A nested list of finite numbers of ``shape`` (``(3, 3)`` or ``(3,)``)."""
    want = " x ".join(str(n) for n in shape)
    if not isinstance(value, list) or len(value) != shape[0]:
        raise BadRequest(f"'{field}' must be a list of {want} numbers (got {str(value)[:80]})")
    if len(shape) == 1:
        return [_number(v, f"{field}[{i}]") for i, v in enumerate(value)]
    return [_matrix(row, f"{field}[{i}]", shape[1:]) for i, row in enumerate(value)]


def _optional_str(req: dict, field: str) -> str | None:
    value = req.get(field)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{field}' must be a string or null (got {value!r})")
    return value or None


def parse_device(req: dict) -> str | None:
    device = _optional_str(req, "device")
    if device is not None and not _DEVICE.fullmatch(device):
        raise BadRequest(f"'device' must be auto, cpu or cuda (got {device!r})")
    return device


def parse_reconstruct(req: dict) -> dict[str, Any]:
    """The fields of a ``reconstruct`` request, checked and normalised (docs/worker_protocol.md).

    Raises :class:`BadRequest` with a message naming the field; the model is not touched.
    """
    images = req.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        raise BadRequest("'images' must be a non-empty list of file paths")
    if len(images) > MAX_PHOTOS:
        raise BadRequest(f"'images': give 1 to {MAX_PHOTOS} photos of one face (got {len(images)})")
    steps = req.get("steps", 10)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise BadRequest(f"'steps' must be a whole number from 1 to {MAX_STEPS} (got {steps!r})")
    cameras = req.get("cameras")
    if cameras is not None:
        if not isinstance(cameras, list) or len(cameras) != len(images):
            raise BadRequest(f"'cameras' must be null or a list of one camera per image ({len(images)}), "
                             f"got {str(cameras)[:80]}")
        checked = []
        for i, cam in enumerate(cameras):
            if not isinstance(cam, dict):
                raise BadRequest(f"'cameras[{i}]' must be an object with K, R and t (got {str(cam)[:80]})")
            checked.append({"K": _matrix(cam.get("K"), f"cameras[{i}].K", (3, 3)),
                            "R": _matrix(cam.get("R"), f"cameras[{i}].R", (3, 3)),
                            "t": _matrix(cam.get("t"), f"cameras[{i}].t", (3,))})
        cameras = checked
    texture = req.get("texture")
    if texture is not None and (isinstance(texture, bool) or texture not in TEXTURE_SIZES):
        raise BadRequest(f"'texture' must be null or one of {', '.join(map(str, TEXTURE_SIZES))} (got {texture!r})")
    lens = req.get("lens_35mm")
    if lens is not None:
        lens = _number(lens, "lens_35mm")
        if not 0 < lens <= MAX_LENS_35MM:
            raise BadRequest(f"'lens_35mm' must be a focal length in mm (35 mm equivalent), above 0 and at most "
                             f"{MAX_LENS_35MM:g} (got {lens:g})")
    expressions = req.get("expressions", True)
    if not isinstance(expressions, bool):
        raise BadRequest(f"'expressions' must be true or false (got {expressions!r})")
    mode = req.get("mode", "face")
    if mode not in MODES:
        raise BadRequest(f"'mode' must be one of {', '.join(MODES)} (got {mode!r})")
    return {"images": images, "steps": steps, "cameras": cameras, "texture": texture, "lens_35mm": lens,
            "expressions": expressions, "mode": mode, "texture_path": _optional_str(req, "texture_path"),
            "device": parse_device(req), "checkpoint": _optional_str(req, "checkpoint")}


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
        except GLVDError as exc:  # BadRequest included: the request's fields were checked before any work
            self.emit("error", rid, code=exc.code, message=str(exc))
        except Exception as exc:  # a real bug: keep serving, report and go on
            traceback.print_exc(file=sys.stderr)
            self.emit("error", rid, code="internal", message=f"{type(exc).__name__}: {exc}")
        finally:
            self.current = None
            self.cancel.clear()
        return True

    def _info(self, rid: Any, req: dict) -> None:
        device, checkpoint = parse_device(req), _optional_str(req, "checkpoint")
        import torch

        rec = self._reconstructor(device, checkpoint)
        self.emit("info", rid, torch=torch.__version__, cuda=torch.cuda.is_available(), device=str(rec.device),
                  checkpoint=rec.checkpoint_path, checkpoint_date=rec.provenance.get("saved", ""),
                  trained=rec.trained, provenance={k: v for k, v in rec.provenance.items()
                                                   if isinstance(v, (str, int, float, bool))})

    def _reconstruct(self, rid: Any, raw: dict) -> None:
        req = parse_reconstruct(raw)
        from .cameras import DEFAULT_DISTANCE_M  # torch: after "ready", as the model
        from .preprocess import focal_code

        images, steps = req["images"], req["steps"]
        self.current = rid
        self.cancel.clear()
        self.emit("progress", rid, stage="load", step=0, steps=steps, message="loading the model")
        rec = self._reconstructor(req["device"], req["checkpoint"])
        tpl = rec.template
        head = req["mode"] == "head"
        if head:
            from .head import export_materials, fit_step, head_topology, load_asset

            asset = load_asset()
            if tpl.num_vertices != asset.face_count:
                raise BadRequest(f"'mode': this checkpoint's template has {tpl.num_vertices} vertices, not the "
                                 f"kit's face area ({asset.face_count}): the whole head cannot be built; use 'face'")
            ht = head_topology(asset)
            topology = {"template": encode_array(fit_step(tpl.vertices, asset)[0]),
                        "quads": encode_array(ht["polygons"].astype(np.int32)), "uvs": encode_array(ht["uvs"]),
                        "quad_uvs": encode_array(ht["polygon_uvs"].astype(np.int32)),
                        "polygon_material": encode_array(ht["polygon_material"].astype(np.int32)),
                        "materials": [{"name": m.name, "color": list(m.color), "alpha": m.alpha,
                                       "roughness": m.roughness, "textured": m.textured} for m in export_materials()]}
        else:
            topology = {"template": encode_array(tpl.vertices.astype(np.float32)),
                        "quads": encode_array(tpl.quads.astype(np.int32)), "uvs": encode_array(tpl.uvs),
                        "quad_uvs": encode_array(tpl.quad_uvs.astype(np.int32))}
        # the mesh can be built before the first step arrives, so steps show live from the first run
        self.emit("topology", rid, mode=req["mode"], **topology)

        def on_progress(stage: str, message: str) -> None:
            if stage != "step":
                self.emit("progress", rid, stage=stage, step=0, steps=steps, message=message)

        def on_step(i: int, verts: np.ndarray) -> None:
            if self.step_delay:
                time.sleep(self.step_delay)  # tests slow the descent down to cancel mid-run
            if head:
                verts = fit_step(verts, asset)[0]
            self.emit("step", rid, step=i, steps=steps, vertices=encode_array(verts.astype(np.float32)))
            self.emit("progress", rid, stage="step", step=i, steps=steps, message=f"step {i}/{steps}")

        res = rec.reconstruct(images, cameras=req["cameras"], steps=steps, on_step=on_step,
                              lens_35mm=req["lens_35mm"], cancel=self.cancel, on_progress=on_progress)
        shape = res
        if head:
            from .head import build_head

            shape = build_head(res, asset)
        expr = encode_array(shape.expressions()) if req["expressions"] else None
        texture_png, texture_error = None, None
        if req["texture"]:
            texture_png, texture_error = self._bake(rid, res, images, req["texture"], req["texture_path"],
                                                    shape if head else None)
        cams = [{"K": res.cameras["K"][v].tolist(), "R": res.cameras["R"][v].tolist(),
                 "t": res.cameras["t"][v].tolist()} for v in range(len(images))]
        self.emit("result", rid, vertices=encode_array(shape.vertices.astype(np.float32)), mode=req["mode"],
                  **topology, expressions=expr, expression_names=res.expression_names, cameras=cams,
                  expression_weights=None if res.expression_weights is None else encode_array(
                      res.expression_weights.astype(np.float32)),
                  texture_png=texture_png, texture_error=texture_error,
                  landmarks2d=encode_array(res.landmarks2d.astype(np.float32)), checkpoint=res.checkpoint,
                  trained=res.trained, timings=res.timings, camera_sources=res.camera_sources,
                  focal_sources=res.focal_sources, focal_codes=[focal_code(s) for s in res.focal_sources],
                  assumed_distance_m=DEFAULT_DISTANCE_M)

    def _bake(self, rid: Any, res, images: list[str], size: int, path: str | None,
              head=None) -> tuple[str | None, str | None]:
        """Bake the photos into a UV texture (the whole head's, ``2 size x size``, for a ``head``); a failure
        here still delivers the mesh."""
        import tempfile

        from .head_texture import bake_head_texture
        from .texture import bake_texture

        path = path or os.path.join(tempfile.gettempdir(), f"glvd_{os.getpid()}_{rid}.png")
        self.emit("progress", rid, stage="texture", step=res.steps, steps=res.steps, message="baking texture")
        t0 = time.perf_counter()
        try:
            out = (bake_head_texture(res, head, images, path, size=size) if head is not None
                   else bake_texture(res, images, path, size=size))
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
    w.emit("ready", None, version=__version__, pid=os.getpid())  # first: a malformed line's error comes after it
    threading.Thread(target=w.reader, args=(inp,), daemon=True).start()
    if warm:
        w.warm_up()
    while True:
        req = w.requests.get()
        if req is None or not w.handle(req):
            return 0
