"""Speed of texture baking (glvd.texture): 3 views onto the 9,409-vertex face at 1024x1024.

Prints the cold time (first bake in the process: the UV raster is built and cached), the median
warm time over repeated runs with a per-stage breakdown, and a machine-independent ratio against a
fixed reference workload (elementwise ops, gathers, a matmul) timed in the same process just before
every run, so a busy machine shows up in both.

    python bench/bench_texture.py                     # 3 views, 1024, 5 repeats
    python bench/bench_texture.py --size 2048 --views 8
    python bench/bench_texture.py --figure docs/texture_astronaut.png   # also the docs picture

The mesh is the ICT face-area template (../shared/data/ict_facekit/ or $GLVD_KIT) when present,
else the tiny stand-in kit (said so in the output). Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vendor" / "glvd"))
sys.path.insert(0, str(REPO / "bench"))

from glvd.texture import bake, symmetry_map, uv_raster  # noqa: E402
from glvd.topology import default_kit_path, load_kit, template_from_kit  # noqa: E402
from reference import reference_workload  # noqa: E402


def camera(yaw_deg: float, size: int = 640, f: float = 1400.0, dist: float = 0.6) -> dict[str, np.ndarray]:
    """OpenCV camera looking at the head from ``yaw_deg`` (towards +x, the subject's left)."""
    a = math.radians(yaw_deg)
    Ry = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    return {"K": np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], np.float32),
            "R": (np.diag([1.0, -1.0, -1.0]) @ Ry).astype(np.float32),
            "t": np.array([0.0, -0.02, dist], np.float32)}


def load_template():
    kit = default_kit_path()
    if kit.is_file():
        return template_from_kit(load_kit(kit)), f"ICT face area ({kit})"
    from glvd_train.tinykit import make_tiny_kit

    path = make_tiny_kit(Path(tempfile.mkdtemp()) / "tiny_kit.npz")
    return template_from_kit(load_kit(path)), "TINY stand-in kit (no ICT kit found)"


def bench(size: int, views: int, repeats: int) -> None:
    tpl, what = load_template()
    yaws = np.linspace(-35, 35, views) if views > 1 else np.zeros(1)
    cams = [camera(float(y)) for y in yaws]
    cam = {k: np.stack([c[k] for c in cams]) for k in ("K", "R", "t")}
    rng = np.random.default_rng(0)
    photo = (rng.uniform(0, 255, (640, 640, 3))).astype(np.uint8)  # content does not change the timing
    imgs = [photo] * views
    sym = symmetry_map(tpl.vertices)
    args = (tpl.vertices, tpl.quads, tpl.uvs, tpl.quad_uvs, imgs, cam, size, sym)
    print(f"mesh: {what}: {tpl.num_vertices} vertices, {len(tpl.quads)} quads; {views} views of 640x640; "
          f"texture {size}x{size}; torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    b = bake(*args)
    cold = time.perf_counter() - t0
    print(f"cold (first bake, builds the UV raster): {cold:.3f} s  stages {fmt(b.timings)}")
    ts, refs, stages = [], [], []
    for _ in range(repeats):
        refs.append(reference_workload())
        t0 = time.perf_counter()
        b = bake(*args)
        ts.append(time.perf_counter() - t0)
        stages.append(b.timings)
    med = statistics.median(ts)
    ref = statistics.median(refs)
    per_stage = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in stages[0]}
    print(f"warm: median {med:.3f} s over {repeats} runs (min {min(ts):.3f}, max {max(ts):.3f})  "
          f"stages {fmt(per_stage)}")
    print(f"reference workload: median {ref * 1000:.1f} ms; bake / reference = {med / ref:.1f}x "
          f"(cold {cold / ref:.1f}x)")
    chart = uv_raster(tpl.quads, tpl.uvs, tpl.quad_uvs, size, sym).chart
    print(f"texels in UV islands: {int(chart.sum())} of {size * size}; "
          f"seen by the photos (coverage > 0.5): {(b.coverage[chart] > 0.5).mean():.0%} of them")


def fmt(d: dict[str, float]) -> str:
    return " ".join(f"{k}={v * 1000:.0f}ms" for k, v in d.items())


