"""MediaPipe's face detector and face mesh, ported to torch (no mediapipe at run time).

The weights (``glvd/weights/mediapipe_face.pt``, Apache-2.0, see the NOTICE beside it) are
MediaPipe 0.10.21's TFLite models converted by tools/convert_mediapipe.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "mediapipe_face.pt"

_blob: dict | None = None


def load_weights(path: str | Path | None = None) -> dict:
    """The converted models: {key: {"graph": json, "tensors": {...}}} (cached for the default file)."""
    global _blob
    if path is None and _blob is not None:
        return _blob
    p = Path(path) if path is not None else WEIGHTS
    if not p.exists():
        raise FileNotFoundError(f"MediaPipe weights missing: {p} (make them with tools/convert_mediapipe.py)")
    blob = torch.load(p, map_location="cpu", weights_only=True)
    if path is None:
        _blob = blob
    return blob


def load_graph(key: str, path: str | Path | None = None):
    from .tflite_graph import TFLiteGraph

    m = load_weights(path)[key]
    return TFLiteGraph(m["graph"], m["tensors"])
