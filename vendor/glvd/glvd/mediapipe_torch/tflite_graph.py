"""A TFLite graph (as rewritten by tools/convert_mediapipe.py) run with torch operators.

The converter keeps each MediaPipe network as its list of TFLite operators with the weights
already in torch layouts, so the port is the TFLite graph itself, operator for operator: no
hand-written architecture that could drift from the original. Activations of rank 4 are NCHW
here (TFLite's are NHWC); reshapes, concatenations and slices translate their axes.

TFLite conventions reproduced: 'SAME' padding is asymmetric (the extra row/column at the
bottom/right), max pooling ignores padded cells, PReLU has one slope per channel, fused
activations. MediaPipe's three custom operators of the attention mesh model are ported from
mediapipe/util/tflite/operations (Apache-2.0): Landmarks2TransformMatrix (v2),
TransformTensorBilinear (v2) and TransformLandmarks (v2).
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from torch import nn


def _same_pad(size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _activation(x: torch.Tensor, act: str | None) -> torch.Tensor:
    if act is None:
        return x
    if act == "RELU":
        return F.relu(x)
    if act == "RELU6":
        return x.clamp(0.0, 6.0)
    if act == "RELU_N1_TO_1":
        return x.clamp(-1.0, 1.0)
    if act == "TANH":
        return torch.tanh(x)
    raise NotImplementedError(f"fused activation {act}")


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


# --------------------------------------------------------------------------- MediaPipe custom ops


def landmarks_to_transform_matrix(landmarks: torch.Tensor, opts: dict) -> torch.Tensor:
    """Landmarks2TransformMatrix v2: (B, N, 3) landmarks -> (B, 4, 4) crop matrix.

    The crop is the box of ``subset_idxs`` in a frame turned so the line from
    ``left_rotation_idx`` to ``right_rotation_idx`` has angle ``target_rotation_radians``,
    scaled by ``scale_x/scale_y``; the matrix maps output pixel (x, y) to input coordinates.
    """
    left = landmarks[:, opts["left_rotation_idx"], :2]
    right = landmarks[:, opts["right_rotation_idx"], :2]
    r = opts["target_rotation_radians"] - torch.atan2(right[:, 1] - left[:, 1], right[:, 0] - left[:, 0])
    c, s = torch.cos(r), torch.sin(r)
    pts = landmarks[:, list(opts["subset_idxs"]), :2]
    x = c[:, None] * pts[..., 0] - s[:, None] * pts[..., 1]
    y = s[:, None] * pts[..., 0] + c[:, None] * pts[..., 1]
    x0, x1 = x.min(1).values, x.max(1).values
    y0, y1 = y.min(1).values, y.max(1).values
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    # back through the inverse rotation (angle -r)
    cx = c * mx + s * my
    cy = -s * mx + c * my
    ow, oh = float(opts["output_width"]), float(opts["output_height"])
    sx = opts["scale_x"] * (x1 - x0) / ow
    sy = opts["scale_y"] * (y1 - y0) / oh
    # t = shift(cx, cy) * rot(-r) * scale(sx, sy) * shift(-ow/2, -oh/2)
    a00, a01 = c * sx, s * sy
    a10, a11 = -s * sx, c * sy
    tx = cx - a00 * ow / 2 - a01 * oh / 2
    ty = cy - a10 * ow / 2 - a11 * oh / 2
    m = torch.zeros(landmarks.shape[0], 4, 4, dtype=landmarks.dtype, device=landmarks.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 3] = a00, a01, tx
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 3] = a10, a11, ty
    m[:, 2, 2] = 1.0
    m[:, 3, 3] = 1.0
    return m


def transform_tensor_bilinear(x: torch.Tensor, m: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """TransformTensorBilinear v2: sample NCHW ``x`` at ``m`` applied to output pixel centres.

    Samples outside [0, W-1] x [0, H-1] are zero; inside, bilinear with zeros beyond the edge.
    """
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(out_h, dtype=x.dtype, device=x.device) + 0.5,
        torch.arange(out_w, dtype=x.dtype, device=x.device) + 0.5,
        indexing="ij",
    )
    tx = m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys + m[:, 0, 3, None, None] - 0.5
    ty = m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys + m[:, 1, 3, None, None] - 0.5
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    grid = torch.stack([tx * (2.0 / (w - 1)) - 1.0, ty * (2.0 / (h - 1)) - 1.0], -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out * inside[:, None].to(x.dtype)


def transform_landmarks(pts: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """TransformLandmarks v2: (B, N, 2) points through the first two rows of (B, 4, 4) ``m``."""
    xy = pts[..., :2]
    out = xy @ m[:, :2, :2].transpose(1, 2) + m[:, None, :2, 3]
    if pts.shape[-1] > 2:
        out = torch.cat([out, pts[..., 2:]], -1)
    return out


# --------------------------------------------------------------------------- the graph


class TFLiteGraph(nn.Module):
    """Runs one converted graph: ``forward(x_nchw)`` -> list of outputs in TFLite (NHWC) shapes;
    ``forward_taps(x_nchw, taps=[...])`` also returns chosen intermediate tensors."""

    def __init__(self, graph: dict | str, tensors: dict[str, torch.Tensor]):
        super().__init__()
        g = json.loads(graph) if isinstance(graph, str) else graph
        self.ops = g["ops"]
        self.inputs = g["inputs"]
        self.outputs = g["outputs"]
        self.output_names = g["output_names"]
        self.shapes = {int(k): v for k, v in g["shapes"].items()}
        self._const_names = {}
        for k, t in tensors.items():
            name = f"c{k}"
            t = t.float() if t.is_floating_point() else t
            self.register_buffer(name, t, persistent=False)
            self._const_names[int(k)] = name

    def constant(self, i: int) -> torch.Tensor:
        return getattr(self, self._const_names[i])

    @torch.no_grad()
    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        env = self._execute(inputs)
        return [_to_nhwc(env[i]) for i in self.outputs]

    @property
    def intermediate(self) -> list[int]:
        """The tensors :meth:`forward_taps` can return: each operator's output (TFLite tensor indices, in order)."""
        return [op["out"][0] for op in self.ops]

    @torch.no_grad()
    def forward_taps(self, *inputs: torch.Tensor, taps: list[int] | tuple[int, ...]
                     ) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        """:meth:`forward`'s outputs (the same operators, the same numbers) and the tensors ``taps``
        (indices from :attr:`intermediate`; ``self.shapes[i]`` gives each one's TFLite shape) as the graph
        holds them: rank-4 activations NCHW, the rest in TFLite's layout."""
        known = set(self.intermediate)
        bad = [t for t in taps if t not in known]
        if bad:
            raise KeyError(f"not an operator's output: {bad}")
        env = self._execute(inputs)
        return [_to_nhwc(env[i]) for i in self.outputs], {t: env[t] for t in taps}

    def _execute(self, inputs: tuple[torch.Tensor, ...]) -> dict[int, torch.Tensor]:
        env: dict[int, torch.Tensor] = dict(zip(self.inputs, inputs, strict=True))

        def get(i: int) -> torch.Tensor:
            return env[i] if i in env else self.constant(i)

        for op in self.ops:
            env[op["out"][0]] = self._run(op, get)
        return env

    def _run(self, op: dict, get) -> torch.Tensor:  # noqa: C901 - one branch per operator
        name, ins, o = op["op"], op["in"], op["opts"]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, w = get(ins[0]), get(ins[1])
            b = get(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            kh, kw = w.shape[2], w.shape[3]
            (sh, sw), (dh, dw) = o["stride"], o["dilation"]
            pad = (0, 0)
            if o["padding"] == "SAME":
                pt, pb = _same_pad(x.shape[2], kh, sh, dh)
                pl, pr = _same_pad(x.shape[3], kw, sw, dw)
                if pt == pb and pl == pr:
                    pad = (pt, pl)
                else:
                    x = F.pad(x, (pl, pr, pt, pb))
            groups = x.shape[1] if name == "DEPTHWISE_CONV_2D" else 1
            y = F.conv2d(x, w, b, stride=(sh, sw), padding=pad, dilation=(dh, dw), groups=groups)
            return _activation(y, o["act"])
        if name == "MAX_POOL_2D":
            x = get(ins[0])
            (kh, kw), (sh, sw) = o["kernel"], o["stride"]
            if o["padding"] == "SAME":
                pt, pb = _same_pad(x.shape[2], kh, sh)
                pl, pr = _same_pad(x.shape[3], kw, sw)
                if pt or pb or pl or pr:
                    x = F.pad(x, (pl, pr, pt, pb), value=-math.inf)
            return _activation(F.max_pool2d(x, (kh, kw), (sh, sw)), o["act"])
        if name == "ADD":
            return _activation(get(ins[0]) + get(ins[1]), o["act"])
        if name == "MUL":
            return _activation(get(ins[0]) * get(ins[1]), o["act"])
        if name == "RELU":
            return F.relu(get(ins[0]))
        if name == "RELU6":
            return get(ins[0]).clamp(0.0, 6.0)
        if name == "LOGISTIC":
            return torch.sigmoid(get(ins[0]))
        if name == "PRELU":
            x, a = get(ins[0]), get(ins[1])
            if x.dim() == 4 and a.numel() == x.shape[1]:  # one slope per channel: the fused kernel
                return F.prelu(x, a.reshape(-1))
            return torch.where(x >= 0, x, x * a)
        if name == "PAD":
            x, p = get(ins[0]), o["paddings"]
            if x.dim() == 4:
                (n0, n1), (h0, h1), (w0, w1), (c0, c1) = p
                assert n0 == n1 == 0
                return F.pad(x, (w0, w1, h0, h1, c0, c1))
            flat = [v for pair in reversed(p) for v in pair]
            return F.pad(x, flat)
        if name == "RESHAPE":
            x = _to_nhwc(get(ins[0]))
            shape = list(self.shapes[op["out"][0]])
            shape[0] = -1  # batch
            return _to_nchw(x.reshape(shape))
        if name == "CONCATENATION":
            xs = [get(i) for i in ins]
            axis = o["axis"] % xs[0].dim()
            if xs[0].dim() == 4:
                axis = _NHWC_TO_NCHW_AXIS[axis]
            return _activation(torch.cat(xs, axis), o["act"])
        if name == "STRIDED_SLICE":
            x = _to_nhwc(get(ins[0]))
            idx = []
            for d, (b0, e0, st) in enumerate(zip(o["begin"], o["end"], o["strides"], strict=True)):
                if o["shrink_axis_mask"] >> d & 1:
                    idx.append(b0)
                    continue
                b1 = None if o["begin_mask"] >> d & 1 else b0
                e1 = None if o["end_mask"] >> d & 1 else e0
                if d == 0:  # batch: keep all
                    b1, e1 = None, None
                idx.append(slice(b1, e1, st))
            return _to_nchw(x[tuple(idx)])
        if name == "Landmarks2TransformMatrix":
            return landmarks_to_transform_matrix(get(ins[0]), o)
        if name == "TransformTensorBilinear":
            return transform_tensor_bilinear(get(ins[0]), get(ins[1]), o["output_height"], o["output_width"])
        if name == "TransformLandmarks":
            return transform_landmarks(get(ins[0]), get(ins[1]))
        raise NotImplementedError(f"TFLite operator {name}")
