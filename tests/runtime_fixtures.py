"""Shared helpers for the runtime tests: a tiny kit and small models that need no ../shared."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from glvd.model import GLVD, ModelConfig
from glvd_train.evaluate_photos import package_photos  # noqa: F401 (the tests' loader of the package photos)
from glvd_train.tinykit import make_tiny_kit
from glvd.topology import load_kit, template_from_kit

#: real photos of 9 people (evaluation only, never trained on): the reference tests use them when present
IDENTITY_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos_identity"


def identity_photos() -> dict[str, np.ndarray]:
    """The shared identity set (empty when ../shared is absent): file stem -> RGB uint8."""
    from glvd.preprocess import load_image

    return {p.stem: load_image(p) for p in sorted(IDENTITY_PHOTOS.glob("*.jpg"))}


SMALL = ModelConfig(image_size=64, encoder_widths=(8, 16, 16, 24, 32), kp_feat=8, kp_hidden=32, kp_embed=8,
                    vert_hidden=16, neighbours=4, steps=3)


def tiny_kit(tmp: Path, rows: int = 24, cols: int = 24) -> Path:
    return make_tiny_kit(tmp / f"tiny_{rows}x{cols}.npz", rows=rows, cols=cols)


def small_model(kit_path: Path, cfg: ModelConfig = SMALL, seed: int = 0) -> GLVD:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = GLVD(cfg, template_from_kit(load_kit(kit_path), extra_keypoints=8))
    # random (not zero) output layers, so that every test sees the vertices move
    for p in model.parameters():
        with torch.no_grad():
            if p.dim() >= 1 and float(p.abs().sum()) == 0.0:
                torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def frontal_cameras(batch: int, views: int, size: int, distance: float = 0.5) -> "torch.Tensor":
    from glvd.cameras import FRONTAL_R, Cameras, euler_to_matrix

    yaw = torch.linspace(-0.5, 0.5, views) if views > 1 else torch.zeros(1)
    R = FRONTAL_R @ euler_to_matrix(yaw, torch.zeros(views), torch.zeros(views))
    f = size * 2.0
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    t = torch.tensor([0.0, 0.0, distance])
    return Cameras(K.expand(batch, views, 3, 3).clone(), R.expand(batch, views, 3, 3).clone(),
                   t.expand(batch, views, 3).clone())