def figure(out: Path, size: int) -> None:
    """Reconstruct the astronaut photo, bake it, render the textured mesh; one small PNG for docs/."""
    import cv2
    import glvd
    import glvd.texture
    from PIL import Image
    from skimage import data

    from glvd.raster import interpolate, rasterize

    ck = REPO / "runs" / "glvd" / "model.pt"
    if not ck.is_file():
        ck = REPO / "vendor" / "glvd" / "glvd" / "weights" / "glvd_face.pt"
    if not ck.is_file():
        from glvd.checkpoint import write_untrained_checkpoint

        ck = write_untrained_checkpoint(Path(tempfile.mkdtemp()) / "untrained.pt")
    photo = data.astronaut()
    rec = glvd.Reconstructor(checkpoint=str(ck), device="cpu")
    res = rec.reconstruct([photo], steps=10)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        png = glvd.texture.bake_texture(res, [photo], Path(tmp) / "tex.png", size=size)
        dt = time.perf_counter() - t0
        tex = np.asarray(Image.open(png).convert("RGB"))
    print(f"figure: checkpoint {ck} (trained={res.trained}); bake_texture {dt:.2f} s (cold, 1 view)")
    panel = 256
    # the photo, cropped around the face's 2D landmarks; the same crop as a camera for the re-render
    lm = res.landmarks2d[0]
    c = lm.mean(0)
    half = 1.6 * float(np.ptp(lm, 0).max()) / 2
    x0, y0 = int(max(0, c[0] - half)), int(max(0, c[1] - half))
    side = int(2 * half)
    crop = photo[y0:y0 + side, x0:x0 + side]
    s = panel / side
    K_crop = np.array([[s, 0, -s * x0], [0, s, -s * y0], [0, 0, 1]], np.float32) @ res.cameras["K"][0]
    tiles = [np.asarray(Image.fromarray(crop).resize((panel, panel), Image.LANCZOS)),
             np.asarray(Image.fromarray(tex).resize((panel, panel), Image.LANCZOS))]
    # renders of the textured mesh: per-pixel UVs from the rasteriser, the texture looked up bilinearly
    pairs, inv = np.unique(np.stack([res.quads.reshape(-1), res.quad_uvs.reshape(-1)], 1), axis=0,
                           return_inverse=True)
    corners = inv.reshape(-1, 4)
    tris = torch.from_numpy(np.concatenate([corners[:, [0, 1, 2]], corners[:, [0, 2, 3]]]))
    verts = torch.from_numpy(res.final[pairs[:, 0]])[None]
    uvs = torch.from_numpy(res.uvs[pairs[:, 1]])[None]
    centre = res.final.mean(0)
    side_cam = camera(40.0, size=panel, f=panel * 2.6, dist=0.6)
    views = [(K_crop, res.cameras["R"][0], res.cameras["t"][0]),
             (side_cam["K"], side_cam["R"], side_cam["t"] - side_cam["R"] @ centre)]
    S = tex.shape[0]
    for i, (K, R, t) in enumerate(views):
        fr = rasterize(verts, tris, torch.from_numpy(np.asarray(K, np.float32))[None], panel,
                       torch.from_numpy(np.asarray(R, np.float32))[None],
                       torch.from_numpy(np.asarray(t, np.float32))[None], cull_backfaces=False)
        uv = interpolate(fr, tris, uvs)[0].numpy()
        col = cv2.remap(tex, (uv[..., 0] * S - 0.5).astype(np.float32),
                        ((1 - uv[..., 1]) * S - 0.5).astype(np.float32), cv2.INTER_LINEAR)
        mask = fr.mask[0].numpy()
        if i == 0:  # through the photo's own camera the textured mesh must give the photo back
            err = np.abs(col.astype(np.float32) - tiles[0].astype(np.float32)).mean(-1)
            inner = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
            print(f"re-render through the photo's camera vs the photo: MAE {err[inner].mean():.1f}/255 "
                  f"over {inner.sum()} face pixels (includes the photo's own downscale and occluded bits)")
            tiles.append(np.where(mask[..., None], col, tiles[0]).astype(np.uint8))
        else:
            tiles.append(np.where(mask[..., None], col, 255).astype(np.uint8))
    Image.fromarray(np.concatenate(tiles, 1)).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB): photo | texture | re-rendered over the photo | 40 deg")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--figure", type=Path, default=None, help="also write the docs picture here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    bench(a.size, a.views, a.repeats)
    if a.figure:
        figure(a.figure, a.size)


if __name__ == "__main__":
    main()
