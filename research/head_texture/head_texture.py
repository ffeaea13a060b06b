"""How good is the baked texture where the photos did not look? Leave one view out on renders of a known albedo.

Each face is a random identity of the kit (neutral expression) with a random albedo (glvd_train's
``HeadAppearance``: skin tone, lips, brows, hair, clothes), rendered under a pure ambient light, so each
pixel shows the albedo itself (display gamma 2) on a random background, from three sides (yaw -35, 0, +35
degrees, 512 px crops). GLVD reconstructs the face from all three photos (cameras estimated from the photos,
as for a user); then, for each view in turn, the texture is baked from the other two (as the whole head bakes
its face tile: ``glvd.head_texture.face_bake_options``) and the result is re-rendered with it into the
left-out view's (estimated) camera; "diffusion fill only (before)" is the bake as it was before the head
(no skin tone, no silhouette or neck/ear colour checks, the face alone as occluder). The error is the mean
absolute difference (0-255 sRGB) between that re-render and the left-out photo, over the pixels where both
show the face area; "in sample" bakes all three views (what the photos themselves give), "flat tone" paints
the face in the bake's skin tone only (what the fill alone would give). The hole share is
:func:`glvd.texture.hole_share` of the two-view bakes: the face area's texels no photo saw that came out
near-black or within 30 of a photo's background colour (the median of its border pixels) where the true
albedo is neither (dark hair or clothes that the fill copies from the other side are right).

Usage: .venv/bin/python -m research.head_texture.head_texture [--faces 8] [--out research/head_texture/head_texture.md]
"""

from __future__ import annotations

import argparse
import contextlib
import math

import numpy as np
import torch

import glvd.texture
import glvd.texture_fill
from glvd.api import Reconstructor
from glvd.cameras import FRONTAL_R, euler_to_matrix
from glvd.crop import crop_box_from_points, crop_intrinsics
from glvd.raster import rasterize
from glvd.head import build_head
from glvd.head_texture import face_bake_options
from glvd.texture import _sample, bake, hole_share, symmetry_map
from glvd.uv_layout import uv_raster
from glvd_train.synth import SynthConfig, SyntheticFaces
from glvd_train.synth.shading import Lights
from research.common import finish, generated_by, start

SEED = 24_024_024  # disjoint from training, validation and the other experiments
YAWS = (-35.0, 0.0, 35.0)
SIZE = 512
TEXTURE = 1024


