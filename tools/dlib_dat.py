"""Reading dlib's serialised files (`dlib/serialize.h`), shared by the conversion tools.

dlib writes integers as packed ints (a control byte: low 4 bits = byte count, bit 7 =
sign; then that many little-endian bytes), strings as a packed length then the bytes,
floats as a packed int64 mantissa and a packed int16 exponent, matrices as ``-nr, -nc``
then their elements row by row, ``std::vector`` as a packed length then its elements,
and dnn tensors as version 2, ``(n, k, nr, nc)`` and raw little-endian float32.

The model files come from face-recognition-models (dlib's author released them into
the public domain, CC0 1.0 where that is not possible: the package's LICENSE). It is a
development dependency: these tools run once, the runtime never imports it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def model_path(name: str) -> Path:
    """``face_recognition_models/models/<name>``, found without importing the package (its
    ``__init__`` needs ``pkg_resources``, gone from setuptools >= 81)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face-recognition-models is not installed: .venv/bin/pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / name


class Reader:
    """A cursor over dlib's serialised bytes."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def int(self) -> int:
        ctrl = self.data[self.pos]
        size = ctrl & 0x0F
        raw = self.data[self.pos + 1 : self.pos + 1 + size]
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if ctrl & 0x80 else value

    def str(self) -> str:
        n = self.int()
        s = self.data[self.pos : self.pos + n].decode("ascii")
        self.pos += n
        return s

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0**exponent

    def floats(self, n: int) -> np.ndarray:
        """``n`` consecutive serialised floats as float64 (exact: each is a float32's value)."""
        return np.array([self.float() for _ in range(n)])

    def column(self) -> np.ndarray:
        """A ``matrix<float,0,1>`` (a column vector): ``-nr, -1`` then the values."""
        nr, nc = -self.int(), -self.int()
        if nc != 1 or nr < 0:
            raise ValueError(f"expected a column vector at byte {self.pos}, got {nr}x{nc}")
        return self.floats(nr)

    def alias_shape(self) -> list[int]:
        """An ``alias_tensor``: a view into a layer's params, written as its shape only."""
        version = self.int()
        if version != 1:
            raise ValueError(f"alias_tensor version {version} at byte {self.pos}, expected 1")
        return [self.int() for _ in range(4)]

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"tensor version {version} at byte {self.pos}, expected 2")
        shape = [self.int() for _ in range(4)]
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape)
        self.pos += 4 * count
        return values.copy()
