"""The reconstruction's GPU work captured once as CUDA graphs, then replayed.

At batch 1 a GPU spends most of a reconstruction waiting for Python to launch its small kernels (eager,
20-38 ms for one view on an H100 or H200, depending on the host; replayed, under 5 ms: docs/gpu_check/).
A CUDA graph records every launch once; a replay issues them all in one call. Shapes (faces, views,
steps) are fixed at capture: one :class:`GraphedPipeline` per shape.

The work is split into three graphs so that the CPU can act between them, as the photo path does
(OpenCV's PnP on a detector's landmarks before and after the descent):

- front: encode the crops, project the maps for the fields and the refiner, estimate the cameras;
- descent: the steps from the template, with cameras copied in;
- refine: the camera refiner on a reconstruction (one round, as after the descent).

The descent and refine graphs read the front graph's outputs in place: the features of the last
:meth:`GraphedPipeline.front` call, until the next one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from .cameras import Cameras, default_intrinsics
from .encoder import FeatureMaps
from .errors import Cancelled
from .model import GLVD
from .pose import POST_DESCENT_ROUNDS


class _Graph:
    """One captured call: ``fn`` on static input buffers, replayed after copying new inputs in."""

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]], inputs: list[torch.Tensor], warmup: int) -> None:
        self.inputs = [x.clone() for x in inputs]
        side = torch.cuda.Stream(self.inputs[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # cuDNN/cuBLAS pick their kernels, the allocator fills
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Replay on ``inputs``; the outputs are the graph's own (overwritten by the next replay)."""
        for buf, x in zip(self.inputs, inputs):
            buf.copy_(x)
        self.graph.replay()
        return self.outputs


class GraphedPipeline:
    """``batch`` faces of ``views`` views, ``steps`` descent steps, as three replayable CUDA graphs.

    Args:
        model: a :class:`glvd.model.GLVD` on a CUDA device (put in eval mode here).
        sparse_normals: vertex normals by the sparse matmul (False: index_add, for a torch whose sparse
            kernels cannot be captured).
    Raises:
        ValueError: the model is not on a CUDA device. Capture errors of torch pass through (the
            caller may fall back to eager: :class:`glvd.api.Reconstructor` does).
    """

    def __init__(self, model: GLVD, batch: int, views: int, steps: int | None = None, warmup: int = 2,
                 sparse_normals: bool = True) -> None:
        dev = model.template_vertices.device
        if dev.type != "cuda":
            raise ValueError(f"a CUDA graph needs the model on a CUDA device, not {dev}")
        self.model = model.eval()
        self.steps = model.cfg.steps if steps is None else steps
        self.sparse_normals = sparse_normals
        S = model.cfg.image_size
        images = torch.rand(batch, views, 3, S, S, device=dev)
        # plausible intrinsics for the warm-up and capture (replaced before each replay)
        K = default_intrinsics(S, S, focal_ratio=2.0).to(dev).expand(batch, views, 3, 3).contiguous()
        with self._mode():
            self._front = _Graph(self._front_fn, [images, K], warmup)
            _, _, R, t = self._front(images, K)
            self._descent = _Graph(self._descent_fn, [K, R, t], warmup)
            x = self._descent(K, R, t)[0][:, -1]
            self._refine = _Graph(self._refine_fn, [K, R, t, x], warmup) if model.camera_refiner is not None else None

    @contextlib.contextmanager
    def _mode(self):
        """Capture and replay under inference mode (the buffers are inference tensors) with this pipeline's
        choice of vertex normals."""
        before = self.model.sparse_normals
        self.model.sparse_normals = self.sparse_normals
        try:
            with torch.inference_mode():
                yield
        finally:
            self.model.sparse_normals = before

    # what the graphs run: the model's own methods on the buffers
    def _front_fn(self, images: torch.Tensor, K: torch.Tensor):
        feats = self.model.encode(images)
        prep = self.model.prepare(feats)
        cams = self.model.estimate_cameras(feats, K, prep)
        return feats, prep, cams.R, cams.t

    def _features(self) -> tuple[FeatureMaps, dict]:
        feats, prep, _, _ = self._front.outputs
        return feats, prep

    def _descent_fn(self, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor):
        feats, prep = self._features()
        return self.model.descend(feats, Cameras(K, R, t), self.steps, prep=prep)

    def _refine_fn(self, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, x: torch.Tensor):
        feats, prep = self._features()
        cams = self.model.refine_cameras(prep, feats, Cameras(K, R, t), x, rounds=POST_DESCENT_ROUNDS)
        return cams.R, cams.t

    def front(self, images: torch.Tensor, K: torch.Tensor) -> tuple[FeatureMaps, dict, Cameras]:
        """``images (B, V, 3, S, S)``, ``K (B, V, 3, 3)`` -> the features, ``model.prepare``'s projections and
        the estimated cameras (the graph's own tensors, valid until the next call)."""
        if tuple(images.shape) != tuple(self._front.inputs[0].shape):
            raise ValueError(f"this pipeline was captured for images {tuple(self._front.inputs[0].shape)}, "
                             f"not {tuple(images.shape)}")
        with self._mode():
            feats, prep, R, t = self._front(images, K)
        return feats, prep, Cameras(self._front.inputs[1], R, t)

    def descend(self, cams: Cameras, on_step: Callable[[int, torch.Tensor], None] | None = None,
                cancel=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The descent from the template with ``cams`` on the last :meth:`front`'s features: ``verts (B, T+1,
        N, 3)``, ``keypoints (B, T+1, K, 3)`` (copies). The steps run as one replay, so ``on_step`` is called
        for each after it and ``cancel`` is checked before it."""
        if cancel is not None and cancel.is_set():
            raise Cancelled("reconstruction cancelled")
        with self._mode():
            xs, kps = (y.clone() for y in self._descent(cams.K, cams.R, cams.t))
        if on_step is not None:
            for i in range(1, xs.shape[1]):
                on_step(i, xs[:, i])
        return xs, kps

    def refine_cameras(self, cams: Cameras, x: torch.Tensor) -> Cameras:
        """One round of the refiner on ``x (B, N, 3)`` from ``cams`` (the last :meth:`front`'s features)."""
        if self._refine is None:
            return cams
        with self._mode():
            R, t = (y.clone() for y in self._refine(cams.K, cams.R, cams.t, x))
        return Cameras(cams.K, R, t)

    def reconstruct(self, images: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Cameras]:
        """:func:`eager_reconstruction` replayed: ``verts``, ``keypoints`` and the final cameras."""
        _, _, cams = self.front(images, K)
        xs, kps = self.descend(cams)
        return xs, kps, self.refine_cameras(cams, xs[:, -1])


def eager_reconstruction(model: GLVD, images: torch.Tensor, K: torch.Tensor, steps: int | None = None,
                         guidance=None) -> tuple[torch.Tensor, torch.Tensor, Cameras]:
    """What the runtime does for photos without a detector's landmarks, eagerly (any device): encode,
    estimate and refine the cameras, descend, refine once more on the result (``guidance``: what a guided
    model reads, :class:`glvd.guidance.Guidance`)."""
    with torch.no_grad():
        feats = model.encode(images)
        prep = model.prepare(feats, guidance)
        cams = model.estimate_cameras(feats, K, prep)
        xs, kps = model.descend(feats, cams, steps, prep=prep)
        return xs, kps, model.refine_cameras(prep, feats, cams, xs[:, -1], rounds=POST_DESCENT_ROUNDS)
