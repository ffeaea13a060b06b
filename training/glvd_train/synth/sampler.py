"""Random synthetic face crops with their cameras and ground-truth face vertices.

One call of :meth:`SyntheticFaces.sample` draws B heads (identity, sparse
expression, optional smooth deformation outside the PCA space, albedo), V
views of each (pose, camera, lights, background), and renders every view
straight into its detector-like square crop: the full-image camera projects the
68 landmarks, the crop box (margin 1.6, jittered) is folded into the
intrinsics, and the rasteriser runs at S x S only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from glvd.cameras import FRONTAL_R, euler_to_matrix
from glvd.crop import crop_box_from_points, crop_intrinsics
from glvd.raster import interpolate, project, rasterize, transform

from .augment import AugmentConfig, augment
from .backgrounds import Backgrounds
from .morphable import HeadModel, sample_deformation, sample_expression, sample_identity
from .shading import HeadAppearance, Lights, shade, shade_vertices, vertex_normals


@dataclass
class SynthConfig:
    """Everything random about the synthetic data, with defaults for training.

    Angles in degrees, lengths in metres.
    """

    image_size: int = 256
    # shape
    identity_std: float = 1.0
    expression_neutral_prob: float = 0.2
    expression_max_active: int = 5
    deform_prob: float = 0.5
    deform_amplitude: float = 0.004
    deform_max_bumps: int = 4
    deform_sigma: tuple[float, float] = (0.015, 0.04)
    deform_wave: float = 0.0015
    # pose and camera
    yaw_max: float = 75.0
    pitch_max: float = 30.0
    roll_max: float = 15.0
    distance: tuple[float, float] = (0.35, 1.6)  # head centre to camera
    fov: tuple[float, float] = (25.0, 75.0)  # of the (virtual) full photo
    full_image_size: int = 1024
    off_centre: float = 0.25  # head centre offset in the photo, fraction of its size
    crop_margin: float = 1.6
    crop_scale_jitter: float = 0.1
    crop_shift_jitter: float = 0.05
    # appearance
    lights_max: int = 2
    ambient: tuple[float, float] = (0.1, 0.6)
    light_intensity: tuple[float, float] = (0.4, 1.4)
    specular: tuple[float, float] = (0.01, 0.12)
    exposure: tuple[float, float] = (0.8, 1.3)
    natural_backgrounds: bool = True
    augment: bool = True
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    antialias_edges: bool = True

    @classmethod
    def out_of_pca(cls, **kw) -> SynthConfig:
        """A held-out set whose shapes all carry larger deformations outside the PCA space."""
        base = dict(deform_prob=1.0, deform_amplitude=0.009, deform_max_bumps=6, deform_wave=0.003)
        base.update(kw)
        return cls(**base)

    def replace(self, **kw) -> SynthConfig:
        return replace(self, **kw)

    def at_difficulty(self, d: float) -> SynthConfig:
        """This config with its nuisance variation scaled by ``d`` in [0, 1] (training curriculum).

        ``d = 1`` is the config itself; ``d = 0`` keeps every shape and appearance draw but
        shows the face almost frontal (+-3 deg), under one light of middling strength, with a
        neutral expression, no out-of-PCA field, an exact crop and no photo degradation.
        A fresh encoder starts reading identity at ``d = 0`` within 2,400 iterations on this
        CPU and not at all at ``d = 1`` (docs/learnability.md), so training starts easy and widens.
        """
        d = min(max(float(d), 0.0), 1.0)
        if d >= 1.0:
            return self
        lerp = lambda easy, full: easy + d * (full - easy)  # noqa: E731
        span = lambda easy, full: (lerp(easy, full[0]), lerp(easy, full[1]))  # noqa: E731
        a = self.augment_config
        aug = replace(a, brightness=d * a.brightness, contrast=d * a.contrast, saturation=d * a.saturation,
                      white_balance=d * a.white_balance, gamma=span(1.0, a.gamma), blur_prob=d * a.blur_prob,
                      lowres_prob=d * a.lowres_prob, noise_prob=d * a.noise_prob, jpeg_prob=d * a.jpeg_prob)
        return replace(
            self,
            expression_neutral_prob=lerp(1.0, self.expression_neutral_prob),
            deform_prob=d * self.deform_prob,
            yaw_max=lerp(3.0, self.yaw_max), pitch_max=lerp(3.0, self.pitch_max), roll_max=d * self.roll_max,
            crop_scale_jitter=d * self.crop_scale_jitter, crop_shift_jitter=d * self.crop_shift_jitter,
            lights_max=self.lights_max if d >= 0.5 else 1,
            ambient=span(0.4, self.ambient), light_intensity=span(0.9, self.light_intensity),
            exposure=span(1.0, self.exposure), augment_config=aug,
        )


def box3(x: torch.Tensor) -> torch.Tensor:
    """Mean over each pixel's 3x3 neighbourhood inside the image, ``(n, C, H, W)``.

    The same as ``avg_pool2d(x, 3, 1, 1, count_include_pad=False)`` as two separable sums of shifted
    views: a third of its time on the CPU, where the pooling kernel is slow for 3-channel images.
    """
    def sum3(t: torch.Tensor) -> torch.Tensor:  # 3x3 sums, zero outside the image
        p = F.pad(t, (1, 1, 1, 1))
        s = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
        return s[..., :-2] + s[..., 1:-1] + s[..., 2:]

    return sum3(x) / sum3(x.new_ones(1, 1, *x.shape[-2:]))  # divided by the pixels inside


def project_points(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``points (B, P, 3)`` head frame seen by every view's camera ``K, R (B, V, 3, 3)``, ``t (B, V, 3)`` ->
    ``(B, V, P, 2)`` pixels."""
    B, V = K.shape[:2]
    uv = project(transform(points.repeat_interleave(V, 0), R.reshape(B * V, 3, 3), t.reshape(B * V, 3)),
                 K.reshape(B * V, 3, 3))
    return uv.reshape(B, V, points.shape[1], 2)


