"""``glvd-train cache``: renders with the frozen networks' outputs, computed once.

The frozen networks (MediaPipe's face mesh, dlib's face-recognition ResNet) run once per
render, here, never per training iteration, so the trainable heads train fast on the CPU.
Each shard holds ``--faces-per-shard`` faces seen from ``--views`` views each (one
``.npz``, written to a temporary name and renamed, so a kill leaves no half shard); shard
``i`` is drawn from seed ``seed * 100003 + i``, so a resumed cache equals an uninterrupted
one and the command simply continues where the last shard ends. Growing it later with a
larger ``--faces`` appends shards.

Per face: ``identity (100)``, ``expression (53)``, ``deformed``, ``vertices (N, 3)`` fp16
(face area, head frame, m; the neutral face is ``vertices - sum_e expression_e * delta_e``).
Per view: ``image (S, S, 3)`` uint8 at the model's crop size; the crop camera ``K, R, t``
(for that size); ``landmarks2d (68, 2)`` the true projections of the landmark vertices;
``mesh2d (468, 2)`` MediaPipe's landmarks on the render (crop pixels; NaN where MediaPipe
found no face, ``mesh_found`` False); ``descriptor (128)`` from the chip aligned on
MediaPipe's points as at inference (on the true 68 where MediaPipe found nothing,
``descriptor_from_truth`` True); ``chip_maps (128, 8, 8)`` fp16, the backbone's pixel features of that chip
(``glvd.facenet.CHIP_MAP_BLOCK``), and ``chip_affine (2, 3)``, crop pixels -> chip pixels. Renders are made at
``--render-size`` (MediaPipe and the chip see that image, as they see a photo) and area-resized to
``--image-size``.

    glvd-train cache --out runs/cache --faces 8000 [--views 3] [--seed 0] [--worker 0/2]

``--worker i/n`` builds only the shards ``i, i + n, ...``: n processes grow one cache together (each shard is
still drawn from its own seed, so the cache is the same); the reader takes the complete shards from 0 on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

FORMAT = "glvd-feature-cache"
VERSION = 2  # 2: chip_maps and chip_affine


def shard_path(out: Path, i: int) -> Path:
    return out / f"shard_{i:05d}.npz"


def existing_shards(out: Path) -> int:
    """Shards 0..n-1 that are complete (a missing one ends the run of them)."""
    n = 0
    while shard_path(out, n).is_file():
        n += 1
    return n


def _mesh_points(img: np.ndarray) -> np.ndarray | None:
    from glvd.detect import detect_faces

    faces = [f for f in detect_faces(img, backend="mediapipe", max_faces=1) if f.landmarks_dense is not None]
    return faces[0].landmarks_dense[:468].astype(np.float32) if faces else None


def make_shard(kit: str | None, i: int, seed: int, faces: int, views: int, render_size: int, image_size: int,
               identity) -> dict[str, np.ndarray]:
    """One shard's arrays (see the module docstring)."""
    import cv2

    from .synth import SynthConfig, SyntheticFaces

    gen = SyntheticFaces(kit, SynthConfig(image_size=render_size), seed=seed * 100003 + i)
    s = gen.sample(faces, views)
    imgs = (s["images"].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    scale = image_size / render_size
    B, V = imgs.shape[:2]
    small = np.empty((B, V, image_size, image_size, 3), np.uint8)
    mesh = np.full((B, V, 468, 2), np.nan, np.float32)
    found = np.zeros((B, V), bool)
    chips_src, chips_pts = [], []
    lm = s["landmarks2d"].numpy()
    for b in range(B):
        for v in range(V):
            img = np.ascontiguousarray(imgs[b, v])
            small[b, v] = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)
            pts = _mesh_points(img)
            if pts is not None:
                mesh[b, v] = pts * scale
                found[b, v] = True
            chips_src.append(img)
            chips_pts.append(pts if pts is not None else lm[b, v])
    desc, maps, affine = identity.describe_with_maps(chips_src, chips_pts)
    desc = desc.reshape(B, V, -1)
    maps = maps.reshape(B, V, *maps.shape[1:])
    affine = affine.reshape(B, V, 2, 3).astype(np.float32)
    affine[..., :2] /= scale  # crop pixels at image_size -> render pixels -> chip pixels
    K = s["K"].clone()
    K[..., :2, :] *= scale  # crop pixels at image_size (pixel-centre convention: spans [0, S])
    return {
        "identity": s["identity"].numpy().astype(np.float32),
        "expression": s["expression"].numpy().astype(np.float32),
        "deformed": s["deformed"].numpy(),
        "vertices": s["vertices"].numpy().astype(np.float16),
        "images": small,
        "K": K.numpy(), "R": s["R"].numpy(), "t": s["t"].numpy(),
        "landmarks2d": (lm * scale).astype(np.float32),
        "mesh2d": mesh, "mesh_found": found,
        "descriptor": desc.astype(np.float16), "descriptor_from_truth": ~found,
        "chip_maps": maps.astype(np.float16), "chip_affine": affine,
    }


