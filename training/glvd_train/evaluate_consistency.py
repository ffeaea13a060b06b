"""Identity consistency: do several photos of one person give nearly the same shape?

Each person (identity + expression fixed) is rendered from several poses, lights and
backgrounds; every photo is reconstructed on its own (1 view, estimated cameras: the camera
head, or the photo path's landmark PnP when a detector is given). The
spread of one person's reconstructions around their mean is compared with the spread of
the people's means around the overall mean (and with the true spread between the people).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from glvd.cameras import Cameras

from .metrics import similarity_align, vertex_error_mm


def _spread(shapes: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(M, N, 3)`` -> their similarity-aligned mean ``(N, 3)`` and mean aligned v2v to it (mm)."""
    aligned = similarity_align(shapes, shapes[:1].expand_as(shapes))
    mean = aligned.mean(0, keepdim=True)
    return mean[0], vertex_error_mm(shapes, mean.expand_as(shapes)).mean().item()


@torch.inference_mode()
def identity_spread(model, kit: str | None, seed: int, people: int = 6, photos: int = 4,
                    steps: int | None = None,
                    detect: Callable[[torch.Tensor], np.ndarray | None] | None = None) -> dict[str, float]:
    """``within_mm``, ``between_mm`` (reconstructions) and ``between_gt_mm`` (the truth).

    ``detect``: optional ``image (3, S, S) -> (68, 2)`` crop-pixel landmarks or None; with it each photo
    is placed as :class:`glvd.Reconstructor` places photos (landmark PnP before the descent where found; elsewhere
    ``estimate_cameras``, refined when the model has a camera refiner).
    """
    from glvd.pose import FROM_HEAD, landmark_cameras
    from .synth import SynthConfig, SyntheticFaces

    gen = SyntheticFaces(kit_path=kit, config=SynthConfig(image_size=model.cfg.image_size), seed=seed)
    s = gen.sample(people, photos)
    lm_ids = model.template.landmarks68
    means, within, placed = [], [], 0
    identity = None
    if model.needs_guidance:
        from glvd.identity import IdentityEncoder

        identity = IdentityEncoder()
    for p in range(people):
        feats = model.encode(s["images"][p, :, None])  # every photo on its own: (M, 1, 3, S, S)
        lms = [detect(im) for im in s["images"][p]] if detect is not None else [None] * photos
        guidance = (_guidance(identity, s["images"][p], lms, model.cfg.identity_dim, model.cfg.chip_features)
                    if identity is not None else None)
        prep = model.prepare(feats, guidance)
        cams = model.estimate_cameras(feats, s["K"][p, :, None], prep)
        if detect is not None:
            # (M, 1) cameras seen as M views of one face: PnP places each on its own either way
            as_views = Cameras(cams.K.transpose(0, 1), cams.R.transpose(0, 1), cams.t.transpose(0, 1))
            as_views, src = landmark_cameras(as_views, lms, model.template.vertices[lm_ids], prior=as_views)
            cams = Cameras(cams.K, as_views.R.transpose(0, 1), as_views.t.transpose(0, 1))
            placed += sum(x != FROM_HEAD for x in src)
        xs, _ = model.descend(feats, cams, steps, prep=prep)
        m, w = _spread(xs[:, -1])
        means.append(m)
        within.append(w)
    _, between = _spread(torch.stack(means))
    _, between_gt = _spread(s["vertices"])
    return {"within_mm": sum(within) / people, "between_mm": between, "between_gt_mm": between_gt,
            "people": people, "photos": photos, "placed_by_landmarks": placed if detect is not None else None}


def _guidance(identity, images: torch.Tensor, lms: list[np.ndarray | None], dim: int, chip: bool = False):
    """Per photo (as M one-view faces): the descriptor of the chip on its detected 68 ``lms`` (the crop
    itself; the truth is unknown here, so a photo without landmarks gets the zero code and zero chip maps),
    those landmarks, and with ``chip`` the chip maps."""
    from glvd.facenet import CHIP_MAP_CHANNELS, CHIP_MAP_SIZE
    from glvd.model import Guidance

    rgb = (images.permute(0, 2, 3, 1).clamp(0, 1) * 255 + 0.5).byte().numpy()
    faces = []
    for m, pts in enumerate(lms):
        if pts is None:
            desc = np.zeros((1, dim), np.float32)
            maps = np.zeros((1, CHIP_MAP_CHANNELS, CHIP_MAP_SIZE, CHIP_MAP_SIZE), np.float32)
            affine = np.zeros((1, 2, 3), np.float32)
        else:
            desc, maps, affine = identity.describe_with_maps([rgb[m]], [pts])
        faces.append(Guidance.of_views(desc[0], [pts], *((maps, affine) if chip else (None, None))))
    cat = lambda ts: None if ts[0] is None else torch.cat(ts)  # noqa: E731
    return Guidance(torch.cat([g.identity for g in faces]), torch.cat([g.landmarks for g in faces]),
                    cat([g.chip_maps for g in faces]), cat([g.chip_affine for g in faces]))
