"""The frozen identity backbone: dlib's face-recognition ResNet, in torch.

dlib's ``dnn_face_recognition_ex`` network (``dlib_face_recognition_resnet_model_v1``,
Davis E. King, released into the public domain) maps a 150x150 aligned face chip
(:mod:`glvd.face_chip`) to a 128-D descriptor; two photos of one person lie within
about 0.6 of each other. It was trained on some three million real faces, so on a
render and on a photo it speaks the same language: the identity code GLVD reads.
Never trained here. ``tools/convert_dlib_facenet.py`` reads dlib's ``.dat`` once and
writes ``weights/dlib_face_resnet.pt``; the runtime needs no dlib.

dlib's layer order (its ``anet_type``): input ``(x - mean_rgb) / 256``; 7x7/32
stride-2 conv + affine + relu; 3x3 stride-2 max-pool; residual blocks
(conv 3x3 + affine + relu + conv 3x3 + affine, added to the input, then relu) of
32 x3, 64 x4, 128 x3, 256 x3, 256 x1, the first block of each stage after the first
downsampling with a stride-2 first conv and a 2x2 average pool on the skip path;
global average pool; a 128-unit fully connected layer without bias. dlib's strided
layers have no padding, and its ``add_prev`` adds tensors of different shapes by
zero-padding the smaller at the end (channels and, at 8 -> 3 vs 4 px, space).
``affine`` is dlib's frozen batch norm: ``x * scale + shift`` per channel.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
#: the block whose output the fields may read as pixel features (the last 128-channel one: 8 x 8 px on the
#: chip); research/pixel_identity: sampled at the landmarks, it carries more identity than the descriptor on
#: renders and stays consistent on real photos
CHIP_MAP_BLOCK = 9
CHIP_MAP_CHANNELS = 128
CHIP_MAP_SIZE = 8  # 150 -> stem 72 -> pool 35 -> stage 2 17 -> stage 3 8 (dlib pads no strided layer)
WEIGHTS_NAME = "dlib_face_resnet.pt"

#: (filters, blocks, first block downsamples) per stage, input to output.
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def default_weights_path() -> Path:
    return Path(__file__).resolve().parent / "weights" / WEIGHTS_NAME


class ConvAffine(nn.Module):
    """dlib ``con`` (with bias) followed by ``affine``: ``(B, C, H, W) -> (B, F, H', W')``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.stride = stride
        # dlib: padding kernel // 2 at stride 1, none when strided
        self.padding = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, self.padding, bias=True)
        self.register_buffer("scale", torch.ones(cout))
        self.register_buffer("shift", torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale[:, None, None] + self.shift[:, None, None]


def padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, the smaller zero-padded at the end."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """``(B, Cin, H, W) -> (B, Cout, H', W')``; ``down``: stride 2 and an average-pooled skip."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.a = ConvAffine(cin, cout, 3, 2 if down else 1)
        self.b = ConvAffine(cout, cout, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(F.relu(self.a(x)))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(padded_add(y, skip))


class DlibFaceResNet(nn.Module):
    """``(B, 3, 150, 150)`` RGB chips, float in [0, 255] -> ``(B, 128)`` descriptors."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor([122.782, 117.001, 104.298]))
        self.stem = ConvAffine(3, 32, 7, 2)
        blocks = []
        cin = 32
        for filters, count, down in STAGES:
            for i in range(count):
                blocks.append(ResidualBlock(cin, filters, down and i == 0))
                cin = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, DESCRIPTOR_DIM, bias=False)

    def conv_names(self) -> list[str]:
        """The conv + affine pairs in forward order (the order dlib writes them)."""
        names = ["stem"]
        for i in range(len(self.blocks)):
            names += [f"blocks.{i}.a", f"blocks.{i}.b"]
        return names

    def conv_geometry(self, name: str) -> tuple[int, int]:
        layer = self.get_submodule(name)
        return layer.stride, layer.padding

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.forward_with_maps(chips)[0]

    def forward_with_maps(self, chips: torch.Tensor, block: int = CHIP_MAP_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, 150, 150)`` -> descriptors ``(B, 128)`` and block ``block``'s output maps ``(B, C, h, w)``
        (default: ``(B, 128, 8, 8)``), from one pass."""
        x = (chips - self.mean_rgb[:, None, None]) / 256.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        maps = None
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i == block:
                maps = x
        return self.fc(x.mean(dim=(2, 3))), maps


class FaceNetError(RuntimeError):
    """The identity backbone's weights are missing or do not fit the network."""


def load_facenet(path: str | Path | None = None, device: str | torch.device = "cpu") -> DlibFaceResNet:
    """The converted network in eval mode, float32, no gradients."""
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FaceNetError(
            f"identity backbone weights not found: {path} (make them with tools/convert_dlib_facenet.py)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise FaceNetError(f"cannot read identity backbone weights {path}: {exc}") from exc
    model = DlibFaceResNet()
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (RuntimeError, AttributeError) as exc:
        raise FaceNetError(f"identity backbone weights {path} do not fit the network: {exc}") from exc
    model.eval().requires_grad_(False)
    return model.to(device)


def _as_input(model: DlibFaceResNet, chips: torch.Tensor) -> torch.Tensor:
    if chips.dtype == torch.uint8:
        chips = chips.permute(0, 3, 1, 2).float()
    return chips.to(model.mean_rgb.device)


@torch.no_grad()
def describe(model: DlibFaceResNet, chips: torch.Tensor) -> torch.Tensor:
    """``(B, 150, 150, 3)`` uint8 chips (or ``(B, 3, 150, 150)`` float 0-255) -> ``(B, 128)``."""
    return model(_as_input(model, chips))


@torch.no_grad()
def describe_with_maps(model: DlibFaceResNet, chips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`describe` and the chip maps ``(B, 128, 8, 8)`` (:data:`CHIP_MAP_BLOCK`) of the same pass."""
    return model.forward_with_maps(_as_input(model, chips))
