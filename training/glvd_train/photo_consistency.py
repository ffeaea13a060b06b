"""Identity consistency on real photos (``../shared/data/photos_identity``): evaluation only.

Each photo ``person_<name>_*.jpg`` is reconstructed alone; every result (face area, mm) is
moved onto the mean result by a similarity transform; "within" is the mean per-vertex distance
between two results of one person, "between" the same between the people's mean shapes.
within / between well below 1: the shape follows the person, not the photo. The same scoring
as the shared ``identity_spread.py``, for any method that maps a photo to face-area vertices.
These photos are never used to train or fit anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from glvd.topology import default_kit_path

from .metrics import similarity_align


def default_photos_dir() -> Path:
    return default_kit_path().parent.parent / "photos_identity"


def spread(names: list[str], shapes_mm: list[np.ndarray]) -> dict[str, float]:
    """within, between (mm), their ratio, photo and pair counts."""
    shapes = torch.from_numpy(np.stack(shapes_mm).astype(np.float64))
    al = similarity_align(shapes, shapes.mean(0, keepdim=True).expand_as(shapes)).numpy()
    people = sorted(set(names))
    within = [np.linalg.norm(al[i] - al[j], axis=1).mean()
              for i in range(len(al)) for j in range(i + 1, len(al)) if names[i] == names[j]]
    means = {p: np.mean([al[i] for i in range(len(al)) if names[i] == p], 0) for p in people}
    between = [np.linalg.norm(means[p] - means[q], axis=1).mean()
               for i, p in enumerate(people) for q in people[i + 1:]]
    w, b = float(np.mean(within)), float(np.mean(between))
    return {"within_mm": w, "between_mm": b, "ratio": w / b, "photos": len(al), "people": len(people),
            "pairs": len(within)}


def photo_spread(folder: Path, methods: dict[str, Callable[[Path], np.ndarray]],
                 log: Callable[[str], None] = print) -> dict[str, dict]:
    """``methods``: name -> (photo path -> face-area vertices ``(N, 3)`` in metres). Failures are
    reported and left out (a photo without a face found is a result too)."""
    paths = sorted(folder.glob("person_*"))
    out = {}
    for name, fn in methods.items():
        names, shapes, failed = [], [], []
        for p in paths:
            try:
                shapes.append(np.asarray(fn(p), np.float64) * 1000.0)
                names.append(p.name.split("_")[1])
            except Exception as exc:  # reported in the row
                failed.append(f"{p.name}: {exc}")
        if len(set(names)) < 2:
            out[name] = {"failed": failed}
            continue
        out[name] = {**spread(names, shapes), "failed": failed}
        log(f"real-photo consistency, {name}: ratio {out[name]['ratio']:.2f} ({out[name]['photos']} photos)")
    return out


def ridge_method(ridge, face_model) -> Callable[[Path], np.ndarray]:
    """Baseline (f) on a photo: MediaPipe on the full photo, the chip, the descriptor, the ridge."""
    from glvd.detect import detect_faces
    from glvd.identity import IdentityEncoder
    from glvd.preprocess import load_image

    enc = IdentityEncoder()

    def run(path: Path) -> np.ndarray:
        img = load_image(str(path))
        faces = [f for f in detect_faces(img) if f.landmarks_dense is not None]
        if not faces:
            raise ValueError("no face with landmarks found")
        f = max(faces, key=lambda f: f.side)
        alpha = torch.from_numpy(ridge.coefficients(enc.describe([img], [f.landmarks_dense]))).float()
        return face_model.vertices(alpha, torch.zeros(face_model.num_expression)).numpy()

    return run


def glvd_method(reconstructor, steps: int | None = None, posed: bool = False,
                cache: dict | None = None) -> Callable[[Path], np.ndarray]:
    """The final shape of each photo's reconstruction; ``posed``: with the photo's expression on it
    (:meth:`glvd.api.Result.posed`; a model without an expression head gives the same); ``cache``: a dict
    two methods share so that each photo is reconstructed once."""
    cache = {} if cache is None else cache

    def run(path: Path) -> np.ndarray:
        if path not in cache:
            cache[path] = reconstructor.reconstruct([str(path)], **({"steps": steps} if steps else {}))
        res = cache[path]
        return res.posed() if posed else res.vertices[-1]

    return run