def render_views(sf: SyntheticFaces, gen: torch.Generator):
    """One random face under ambient light from the three yaws: images uint8 (3, S, S, 3), the face-area mask
    per view, and the face area's true per-vertex colours (0-255, display gamma)."""
    shapes = sf._shapes(1)
    head = shapes["head_vertices"]
    albedo, _hair = sf.appearance.sample(1, gen)
    W, fov, d = 1024.0, math.radians(35.0), 0.6
    f = 0.5 * W / math.tan(0.5 * fov)
    Ks, Rs, ts = [], [], []
    for yaw in YAWS:
        R = FRONTAL_R @ euler_to_matrix(torch.tensor(math.radians(yaw)), torch.tensor(0.0), torch.tensor(0.0))
        t = torch.tensor([0.0, 0.0, d])
        lm = head[0, sf.head.landmarks68] @ R.T + t
        uv = lm[:, :2] / lm[:, 2:3] * f + 0.5 * W
        cx, cy, side = crop_box_from_points(uv[None], 2.2)  # the whole face area, ears and neck in the photo
        K = torch.tensor([[f, 0, 0.5 * W], [0, f, 0.5 * W], [0, 0, 1.0]])
        Ks.append(crop_intrinsics(K[None], cx, cy, side, SIZE)[0])
        Rs.append(R.float())
        ts.append(t)
    K, R, t = torch.stack(Ks)[None], torch.stack(Rs)[None], torch.stack(ts)[None]
    n = len(YAWS)
    lights = Lights(torch.ones(n, 3), torch.zeros(n, 1, 3) + torch.tensor([0.0, 0.0, -1.0]), torch.zeros(n, 1, 3),
                    torch.zeros(n), torch.ones(n))
    cfg = sf.config
    with torch.no_grad():
        rgb, mask = sf.render(head, albedo, K, R, t, lights)
        bg = sf.backgrounds.sample(n, gen)
    img = rgb.clamp(0, 1).sqrt() * mask[:, None] + bg * (~mask[:, None])
    fr = rasterize(head.expand(n, -1, -1), sf.head.tris, K[0], cfg.image_size, R[0], t[0])
    face_mask = torch.isin(fr.tri_id, torch.nonzero(sf.head.tri_material == sf.head.material_id("M_Face"))[:, 0])
    images = (img.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    face_albedo = albedo[0, : sf.face_count].clamp(0, 1).sqrt().numpy() * 255  # as the photos show it
    return images, face_mask.numpy(), face_albedo


def rerender(verts: np.ndarray, quads: np.ndarray, uvs: np.ndarray, quad_uvs: np.ndarray, tex: np.ndarray,
             K: np.ndarray, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The textured face seen by one camera: ``(S, S, 3)`` float32 and its mask."""
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    tri_uv = np.concatenate([quad_uvs[:, [0, 1, 2]], quad_uvs[:, [0, 2, 3]]])
    fr = rasterize(torch.from_numpy(verts)[None], torch.from_numpy(tris), torch.from_numpy(K)[None], SIZE,
                   torch.from_numpy(R)[None], torch.from_numpy(t)[None])
    ids = fr.tri_id[0].reshape(-1)
    pix = fr.pix.numpy()
    corner_uv = uvs[tri_uv[ids[pix].numpy()]]  # (P, 3, 2)
    uv = (fr.bary_p.numpy()[..., None] * corner_uv).sum(1)
    S = tex.shape[0]
    col = _sample(tex.astype(np.float32), (uv[:, 0] * S - 0.5).astype(np.float32),
                  ((1 - uv[:, 1]) * S - 0.5).astype(np.float32))
    out = np.zeros((SIZE * SIZE, 3), np.float32)
    out[pix] = col
    m = np.zeros(SIZE * SIZE, bool)
    m[pix] = True
    return out.reshape(SIZE, SIZE, 3), m.reshape(SIZE, SIZE)


@contextlib.contextmanager
def diffusion_only():
    """The bake as it was before the head: the skin tone's fade and likeness and the outline's background check
    switched off."""
    old = glvd.texture.TONE_FADE_FRAC, glvd.texture_fill.TONE_SIGMA, glvd.texture.BACKGROUND_SIGMA
    glvd.texture.TONE_FADE_FRAC, glvd.texture_fill.TONE_SIGMA, glvd.texture.BACKGROUND_SIGMA = 1e9, 1e9, 1e-9
    try:
        yield
    finally:
        glvd.texture.TONE_FADE_FRAC, glvd.texture_fill.TONE_SIGMA, glvd.texture.BACKGROUND_SIGMA = old


def border_colour(img: np.ndarray) -> np.ndarray:
    b = np.concatenate([img[:8].reshape(-1, 3), img[-8:].reshape(-1, 3), img[:, :8].reshape(-1, 3),
                        img[:, -8:].reshape(-1, 3)])
    return np.median(b, 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=8)
    p.add_argument("--save-views", default=None, help="also write the first face's three photos here (PNG)")
    a, t0 = start(p, argv)
    cfg = SynthConfig(image_size=SIZE, augment=False, expression_neutral_prob=1.0, deform_prob=0.0)
    sf = SyntheticFaces(a.kit, cfg, seed=SEED)
    gen = torch.Generator().manual_seed(SEED)
    rec = Reconstructor(device="cpu")
    tpl = rec.template
    sym = symmetry_map(tpl.vertices)
    ras = uv_raster(tpl.quads, tpl.uvs, tpl.quad_uvs, TEXTURE, sym)
    chart = ras.chart
    rows, shares, old_shares, unseen, fill_err, old_fill_err = [], [], [], [], [], []
    for i in range(a.faces):
        images, face_mask, albedo = render_views(sf, gen)
        # the true texture: the kit's face area and the template share their vertex order
        truth = np.zeros((TEXTURE * TEXTURE, 3), np.float32)
        for ch in range(3):
            truth[ras.texel, ch] = ras.interp(np.ascontiguousarray(albedo[:, ch]))
        truth = truth.reshape(TEXTURE, TEXTURE, 3)
        if i == 0 and a.save_views:
            from pathlib import Path

            from PIL import Image

            Path(a.save_views).mkdir(parents=True, exist_ok=True)
            for k, im in enumerate(images):
                Image.fromarray(im).save(Path(a.save_views) / f"synthetic_view{k + 1}.png")
        res = rec.reconstruct(list(images))
        cams = res.cameras
        err = {"left out": [], "left out, diffusion fill only (before)": [], "in sample": [], "flat tone": []}
        opts = face_bake_options(res, build_head(res))  # the face tile as the whole head bakes it
        full = bake(res.final, res.quads, res.uvs, res.quad_uvs, list(images), cams, TEXTURE, **opts)
        for k in range(len(YAWS)):
            keep = [j for j in range(len(YAWS)) if j != k]
            sub = {n: v[keep] for n, v in cams.items()}
            photos = [images[j] for j in keep]
            b = bake(res.final, res.quads, res.uvs, res.quad_uvs, photos, sub, TEXTURE, **opts)
            bgs = [border_colour(im) for im in photos]
            share, n = hole_share(b.texture, b.coverage, chart, b.tone, bgs, truth)
            shares.append(share * n)
            unseen.append(n)
            with diffusion_only():
                old = bake(res.final, res.quads, res.uvs, res.quad_uvs, photos, sub, TEXTURE, sym)
            share, _ = hole_share(old.texture, old.coverage, chart, b.tone, bgs, truth)
            old_shares.append(share * n)
            unseen_px = chart & (b.coverage <= 0)
            fill_err.append(float(np.abs(b.texture[unseen_px] - truth[unseen_px]).mean()))
            old_fill_err.append(float(np.abs(old.texture[unseen_px] - truth[unseen_px]).mean()))
            flat = np.tile(b.tone.astype(np.uint8), (TEXTURE, TEXTURE, 1))
            for label, tex in (("left out", b.texture), ("left out, diffusion fill only (before)", old.texture),
                               ("in sample", full.texture), ("flat tone", flat)):
                img, m = rerender(res.final, res.quads, res.uvs, res.quad_uvs, tex, cams["K"][k], cams["R"][k],
                                  cams["t"][k])
                both = m & face_mask[k]
                err[label].append(float(np.abs(img[both] - images[k][both].astype(np.float32)).mean()))
        rows.append({k: float(np.mean(v)) for k, v in err.items()})
        print(f"face {i + 1}/{a.faces}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[-1].items()), flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    lines = ["# Texture where the photos did not look: leave one view out", "",
             generated_by("research.head_texture.head_texture", argv), "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"{a.faces} faces (seed {SEED}), 3 views each, texture {TEXTURE} px; cameras estimated from the photos.",
             "", "| texture re-rendered into the left-out view | mean abs. error (0-255) |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in mean.items()]
    total = int(np.sum(unseen))
    lines += ["", f"Hole share of the two-view bakes: {100 * np.sum(shares) / max(total, 1):.2f}% of {total} "
              "unseen face-area texels near-black or background-coloured (target <= 1%); with the diffusion "
              f"fill only (the bake before the skin-tone fill): {100 * np.sum(old_shares) / max(total, 1):.2f}%.", "",
              f"The unseen texels against the true albedo: mean abs. error {np.mean(fill_err):.1f} (diffusion fill "
              f"only: {np.mean(old_fill_err):.1f}).", "",
              "Per face: " + "; ".join(f"{r['left out']:.1f}" for r in rows) + " (left out)."]
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
