"""Two checkpoints side by side on the photos that ship in packages (astronaut, grace_hopper): each photo's
neutral face area, shaded grey, front and 60 degrees to the side, in the same place and scale, so that a
change of the shape is what changes in the picture (the identity issue's milestone check).

    .venv/bin/python tools/compare_models.py OLD.pt NEW.pt [--labels old new] [--out docs/identity/compare.png]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training"))

SIZE = 320
YAWS = (0.0, 60.0)


def shade(verts: np.ndarray, quads: np.ndarray, yaw_deg: float, size: int = SIZE) -> np.ndarray:
    """``(size, size)`` grey values: the mesh (head frame, metres) seen from ``yaw_deg``, Lambert with a light
    over the viewer's shoulder; white background."""
    from glvd.raster import interpolate, rasterize
    from glvd.topology import vertex_normals

    c = verts - verts.mean(0)
    a = math.radians(yaw_deg)
    # the head frame looks along -z at the viewer (OpenCV camera: y down, z forward)
    Ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    R = np.diag([1.0, -1.0, -1.0]) @ Ry
    v = torch.from_numpy(c @ R.T + np.array([0, 0, 0.6])).float()[None]
    f = size * 2.4
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])[None]
    q = torch.from_numpy(quads.astype(np.int64))
    t = torch.cat([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    n = vertex_normals(v, q)
    frags = rasterize(v, t, K, size)
    nrm = interpolate(frags, t, n)[0].numpy()
    light = np.array([0.4, -0.4, -1.0])
    light /= np.linalg.norm(light)
    lam = np.clip((nrm / np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-9)) @ light, 0, 1)
    img = 0.15 + 0.8 * lam
    img[frags.tri_id[0].numpy() < 0] = 1.0
    return img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs=2)
    ap.add_argument("--labels", nargs=2, default=None)
    ap.add_argument("--out", default="docs/identity/compare.png")
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from glvd.api import Reconstructor
    from glvd_train.evaluate_photos import package_photos

    torch.set_num_threads(2)
    labels = a.labels or [Path(c).stem for c in a.checkpoints]
    photos = package_photos()
    recs = [Reconstructor(c, device="cpu") for c in a.checkpoints]
    cols = 1 + len(recs) * len(YAWS)
    fig, axes = plt.subplots(len(photos), cols, figsize=(2.2 * cols, 2.4 * len(photos)), squeeze=False)
    for row, (name, img) in enumerate(photos.items()):
        results = [r.reconstruct(img) for r in recs]
        lm = results[0].landmarks2d[0]
        c, r = lm.mean(0), 1.3 * float(np.ptp(lm, 0).max())  # the face, from the result's own landmarks
        y0, x0 = max(int(c[1] - r), 0), max(int(c[0] - r), 0)
        ax = axes[row, 0]
        ax.imshow(img[y0:int(c[1] + r), x0:int(c[0] + r)])
        ax.set_title(name, fontsize=8)
        for i, (label, res) in enumerate(zip(labels, results, strict=True)):
            for j, yaw in enumerate(YAWS):
                ax = axes[row, 1 + i * len(YAWS) + j]
                ax.imshow(shade(res.final, res.quads, yaw), cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{label}, {yaw:.0f} deg", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