class SyntheticFaces:
    """Generator of rendered, cropped, augmented face views with ground truth.

    Same seed and same sequence of calls => the same samples.
    """

    def __init__(
        self,
        kit_path: str | Path | None = None,
        config: SynthConfig | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config or SynthConfig()
        self.device = torch.device(device)
        self.head = HeadModel.load(kit_path, device=self.device)
        self.appearance = HeadAppearance(self.head, device=self.device)
        self.backgrounds = Backgrounds(self.config.image_size, self.config.natural_backgrounds, self.device)
        self.gen = torch.Generator().manual_seed(int(seed))
        fc = self.head.face_count
        self._anchors = self.head.mean[:fc].cpu()
        self._frontal = FRONTAL_R.to(self.device)

    @property
    def face_count(self) -> int:
        return self.head.face_count

    # ------------------------------------------------------------------ shapes
    def _shapes(self, batch: int) -> dict[str, torch.Tensor]:
        c, g, h = self.config, self.gen, self.head
        ident = sample_identity(batch, h.num_identity, c.identity_std, g)
        expr = sample_expression(batch, h.expression_names, g, c.expression_neutral_prob, c.expression_max_active)
        off, deformed = sample_deformation(
            h.mean,
            self._anchors,
            batch,
            g,
            c.deform_amplitude,
            c.deform_max_bumps,
            c.deform_sigma,
            c.deform_prob,
            c.deform_wave,
        )
        verts = h.vertices(ident.to(self.device), expr.to(self.device), off)
        return {
            "head_vertices": verts,
            "identity": ident.to(self.device),
            "expression": expr.to(self.device),
            "deformed": deformed.to(self.device),
        }

    def sample_shapes(self, batch: int) -> dict[str, torch.Tensor]:
        """Shapes only, no rendering.

        Returns:
            ``vertices (B, N_face, 3)`` face-area vertices (head frame, m), ``identity (B, I)``,
            ``expression (B, E)``, ``deformed (B,)`` bool (an out-of-PCA field was added).
        """
        s = self._shapes(batch)
        return {
            "vertices": s["head_vertices"][:, : self.face_count].contiguous(),
            "identity": s["identity"],
            "expression": s["expression"],
            "deformed": s["deformed"],
        }

    # ------------------------------------------------------------------ cameras
    def _cameras(self, verts: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random crop cameras for every view of every head.

        Args:
            verts: ``(B, N, 3)`` head vertices, or ``(B, 68, 3)`` just their 68 landmarks.
        Returns:
            ``K (B, V, 3, 3)`` crop intrinsics, ``R (B, V, 3, 3)``, ``t (B, V, 3)``.
        """
        c, g = self.config, self.gen
        B, V = verts.shape[0], views
        u = lambda lo, hi: lo + (hi - lo) * torch.rand(B, V, generator=g)  # noqa: E731
        yaw = torch.deg2rad(u(-c.yaw_max, c.yaw_max))
        pitch = torch.deg2rad(u(-c.pitch_max, c.pitch_max))
        roll = torch.deg2rad(u(-c.roll_max, c.roll_max))
        R = FRONTAL_R @ euler_to_matrix(yaw, pitch, roll)
        W = float(c.full_image_size)
        fov = torch.deg2rad(u(*c.fov))
        f = 0.5 * W / torch.tan(0.5 * fov)
        # log-uniform distance; the head centre anywhere near the middle of the photo
        d = torch.exp(u(math.log(c.distance[0]), math.log(c.distance[1])))
        ox = u(-c.off_centre, c.off_centre) * W
        oy = u(-c.off_centre, c.off_centre) * W
        t = torch.stack([ox * d / f, oy * d / f, d], -1)
        K = torch.zeros(B, V, 3, 3)
        K[..., 0, 0] = f
        K[..., 1, 1] = f
        K[..., 0, 2] = 0.5 * W
        K[..., 1, 2] = 0.5 * W
        K[..., 2, 2] = 1.0
        lm = (verts if verts.shape[1] == 68 else verts[:, self.head.landmarks68]).cpu()  # (B, 68, 3)
        lm_cam = torch.einsum("bvij,bnj->bvni", R, lm) + t[:, :, None]
        uv = (lm_cam[..., :2] / lm_cam[..., 2:3]) * f[..., None, None] + 0.5 * W
        cx, cy, side = crop_box_from_points(uv, c.crop_margin)
        # jitter as a face detector would: scale and shift of the box
        side = side * u(1 - c.crop_scale_jitter, 1 + c.crop_scale_jitter)
        cx = cx + side * u(-c.crop_shift_jitter, c.crop_shift_jitter)
        cy = cy + side * u(-c.crop_shift_jitter, c.crop_shift_jitter)
        Kc = crop_intrinsics(K, cx, cy, side, c.image_size)
        dev = self.device
        return Kc.to(dev), R.to(dev), t.to(dev)

    def sample_landmarks(self, batch: int, views: int = 1) -> dict[str, torch.Tensor]:
        """The 68 landmarks' projections of ``batch`` random heads, as :meth:`sample` draws the shapes and
        cameras (out-of-PCA fields evaluated at the landmarks), without rendering anything.

        Returns ``landmarks2d (B, V, 68, 2)`` crop pixels, ``K, R, t`` crop cameras, ``expression (B, E)``.
        """
        c, g, h = self.config, self.gen, self.head
        ident = sample_identity(batch, h.num_identity, c.identity_std, g)
        expr = sample_expression(batch, h.expression_names, g, c.expression_neutral_prob, c.expression_max_active)
        lm_ids = h.landmarks68
        rest = h.mean[lm_ids]
        off, _ = sample_deformation(rest, self._anchors, batch, g, c.deform_amplitude, c.deform_max_bumps,
                                    c.deform_sigma, c.deform_prob, c.deform_wave)
        basis = h.basis.view(-1, h.num_vertices, 3)[:, lm_ids]  # (I + E, 68, 3)
        lm3d = rest + torch.einsum("bk,knc->bnc", torch.cat([ident, expr], 1).to(rest.device), basis) + off
        K, R, t = self._cameras(lm3d, views)
        return {"landmarks2d": project_points(lm3d, K, R, t), "K": K, "R": R, "t": t, "expression": expr}

    # ------------------------------------------------------------------ lights
    def _lights(self, n: int) -> Lights:
        c, g = self.config, self.gen
        L = c.lights_max
        u = lambda *s, lo=0.0, hi=1.0: lo + (hi - lo) * torch.rand(*s, generator=g)  # noqa: E731
        # directions from the surface toward the lights: in front of the face, more often from above
        d = torch.randn(n, L, 3, generator=g)
        d[..., 2] = -d[..., 2].abs() - 0.3
        d[..., 1] = d[..., 1] - 0.4
        d = F.normalize(d, dim=-1)
        temp = u(n, L, 1, lo=-1.0, hi=1.0)  # warm (+) to cool (-) light
        tint = torch.cat([1 + 0.15 * temp, torch.ones_like(temp), 1 - 0.15 * temp], -1)
        inten = u(n, L, 1, lo=c.light_intensity[0], hi=c.light_intensity[1])
        on = torch.ones(n, L, 1)
        on[:, 1:] = (torch.rand(n, L - 1, 1, generator=g) < 0.5).float() * u(n, L - 1, 1, lo=0.2, hi=0.7)
        colors = tint * inten * on
        amb = u(n, 1, lo=c.ambient[0], hi=c.ambient[1]) * (1 + 0.1 * (2 * torch.rand(n, 3, generator=g) - 1))
        spec = u(n, lo=c.specular[0], hi=c.specular[1])
        shin = u(n, lo=8.0, hi=60.0)
        dev = self.device
        return Lights(amb.to(dev), d.to(dev), colors.to(dev), spec.to(dev), shin.to(dev))

    # ------------------------------------------------------------------ render
    def render(
        self,
        head_vertices: torch.Tensor,
        albedo: torch.Tensor,
        K: torch.Tensor,
        R: torch.Tensor,
        t: torch.Tensor,
        lights: Lights,
        spec_mask: torch.Tensor | None = None,
        per_pixel: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Render heads into crops (linear RGB, no background).

        Args:
            head_vertices: ``(B, N, 3)`` whole-head vertices; albedo ``(B, N, 3)``.
            K, R, t: ``(B, V, 3, 3)``, ``(B, V, 3, 3)``, ``(B, V, 3)``.
            lights: batch ``B*V`` (view-major inside each head).
            spec_mask: optional ``(B, N)``.
            per_pixel: shade every pixel (Phong) instead of every vertex (Gouraud, faster).
        Returns:
            ``rgb (B*V, 3, S, S)`` linear, ``mask (B*V, S, S)`` bool.
        """
        B, V = K.shape[:2]
        S = self.config.image_size
        tris = self.head.tris
        normals = vertex_normals(head_vertices, tris)
        rep = lambda x: x.repeat_interleave(V, 0)  # noqa: E731
        Rf, tf, Kf = R.reshape(B * V, 3, 3), t.reshape(B * V, 3), K.reshape(B * V, 3, 3)
        vc = transform(rep(head_vertices), Rf, tf)
        nc = torch.einsum("bij,bnj->bni", Rf, rep(normals))
        frags = rasterize(vc, tris, Kf, S)
        sm = rep(spec_mask) if spec_mask is not None else None
        if per_pixel:
            rgb = shade(frags, tris, rep(albedo), nc, lights, verts_cam=vc, spec_mask=sm)
        else:
            col = shade_vertices(rep(albedo), nc, lights, verts_cam=vc, spec_mask=sm)
            rgb = interpolate(frags, tris, col).permute(0, 3, 1, 2)
        return rgb, frags.mask

    def sample(self, batch: int, views: int = 1) -> dict[str, torch.Tensor]:
        """Draw ``batch`` heads seen from ``views`` views each.

        Returns a dict of float32 tensors (on ``device``):
            images ``(B, V, 3, S, S)`` sRGB in [0, 1]; K ``(B, V, 3, 3)``, R ``(B, V, 3, 3)``,
            t ``(B, V, 3)`` crop cameras; vertices ``(B, N_face, 3)`` head frame (m);
            identity ``(B, I)``; expression ``(B, E)``; landmarks2d ``(B, V, 68, 2)`` crop pixels;
            masks ``(B, V, S, S)`` head coverage; deformed ``(B,)`` bool.
        """
        c = self.config
        B, V, S = batch, views, c.image_size
        shapes = self._shapes(B)
        verts = shapes["head_vertices"]
        K, R, t = self._cameras(verts, V)
        albedo, hair = self.appearance.sample(B, self.gen)
        lights = self._lights(B * V)
        with torch.no_grad():
            rgb, mask = self.render(verts, albedo, K, R, t, lights, self.appearance.spec_mask(hair))
        exposure = (
            c.exposure[0] + (c.exposure[1] - c.exposure[0]) * torch.rand(B * V, 1, 1, 1, generator=self.gen)
        ).to(self.device)
        face = (rgb * exposure).clamp(0, 1).sqrt()  # linear -> display (gamma 2; augmentation jitters gamma)
        bg = self.backgrounds.sample(B * V, self.gen)
        alpha = mask[:, None].float()
        if c.antialias_edges:
            # soften the 1-pixel silhouette (premultiplied 3x3 box) where coverage is partial
            ab = box3(alpha)
            fb = box3(face * alpha)
            edge = (ab > 0) & (ab < 1)
            img = torch.where(edge, fb + (1 - ab) * bg, face * alpha + (1 - alpha) * bg)
        else:
            img = face * alpha + (1 - alpha) * bg
        if c.augment:
            img = augment(img, self.gen, c.augment_config)
        lm_uv = project_points(verts[:, self.head.landmarks68], K, R, t)
        return {
            "images": img.reshape(B, V, 3, S, S).float().contiguous(),
            "K": K.float(),
            "R": R.float(),
            "t": t.float(),
            "vertices": verts[:, : self.face_count].contiguous(),
            "identity": shapes["identity"],
            "expression": shapes["expression"],
            "landmarks2d": lm_uv,
            "masks": mask.reshape(B, V, S, S),
            "deformed": shapes["deformed"],
        }
