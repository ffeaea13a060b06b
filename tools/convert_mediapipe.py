"""Convert MediaPipe's face networks (TFLite, from the mediapipe 0.10.21 wheel) to torch weights.

Run once, offline; the runtime (``glvd.mediapipe_torch``) then needs torch and numpy only:

    .venv/bin/python tools/convert_mediapipe.py [--out vendor/glvd/glvd/weights/mediapipe_face.pt]

The models are MediaPipe's, Apache License 2.0 (c) Google LLC: face_detection_short_range.tflite
(BlazeFace), face_landmark.tflite (468 points) and face_landmark_with_attention.tflite (478 points
with irises). The weights are copied unchanged (they are stored as float16 in the TFLite files and
stay float16 here); see vendor/glvd/glvd/weights/NOTICE.

Each model becomes its TFLite graph, rewritten for NCHW torch tensors: a list of operators
(builtin name, input and output tensor ids, options) and its constant tensors, with
convolution kernels OHWI -> OIHW, depthwise kernels 1HWC -> C1HW, and every 4-D constant
NHWC -> NCHW. DEQUANTIZE of a float16 constant is folded into the constant.

The reader below is a minimal one over the ``flatbuffers`` package (a development dependency:
it comes with mediapipe), after tensorflow/lite/schema/schema.fbs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "vendor/glvd/glvd/weights/mediapipe_face.pt"

#: model key in the weights file -> path inside the mediapipe package
MODELS = {
    "face_detector": "modules/face_detection/face_detection_short_range.tflite",
    "face_landmarker": "modules/face_landmark/face_landmark.tflite",
    "face_landmarker_attention": "modules/face_landmark/face_landmark_with_attention.tflite",
}

# tflite BuiltinOperator codes used by these models (schema.fbs)
BUILTIN = {
    0: "ADD", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE",
    14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU", 21: "RELU6", 22: "RESHAPE",
    34: "PAD", 45: "STRIDED_SLICE", 54: "PRELU",
}
TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
PADDING = {0: "SAME", 1: "VALID"}
ACTIVATION = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}


# --------------------------------------------------------------------------- flatbuffer reading


class _T:
    """One flatbuffer table: field i lives at vtable slot 4 + 2 i."""

    def __init__(self, buf: bytearray, pos: int):
        from flatbuffers.table import Table

        self.t = Table(buf, pos)

    def _o(self, i: int) -> int:
        return self.t.Offset(4 + 2 * i)

    def scalar(self, i: int, fmt: str, default=0):
        from flatbuffers import number_types as N

        flags = {"b": N.Int8Flags, "B": N.Uint8Flags, "i": N.Int32Flags, "I": N.Uint32Flags,
                 "f": N.Float32Flags}[fmt]
        o = self._o(i)
        return self.t.Get(flags, o + self.t.Pos) if o else default

    def table(self, i: int) -> _T | None:
        o = self._o(i)
        return _T(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None

    def tables(self, i: int) -> list[_T]:
        o = self._o(i)
        if not o:
            return []
        v = self.t.Vector(o)
        return [_T(self.t.Bytes, self.t.Indirect(v + 4 * k)) for k in range(self.t.VectorLen(o))]

    def vector(self, i: int, dtype) -> np.ndarray:
        o = self._o(i)
        if not o:
            return np.zeros(0, dtype)
        return np.frombuffer(self.t.Bytes, dtype=dtype, count=self.t.VectorLen(o), offset=self.t.Vector(o))

    def string(self, i: int) -> str | None:
        o = self._o(i)
        return self.t.String(o + self.t.Pos).decode() if o else None


def _options(name: str, t: _T | None) -> dict:
    """The builtin options these models use (field order as in schema.fbs)."""
    if t is None:
        return {}
    if name == "CONV_2D":
        return {"padding": PADDING[t.scalar(0, "b")], "stride": [t.scalar(2, "i"), t.scalar(1, "i")],
                "act": ACTIVATION[t.scalar(3, "b")], "dilation": [t.scalar(5, "i", 1), t.scalar(4, "i", 1)]}
    if name == "DEPTHWISE_CONV_2D":
        return {"padding": PADDING[t.scalar(0, "b")], "stride": [t.scalar(2, "i"), t.scalar(1, "i")],
                "multiplier": t.scalar(3, "i"), "act": ACTIVATION[t.scalar(4, "b")],
                "dilation": [t.scalar(6, "i", 1), t.scalar(5, "i", 1)]}
    if name == "MAX_POOL_2D":
        return {"padding": PADDING[t.scalar(0, "b")], "stride": [t.scalar(2, "i"), t.scalar(1, "i")],
                "kernel": [t.scalar(4, "i"), t.scalar(3, "i")], "act": ACTIVATION[t.scalar(5, "b")]}
    if name in ("ADD", "MUL"):
        return {"act": ACTIVATION[t.scalar(0, "b")]}
    if name == "CONCATENATION":
        return {"axis": t.scalar(0, "i"), "act": ACTIVATION[t.scalar(1, "b")]}
    if name == "STRIDED_SLICE":
        return {"begin_mask": t.scalar(0, "i"), "end_mask": t.scalar(1, "i"), "ellipsis_mask": t.scalar(2, "i"),
                "new_axis_mask": t.scalar(3, "i"), "shrink_axis_mask": t.scalar(4, "i")}
    return {}


def read_tflite(path: str | os.PathLike) -> dict:
    """A .tflite file -> {"tensors": [...], "ops": [...], "inputs", "outputs"} with numpy constants."""
    from flatbuffers import flexbuffers

    buf = bytearray(Path(path).read_bytes())
    root = _T(buf, int.from_bytes(buf[0:4], "little"))
    codes = []
    for oc in root.tables(1):
        b = max(oc.scalar(0, "b"), oc.scalar(3, "i"))
        codes.append(oc.string(1) if b == 32 else BUILTIN.get(b, f"BUILTIN_{b}"))
    buffers = [b.vector(0, np.uint8) for b in root.tables(4)]
    (sg,) = root.tables(2)
    tensors = []
    for t in sg.tables(0):
        shape = t.vector(0, np.int32).tolist()
        dtype = TENSOR_TYPES[t.scalar(1, "b")]
        data = buffers[t.scalar(2, "I")]
        const = np.frombuffer(data.tobytes(), dtype=dtype).reshape(shape).copy() if len(data) else None
        tensors.append({"name": t.string(3), "shape": shape, "const": const})
    ops = []
    for o in sg.tables(3):
        name = codes[o.scalar(0, "I")]
        if name in BUILTIN.values():
            opts = _options(name, o.table(4))
        else:  # a MediaPipe custom op: flexbuffer map of options
            raw = bytes(o.vector(5, np.uint8))
            opts = flexbuffers.Loads(raw) if raw else {}
        ops.append({"op": name, "in": o.vector(1, np.int32).tolist(), "out": o.vector(2, np.int32).tolist(),
                    "opts": opts})
    return {"tensors": tensors, "ops": ops, "inputs": sg.vector(1, np.int32).tolist(),
            "outputs": sg.vector(2, np.int32).tolist()}


# --------------------------------------------------------------------------- NHWC -> NCHW graph


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _broadcast_nchw(a: np.ndarray) -> np.ndarray:
    """A constant broadcast against a 4-D NHWC tensor -> its NCHW equivalent."""
    a = a.reshape((1,) * (4 - a.ndim) + a.shape)
    return _nchw(a)


def to_torch_graph(model: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """The TFLite graph -> (graph description for glvd.mediapipe_torch.tflite_graph, constants)."""
    tens = model["tensors"]
    consts: dict[int, np.ndarray] = {i: t["const"] for i, t in enumerate(tens) if t["const"] is not None}
    ops_out = []
    done: set[int] = set()  # constants already rewritten (a shared constant is rewritten once)

    def rewrite(i: int, fn) -> None:
        if i not in done:
            consts[i] = fn(consts[i])
            done.add(i)

    for op in model["ops"]:
        name, ins, outs, opts = op["op"], op["in"], op["out"], dict(op["opts"])
        if name == "DEQUANTIZE":  # fold: float16 constant -> its float32 value (kept as float16 on disk)
            consts[outs[0]] = consts[ins[0]]
            continue
        if name == "CONV_2D":
            rewrite(ins[1], lambda w: np.ascontiguousarray(w.transpose(0, 3, 1, 2)))  # OHWI -> OIHW
        elif name == "DEPTHWISE_CONV_2D":
            rewrite(ins[1], lambda w: np.ascontiguousarray(w[0].transpose(2, 0, 1)[:, None]))  # 1HWC -> C1HW
        elif name == "PRELU":
            if len(tens[ins[0]]["shape"]) == 4:
                rewrite(ins[1], _broadcast_nchw)
        elif name in ("ADD", "MUL"):
            for k in (0, 1):
                other = ins[1 - k]
                if ins[k] in consts and len(tens[other]["shape"]) == 4 and consts[ins[k]].ndim > 0:
                    rewrite(ins[k], _broadcast_nchw)
        elif name == "PAD":
            opts["paddings"] = consts[ins[1]].astype(int).tolist()
            ins = ins[:1]
        elif name == "RESHAPE":
            ins = ins[:1]
        elif name == "STRIDED_SLICE":
            opts["begin"], opts["end"], opts["strides"] = (consts[i].astype(int).tolist() for i in ins[1:4])
            ins = ins[:1]
        elif name == "CONCATENATION":
            pass
        ops_out.append({"op": name, "in": [int(i) for i in ins], "out": [int(i) for i in outs], "opts": opts})
    used = {i for op in ops_out for i in op["in"]}
    constants = {str(i): consts[i] for i in sorted(used) if i in consts}
    graph = {
        "inputs": model["inputs"],
        "outputs": model["outputs"],
        "output_names": [tens[i]["name"] for i in model["outputs"]],
        "shapes": {str(i): tens[i]["shape"] for i in range(len(tens))},
        "ops": ops_out,
    }
    return graph, constants


def convert(mediapipe_dir: Path, out: Path) -> dict:
    import torch

    blob: dict = {"licence": "MediaPipe models, Apache License 2.0, (c) Google LLC; converted by "
                             "tools/convert_mediapipe.py from the mediapipe 0.10.21 wheel"}
    sizes = {}
    for key, rel in MODELS.items():
        graph, constants = to_torch_graph(read_tflite(mediapipe_dir / rel))
        tensors = {}
        for k, a in constants.items():
            if a.dtype == np.float32 and np.array_equal(a.astype(np.float16).astype(np.float32), a):
                a = a.astype(np.float16)  # exact in float16: halve the file
            tensors[k] = torch.from_numpy(np.ascontiguousarray(a))
        blob[key] = {"graph": json.dumps(graph, separators=(",", ":")), "tensors": tensors}
        sizes[key] = sum(t.numel() for t in tensors.values())
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, out)
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--mediapipe-dir", type=Path, default=None, help="default: the installed mediapipe package")
    a = ap.parse_args()
    if a.mediapipe_dir is None:
        import importlib.util

        spec = importlib.util.find_spec("mediapipe")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("mediapipe is not installed: pip install mediapipe==0.10.21")
        a.mediapipe_dir = Path(next(iter(spec.submodule_search_locations)))
    sizes = convert(a.mediapipe_dir, a.out)
    for k, n in sizes.items():
        print(f"{k}: {n} weights")
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
