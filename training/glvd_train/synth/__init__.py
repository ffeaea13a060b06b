"""Synthetic training data: the ICT head, a vectorised torch rasteriser, appearance, augmentation.

``SyntheticFaces(kit_path, config, seed, device).sample(batch, views)`` is what
training calls; ``rasterize`` / ``shade`` are the differentiable renderer for
analysis-by-synthesis.
"""

from glvd.raster import Fragments, interpolate, project, rasterize, transform

from .augment import AugmentConfig, augment
from .backgrounds import Backgrounds
from .morphable import HeadModel, default_kit_path
from .sampler import SynthConfig, SyntheticFaces
from .shading import HeadAppearance, Lights, shade, vertex_normals

__all__ = [
    "AugmentConfig",
    "Backgrounds",
    "Fragments",
    "HeadAppearance",
    "HeadModel",
    "Lights",
    "SynthConfig",
    "SyntheticFaces",
    "augment",
    "default_kit_path",
    "interpolate",
    "project",
    "rasterize",
    "shade",
    "transform",
    "vertex_normals",
]