def write_atomic(path: Path, arrays: dict[str, np.ndarray], tag: str = "w0") -> None:
    tmp = path.with_suffix(f".{tag}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def build(out: Path, faces: int, faces_per_shard: int, views: int, seed: int, kit: str | None,
          render_size: int, image_size: int, log=print, worker: tuple[int, int] = (0, 1)) -> int:
    """Grow the cache at ``out`` to ``faces`` faces (``worker (i, n)``: only the shards ``i mod n``); returns the
    shard count."""
    from glvd.identity import IdentityEncoder

    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "seed": seed, "views": views, "faces_per_shard": faces_per_shard,
            "render_size": render_size, "image_size": image_size}
    meta_path = out / "cache.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if any(old.get(k) != v for k, v in meta.items()):
            raise ValueError(f"{out} was built with {old}, not {meta}: use another --out")
    else:
        meta_path.write_text(json.dumps(meta, indent=1))
    mine, workers = worker
    for stale in out.glob(f"*.w{mine}.tmp.npz"):
        stale.unlink()  # a shard a kill of this worker interrupted
    target = -(-faces // faces_per_shard)
    identity = IdentityEncoder()
    t0, done = time.perf_counter(), 0
    for i in range(existing_shards(out), target):
        if i % workers != mine or shard_path(out, i).is_file():
            continue
        write_atomic(shard_path(out, i), make_shard(kit, i, seed, faces_per_shard, views, render_size, image_size,
                                                    identity), tag=f"w{mine}")
        done += 1
        rate = done * faces_per_shard * views / (time.perf_counter() - t0)
        log(f"shard {i + 1}/{target}: {existing_shards(out) * faces_per_shard} faces complete, {rate:.2f} views/s")
    return target


class FeatureCache:
    """Read side: every shard of a cache, concatenated (memory: ~60 KB per view + 56 KB per face)."""

    def __init__(self, path: str | Path, max_shards: int | None = None):
        path = Path(path)
        meta_path = path / "cache.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path} is not a feature cache (no cache.json): build it with glvd-train cache")
        self.meta = json.loads(meta_path.read_text())
        n = existing_shards(path)
        if max_shards is not None:
            n = min(n, max_shards)
        if n == 0:
            raise FileNotFoundError(f"{path} has no complete shard yet")
        parts = [dict(np.load(shard_path(path, i))) for i in range(n)]
        self.arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        self.shards = n

    def __len__(self) -> int:
        return len(self.arrays["identity"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="glvd-train cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/cache"))
    p.add_argument("--faces", type=int, default=8000, help="grow the cache to this many faces")
    p.add_argument("--views", type=int, default=3, help="views per face")
    p.add_argument("--faces-per-shard", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kit", default=None, help="ict_facekit_light.npz (default: $GLVD_KIT or ../shared/data/...)")
    p.add_argument("--render-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", default="0/1", help="i/n: build only the shards i, i + n, ... (n processes)")
    a = p.parse_args(argv)
    try:
        mine, workers = (int(x) for x in a.worker.split("/"))
        if not 0 <= mine < workers:
            raise ValueError
    except ValueError:
        print(f"glvd-train cache: --worker {a.worker!r}: expected i/n with 0 <= i < n", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    try:
        build(a.out, a.faces, a.faces_per_shard, a.views, a.seed, a.kit, a.render_size, a.image_size,
              log=lambda m: print(m, file=sys.stderr, flush=True), worker=(mine, workers))
    except (ValueError, FileNotFoundError) as exc:
        print(f"glvd-train cache: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glvd-train cache: interrupted; the complete shards stay, run it again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
