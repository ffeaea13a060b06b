"""GLVD Face runtime: keypoint-guided learned vertex descent for face reconstruction.

No Blender here. ``glvd.Reconstructor`` is the entry point; ``python -m glvd``
the command line.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import Cancelled, CheckpointError, GLVDError, ImageError, NoFaceError


def __getattr__(name: str):
    # torch is imported only when the model is needed, so `glvd --help` stays fast
    if name in ("Reconstructor", "Result"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = [
    "Cancelled",
    "CheckpointError",
    "GLVDError",
    "ImageError",
    "NoFaceError",
    "Reconstructor",
    "Result",
    "__version__",
]
