"""The public API: ``glvd.Reconstructor``.

Photos in, a face mesh out (every descent step of it), with the cameras that
were used. Everything a caller needs is in :class:`Result`; nothing here
knows about Blender.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .cameras import Cameras
from .checkpoint import default_checkpoint_path, load_checkpoint
from .crop import crop_intrinsics
from .errors import GLVDError
from .expression import deltas_once, expression_offsets, posed_vertices
from .model import CancelToken
from .transfer import transfer_expressions

#: CUDA-graph pipelines kept at once (one per number of views and steps)
MAX_GRAPHED_SHAPES = 8

ImageLike = Any  # a path, a numpy array or a PIL image


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. An unavailable CUDA request is an error, not a silent fallback."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GLVDError("device 'cuda' was requested but this torch build has no CUDA device available")
    return dev


@dataclass
class Result:
    """A reconstruction. Arrays are numpy float32, metres, head frame (x subject's left, y up, z forward)."""

    # (T+1, N, 3); [0] is the start, [-1] the result: the person's neutral face with a model that reads the
    # expression apart (expression_weights is not None), else the face as the photos show it
    vertices: np.ndarray
    keypoints: np.ndarray  # (T+1, K, 3)
    cameras: dict[str, np.ndarray]  # K (V,3,3) image pixels, R (V,3,3), t (V,3): OpenCV convention
    landmarks2d: np.ndarray  # (V, 68, 2) the result's 68 landmarks projected into each input image, pixels
    image_sizes: list[tuple[int, int]]  # (W, H) per view
    quads: np.ndarray  # (F, 4)
    uvs: np.ndarray  # (U, 2)
    quad_uvs: np.ndarray  # (F, 4)
    landmark_ids: np.ndarray  # (68,)
    expression_names: list[str]
    timings: dict[str, float]
    checkpoint: str
    trained: bool
    # per view: "landmarks", "landmarks, rotation blended with the head's" (PnP and the estimate agreed),
    # "camera head", "head rotation + landmarks" (wide yaw) or "given"; with a
    # checkpoint that has a camera refiner, every estimated camera is also refined (glvd.camera_refine)
    camera_sources: list[str] = field(default_factory=list)
    # per view: "given", "EXIF", "camera", "lens N mm" (lens_35mm) or "assumed: face 1.2 m away"
    focal_sources: list[str] = field(default_factory=list)
    # (V, 53) each photo's ARKit weights in [0, 1] (order: expression_names; 0 where no landmarks were
    # found), None with a checkpoint without an expression head
    expression_weights: np.ndarray | None = None
    _template_vertices: np.ndarray = field(repr=False, default=None)
    _template_expressions: np.ndarray = field(repr=False, default=None)

    @property
    def final(self) -> np.ndarray:
        """``(N, 3)`` the last step's vertices."""
        return self.vertices[-1]

    @property
    def steps(self) -> int:
        return int(self.vertices.shape[0] - 1)

    def expressions(self) -> np.ndarray:
        """``(53, N, 3)`` the kit's ARKit expression deltas carried onto this face (same topology); computed once
        (read-only: :func:`glvd.expression.deltas_once`)."""
        return deltas_once(self, self.final, lambda: transfer_expressions(
            self._template_vertices, self.final, self.quads, self._template_expressions.astype(np.float32)))

    def posed(self, view: int = 0, expressions: np.ndarray | None = None) -> np.ndarray:
        """``(N, 3)`` the face as photo ``view`` shows it: the neutral result plus that photo's weights times
        :meth:`expressions` (pass them when already computed); the result itself without weights."""
        if self.expression_weights is None:
            return self.final
        deltas = self.expressions() if expressions is None else expressions
        return posed_vertices(self.final, self.expression_weights[view], deltas)

    def posed_views(self, expressions: np.ndarray | None = None) -> np.ndarray | None:
        """``(V, N, 3)`` the face as each photo shows it (:meth:`posed` of every view; what the texture bakes
        through); None without weights (the final step is then the face as the photos show it)."""
        if self.expression_weights is None:
            return None
        deltas = self.expressions() if expressions is None else expressions
        return posed_vertices(self.final, self.expression_weights, deltas)

    def weights_by_name(self, view: int = 0) -> dict[str, float]:
        """Photo ``view``'s ARKit weights by name (empty without an expression head)."""
        if self.expression_weights is None:
            return {}
        return {n: float(w) for n, w in zip(self.expression_names, self.expression_weights[view], strict=True)}


class Reconstructor:
    """Loads a checkpoint once and reconstructs faces from photos.

    Args:
        checkpoint: path of a GLVD checkpoint; None = the one shipped in the package.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        cuda_graphs: on CUDA, replay each shape's GPU work as CUDA graphs (:mod:`glvd.cuda_graph`); the
            first photo set of a shape pays the capture (well under a second).
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str | torch.device = "auto",
                 cuda_graphs: bool = True) -> None:
        self.device = resolve_device(device)
        self.checkpoint_path = str(checkpoint if checkpoint is not None else default_checkpoint_path())
        self.model, self.provenance = load_checkpoint(self.checkpoint_path, self.device)
        self.template = self.model.template
        self.image_size = self.model.cfg.image_size
        # on CUDA, each (views, steps) shape is captured once as CUDA graphs (glvd.cuda_graph) and replayed:
        # 4-8x less time on an H100 at batch 1 (docs/gpu_check/); None marks a shape whose capture failed
        # a model that reads the identity code and the landmarks runs eagerly: the captured graphs take images only
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda" and not self.model.needs_guidance
        self._pipelines: dict[tuple[int, int], object] = {}
        self._identity = None  # glvd.identity.IdentityEncoder, loaded on first use

    def guidance(self, views: list, images: list[np.ndarray]):
        """What the frozen networks say about these views (:class:`glvd.model.Guidance`, batch 1): the mean
        identity descriptor of the views where the detector found the mesh, and the 68 landmarks in crop
        pixels (NaN where none were found)."""
        from .facenet import CHIP_MAP_CHANNELS, CHIP_MAP_SIZE
        from .identity import IdentityEncoder
        from .model import Guidance

        if self._identity is None:
            self._identity = IdentityEncoder(self.device)
        found = [i for i, v in enumerate(views) if v.landmarks_dense is not None]
        imgs, pts = [images[i] for i in found], [views[i].landmarks_dense for i in found]
        # one backbone pass gives the descriptor and the chip maps (a chip-features model reads the maps too)
        desc, m, a = self._identity.describe_with_maps(imgs, pts)
        identity = desc.mean(0) if found else np.zeros(self.model.cfg.identity_dim, np.float32)
        maps = affine = None
        if self.model.cfg.chip_features:
            # per view the chip maps and where crop pixels land on the chip (zeros where no mesh was found)
            maps = np.zeros((len(views), CHIP_MAP_CHANNELS, CHIP_MAP_SIZE, CHIP_MAP_SIZE), np.float32)
            affine = np.zeros((len(views), 2, 3), np.float32)
            for j, i in enumerate(found):
                maps[i], affine[i] = m[j], views[i].affine_from_crop(a[j])
        return Guidance.of_views(identity, [v.landmarks68_crop for v in views], maps, affine).to(self.device)

    def _pipeline(self, views: int, steps: int):
        """The CUDA-graph pipeline for this shape, captured on first use; None on the CPU, when disabled, or
        when capture failed (then this shape runs eagerly, with one warning)."""
        if not self.cuda_graphs:
            return None
        key = (views, steps)
        if key not in self._pipelines:
            from .cuda_graph import GraphedPipeline

            if len(self._pipelines) >= MAX_GRAPHED_SHAPES:  # each holds its own GPU buffers
                self._pipelines.clear()
            try:
                self._pipelines[key] = GraphedPipeline(self.model, 1, views, steps)
            except Exception as e:  # a torch or driver that cannot capture: eager still works
                warnings.warn(f"CUDA graph capture failed, running eagerly: {type(e).__name__}: {e}", stacklevel=3)
                self._pipelines[key] = None
        return self._pipelines[key]

    @property
    def trained(self) -> bool:
        return bool(self.provenance.get("trained", False))

    @torch.inference_mode()
    def reconstruct(
        self,
        images: ImageLike | Sequence[ImageLike],
        cameras: Sequence[dict] | None = None,
        steps: int = 10,
        on_step: Callable[[int, np.ndarray], None] | None = None,
        cancel: CancelToken | None = None,
        on_progress: Callable[[str, str], None] | None = None,
        focal_px: Sequence[float | None] | None = None,
        lens_35mm: float | None = None,
    ) -> Result:
        """Reconstruct one face from 1 to 8 photos of it.

        Args:
            images: one image or a list (paths, ``(H, W, 3)`` uint8 arrays, PIL images).
            cameras: optional known cameras, one dict per image with ``K`` (3x3, image pixels), ``R`` (3x3),
                ``t`` (3,): OpenCV convention, head frame in metres. Estimated when None.
            steps: descent steps (1-30).
            on_step: called as ``on_step(i, vertices (N, 3) float32)`` after step i (1-based).
            cancel: anything with ``is_set()``; checked between steps (raises :class:`glvd.Cancelled`).
            on_progress: called as ``on_progress(stage, message)``.
            focal_px: optional focal length in pixels per image; else the file's EXIF focal length, else
                the focal that puts the face 1.2 m away (:func:`glvd.cameras.focal_from_face_box`).
            lens_35mm: the lens of photos without ``focal_px`` or an EXIF focal length, as a 35 mm-equivalent
                focal length (e.g. 26 for a phone's main camera), instead of that assumption.
        """
        if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "getpixel"):
            images = [images]
        images = list(images)
        if not 1 <= len(images) <= 8:
            raise GLVDError(f"give 1 to 8 photos of one face (got {len(images)})")
        if not 1 <= steps <= 30:
            raise GLVDError(f"steps must be between 1 and 30 (got {steps})")
        if lens_35mm is not None and not 0 < float(lens_35mm) <= 2000:
            raise GLVDError(f"lens_35mm must be a focal length in mm, 35 mm equivalent (got {lens_35mm})")
        if cameras is not None and len(cameras) != len(images):
            raise GLVDError(f"{len(cameras)} cameras were given for {len(images)} photos")
        progress = on_progress or (lambda stage, msg: None)
        t = {"start": time.perf_counter()}
        views, pixels, focal_sources = self._load(images, cameras, focal_px, lens_35mm, progress, cancel)
        t["preprocess"] = time.perf_counter()
        guidance = None
        if self.model.needs_guidance:
            progress("identity", "reading the identity")
            guidance = self.guidance(views, pixels)
        t["identity"] = time.perf_counter()
        progress("encode", "encoding photos")
        feats, prep, cams, pipeline = self._encode(views, guidance, cameras, steps)
        t["encode"] = time.perf_counter()

        def _step(i: int, x: torch.Tensor) -> None:
            progress("step", f"step {i}/{steps}")
            if on_step is not None:
                on_step(i, x[0].detach().cpu().numpy().astype(np.float32))

        xs, kps, cams, sources = self._descend(views, feats, prep, cams, cameras is not None, pipeline, steps, _step,
                                               cancel)
        t["descent"] = time.perf_counter()
        weights = None
        if self.model.expression is not None:
            progress("expression", "reading the expression")
            weights = self.expression_weights(views, cams)  # (1, V, E)
        return self._result(views, xs, kps, cams, sources, focal_sources, weights, t)

    def _load(self, images: list, cameras: Sequence[dict] | None, focal_px: Sequence[float | None] | None,
              lens_35mm: float | None, progress: Callable[[str, str], None],
              cancel: CancelToken | None) -> tuple[list, list[np.ndarray], list[str]]:
        """Each photo read, its focal length found (given, EXIF, lens, camera, or assumed), its face detected and
        cropped: the prepared views, their pixels and where each focal length came from."""
        from .cameras import focal_from_exif_35mm
        from .preprocess import FOCAL_EXIF, FOCAL_GIVEN, load_image_info, prepare_view

        views, focal_sources, pixels = [], [], []
        for i, src in enumerate(images):
            name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else f"image {i + 1}"
            progress("load", f"loading {os.path.basename(name)}")
            loaded = load_image_info(src)  # the pixels and the EXIF focal length from one read of the file
            img = loaded.rgb
            f = focal_px[i] if focal_px is not None else None
            source = FOCAL_GIVEN
            if f is None and isinstance(src, (str, os.PathLike)):
                f, source = loaded.focal_px, FOCAL_EXIF
            if f is None and lens_35mm:
                f, source = focal_from_exif_35mm(float(lens_35mm), img.shape[1], img.shape[0]), f"lens {lens_35mm:g} mm"
            if cameras is not None:
                f, source = float(np.asarray(cameras[i]["K"])[0, 0]), "camera"
            progress("detect", f"finding the face in {os.path.basename(name)}")
            views.append(prepare_view(img, size=self.image_size, focal_px=f, name=name))
            pixels.append(img)
            focal_sources.append(source if f is not None else views[-1].focal_source)
            if cancel is not None and cancel.is_set():
                from .errors import Cancelled
                raise Cancelled("reconstruction cancelled")
        return views, pixels, focal_sources

    def _encode(self, views: list, guidance, cameras: Sequence[dict] | None, steps: int):
        """The encoder's features, the fields' prepared inputs and the cameras (given, or the camera head's
        estimate); the CUDA-graph pipeline when this shape runs as one (else None)."""
        dev = self.device
        crops = torch.stack([v.crop for v in views])[None].to(dev)  # (1, V, 3, S, S)
        K_crop = torch.stack([v.K_crop for v in views])[None].to(dev)
        # the captured graphs take images only: a model that reads the identity code and landmarks runs eagerly
        pipeline = None if self.model.needs_guidance else self._pipeline(len(views), steps)
        if pipeline is not None:
            feats, prep, estimate = pipeline.front(crops, K_crop)
        else:
            feats = self.model.encode(crops)
            # the fields' and the camera refiner's projections of the maps (and the identity and landmarks)
            prep = self.model.prepare(feats, guidance)
            estimate = None
        if cameras is not None:
            K_img = torch.stack([torch.as_tensor(np.asarray(c["K"]), dtype=torch.float32) for c in cameras])
            R = torch.stack([torch.as_tensor(np.asarray(c["R"]), dtype=torch.float32) for c in cameras])[None]
            t = torch.stack([torch.as_tensor(np.asarray(c["t"]), dtype=torch.float32).reshape(3)
                             for c in cameras])[None]
            Kc = torch.stack([crop_intrinsics(K_img[i], *[torch.tensor(float(b)) for b in v.box], self.image_size)
                              for i, v in enumerate(views)])[None]
            cams = Cameras(Kc.to(dev), R.to(dev), t.to(dev))
        else:
            cams = estimate if estimate is not None else self.model.estimate_cameras(feats, K_crop, prep)
        return feats, prep, cams, pipeline

    def _descend(self, views: list, feats, prep: dict, cams: Cameras, given: bool, pipeline, steps: int,
                 on_step: Callable, cancel: CancelToken | None):
        """The descent; estimated cameras are placed by the detector's landmarks where it found them
        (:func:`glvd.pose.descend_with_landmark_cameras`). Returns ``xs``, ``kps``, the final cameras and where
        each view's camera came from."""
        from .pose import descend_with_landmark_cameras

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if not given:
                return descend_with_landmark_cameras(
                    self.model, feats, cams, [v.landmarks68_crop for v in views], steps, prep=prep, on_step=on_step,
                    cancel=cancel, graphs=pipeline)
            if pipeline is not None:
                xs, kps = pipeline.descend(cams, on_step=on_step, cancel=cancel)
            else:
                xs, kps = self.model.descend(feats, cams, steps, on_step=on_step, cancel=cancel, prep=prep)
        return xs, kps, cams, ["given"] * len(views)

    def _result(self, views: list, xs: torch.Tensor, kps: torch.Tensor, cams: Cameras, sources: list[str],
                focal_sources: list[str], weights: torch.Tensor | None, t: dict[str, float]) -> Result:
        """The :class:`Result`: the arrays on the CPU, the cameras in image pixels, each photo's landmarks
        projected (on its own posed face when the expression is read), the timings."""
        dev, tpl = self.device, self.template
        K_image = torch.stack([v.K_image for v in views]).to(dev)
        img_cams = Cameras(K_image[None], cams.R, cams.t)
        lm = xs[:, -1][:, torch.as_tensor(tpl.landmarks68, device=dev)]
        if weights is None:
            lm2d, _ = img_cams.project(lm)
        else:  # each photo's landmarks on its own posed face (the kit's deltas at the landmarks), in its camera
            deltas = torch.as_tensor(tpl.expressions[:, tpl.landmarks68], dtype=torch.float32, device=dev)
            V = len(views)
            posed = (lm[:, None] + expression_offsets(weights, deltas)).reshape(1, V * 68, 3)
            uv, _ = img_cams.project(posed)  # (1, V, V*68, 2): the view's own block
            lm2d = torch.stack([uv[:, v, v * 68:(v + 1) * 68] for v in range(V)], 1)
        t_end = time.perf_counter()
        return Result(
            vertices=xs[0].cpu().numpy().astype(np.float32),
            keypoints=kps[0].cpu().numpy().astype(np.float32),
            cameras={"K": K_image.cpu().numpy(), "R": cams.R[0].cpu().numpy(), "t": cams.t[0].cpu().numpy()},
            landmarks2d=lm2d[0].cpu().numpy(),
            image_sizes=[tuple(v.image_size) for v in views],
            quads=tpl.quads,
            uvs=tpl.uvs,
            quad_uvs=tpl.quad_uvs,
            landmark_ids=tpl.landmarks68,
            expression_names=list(tpl.expression_names),
            timings={"preprocess_s": t["preprocess"] - t["start"], "identity_s": t["identity"] - t["preprocess"],
                     "encode_s": t["encode"] - t["identity"], "descent_s": t["descent"] - t["encode"],
                     "expression_s": t_end - t["descent"], "total_s": t_end - t["start"]},
            checkpoint=self.checkpoint_path,
            trained=self.trained,
            camera_sources=sources,
            focal_sources=focal_sources,
            expression_weights=None if weights is None else weights[0].cpu().numpy().astype(np.float32),
            _template_vertices=tpl.vertices,
            _template_expressions=tpl.expressions,
        )

    def expression_weights(self, views: list, cams: Cameras) -> torch.Tensor:
        """``(1, V, E)`` each view's ARKit weights from its 68 landmarks (crop pixels) and camera rotation."""
        from .guidance import landmark_stack

        lm = landmark_stack([v.landmarks68_crop for v in views])
        return self.model.expression(lm[None].to(self.device), cams.R)
