"""Each photo's expression as the kit's 53 ARKit weights, read from where its landmarks lie.

The descent lands on the person's neutral face; what the photo's face does on top of it is read
here, per view, from the 68 landmarks the detector (MediaPipe, a network trained on real faces)
marks and from which way the camera looks. The head is trained on exact projections of the kit's
landmark vertices with detector-like noise (``glvd-train expression``), never on renders, so it
sees on photos what it saw in training: 2D points. ``neutral + sum_e w_e * delta_e`` is the
photo's face (``glvd.api.Result.posed``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: which of the 68 landmarks (``glvd.landmarks_map``) the head reads: the chin and the inner 51. The jaw
#: contour is left out: a detector trained on photos puts it on the silhouette, the kit's are fixed vertices,
#: and a face wider than the template then reads as puffed cheeks (Grace Hopper: cheekPuff 0.57 with it)
POINTS = (8, *range(17, 68))


def normalise_landmarks(points: torch.Tensor) -> torch.Tensor:
    """``(..., L, 2)`` -> the same points centred and scaled to unit RMS radius (pixel scale and the
    crop's position drop out; the shape and its orientation in the image stay)."""
    centred = points - points.mean(-2, keepdim=True)
    radius = centred.pow(2).sum(-1).mean(-1, keepdim=True).sqrt()[..., None]
    return centred / radius.clamp_min(1e-6)


class ExpressionHead(nn.Module):
    """Per view: ``landmarks (B, V, 68, 2)`` (any pixel frame; NaN where none were found; it reads
    :data:`POINTS` of them) and the camera
    rotation ``R (B, V, 3, 3)`` (head -> camera) -> ``(B, V, E)`` ARKit weights in [0, 1] (0 where the view
    has no landmarks)."""

    def __init__(self, num_expressions: int = 53, hidden: int = 512) -> None:
        super().__init__()
        self.num_expressions = num_expressions
        self.mlp = nn.Sequential(
            nn.Linear(len(POINTS) * 2 + 9, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_expressions),
        )

    def raw(self, landmarks: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """The unclamped regression ``(..., E)`` of finite ``landmarks (..., 68, 2)``, ``R (..., 3, 3)``
        (what training fits)."""
        # x10: the normalised offsets are ~0.1-1, the rotation's entries ~1
        pts = normalise_landmarks(landmarks[..., list(POINTS), :])
        x = torch.cat([pts.flatten(-2) * 10.0, R.flatten(-2)], -1)
        return self.mlp(x)

    def forward(self, landmarks: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        found = torch.isfinite(landmarks).all(-1).all(-1)  # (B, V)
        # a view without landmarks: zeros in (no NaN through the MLP), the neutral weights (all 0) out
        safe = torch.where(found[..., None, None], landmarks, torch.zeros_like(landmarks))
        w = self.raw(safe, R).clamp(0.0, 1.0)
        return torch.where(found[..., None], w, torch.zeros_like(w))


def expression_offsets(weights: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """``weights (..., E)`` times ``deltas (E, N, 3)`` -> ``(..., N, 3)`` vertex offsets."""
    return torch.einsum("...e,enc->...nc", weights, deltas.to(weights.dtype))


def deltas_once(owner: object, final: np.ndarray, compute) -> np.ndarray:
    """``compute()``'s ARKit deltas for ``owner`` (a result or a head), computed once per final shape: the keys,
    the posed faces and the texture bake of one reconstruction all ask for them (0.1-0.4 s each time). Kept on
    ``owner`` beside the shape they belong to, recomputed if ``final`` changes; read-only, since it is shared."""
    key = np.ascontiguousarray(final).tobytes()
    hit = getattr(owner, "_deltas_once", None)
    if hit is None or hit[0] != key:
        deltas = np.asarray(compute(), np.float32)
        deltas.setflags(write=False)
        hit = (key, deltas)
        object.__setattr__(owner, "_deltas_once", hit)
    return hit[1]


def posed_vertices(neutral: np.ndarray, weights: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """The face (or head) as photos with ``weights (..., E)`` show it: ``neutral (N, 3)`` plus
    :func:`expression_offsets` of ``deltas (E, N, 3)`` -> ``(..., N, 3)`` float32 numpy."""
    # torch wants writable arrays: the shared read-only deltas (deltas_once) are copied, ~5 ms for a head
    w = torch.from_numpy(np.require(weights, np.float32, ["C", "W"]))
    d = torch.from_numpy(np.require(deltas, np.float32, ["C", "W"]))
    return np.asarray(neutral, np.float32) + expression_offsets(w, d).numpy()
