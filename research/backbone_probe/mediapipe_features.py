"""Intermediate activations of MediaPipe's face-landmark network for a stack of face crops.

Runs in a separate environment with the LiteRT interpreter (``ai-edge-litert``, not a project
dependency: it wants numpy 2 and a newer protobuf than mediapipe 0.10.21), on the model file that
ships in mediapipe's wheel. ``research/backbone_probe/backbone_probe.py`` calls it; on its own:

    python3.11 -m venv runs/litert && runs/litert/bin/pip install ai-edge-litert==2.3.0
    runs/litert/bin/python research/backbone_probe/mediapipe_features.py MODEL.tflite crops.npy features.npz

crops.npy: ``(N, S, S, 3)`` uint8 RGB crops. features.npz: one ``(N, D)`` float32 array per layer in
``LAYERS`` (flattened; the 12x12 map average-pooled to 6x6), plus ``score``, the network's
face-presence logit ``(N,)``. Imports nothing from glvd.
"""

from __future__ import annotations

import sys

import numpy as np

# the 6x6 and 3x3 stages of the landmark branch, and its 1,404-number output (468 x, y, z)
LAYERS = ("p_re_lu_12", "p_re_lu_15", "p_re_lu_18", "p_re_lu_20", "conv2d_21")
INPUT = 192


def resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, C)`` float -> ``(size, size, C)``, half-pixel centres (what torch's align_corners=False does)."""
    h, w, _ = img.shape
    ys = np.clip((np.arange(size) + 0.5) * h / size - 0.5, 0, h - 1)
    xs = np.clip((np.arange(size) + 0.5) * w / size - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def main(argv: list[str]) -> int:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model, crops, out = argv
    ims = np.load(crops)
    # without the default delegate every intermediate tensor stays readable after invoke()
    it = Interpreter(model_path=model, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    index = {t["name"]: t["index"] for t in it.get_tensor_details()}
    inp = it.get_input_details()[0]["index"]
    feats: dict[str, list[np.ndarray]] = {name: [] for name in LAYERS + ("score",)}
    for im in ims:
        x = resize_bilinear(im.astype(np.float32) / 255.0, INPUT)  # MediaPipe feeds [0, 1]
        it.set_tensor(inp, x[None].astype(np.float32))
        it.invoke()
        for name in LAYERS:
            t = it.get_tensor(index[name])[0]
            if t.shape[0] == 12:
                t = t.reshape(6, 2, 6, 2, -1).mean((1, 3))
            feats[name].append(t.reshape(-1).astype(np.float32))
        feats["score"].append(it.get_tensor(index["conv2d_31"]).reshape(1).astype(np.float32))
    np.savez(out, **{k: np.stack(v) for k, v in feats.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
