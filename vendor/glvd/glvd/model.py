"""GLVD: keypoint-guided learned vertex descent.

Every step first refines K keypoints (template surface points) from their
pixel-aligned features in every view, then moves every vertex with a shared
MLP that sees (a) the vertex's own pooled pixel-aligned features, (b) its
offsets to its M nearest keypoints (the guidance), (c) a learned per-vertex
embedding. Per-vertex cost is O(N): nothing is computed for vertex pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .camera_head import CameraHead
from .camera_refine import CameraRefiner
from .cameras import Cameras
from .encoder import FeatureMaps, ImageEncoder
from .errors import Cancelled
from .expression import ExpressionHead
from .facenet import CHIP_MAP_CHANNELS, CHIP_SIZE, DESCRIPTOR_DIM
from .guidance import LANDMARK_FEATURES, Guidance
from .pooled_sampling import pooled_samples
from .sampling import sample_maps, sample_maps_channels_first
from .topology import Template, nearest_keypoints, quad_corner_operator, vertex_normals

#: metres per unit of network output (displacements are predicted in cm)
OUT_SCALE = 0.01
#: offsets are fed to MLPs in decimetres so that they are of order 1
IN_SCALE = 10.0


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class ModelConfig:
    # sized for CPU training in one session: a 128 px crop and a slim encoder (~0.14 GFLOP per view)
    image_size: int = 128
    encoder_widths: tuple[int, ...] = (24, 32, 64, 96, 128)
    kp_feat: int = 64  # per scale, for keypoints
    kp_hidden: int = 256
    kp_embed: int = 32
    vert_hidden: int = 64
    neighbours: int = 8  # M nearest keypoints per vertex
    steps: int = 10
    guidance: bool = True  # False = the plain LVD ablation (no keypoint module)
    # the vertex field also sees how far each vertex already is from its template position, so
    # it can stop there (without it, repeated steps kept moving the same way: drift after step 1-4)
    offset_input: bool = True
    # a camera refiner (glvd.camera_refine) reads where the keypoints are and corrects each view's camera
    camera_refiner: bool = False
    # the frozen real-face networks' evidence (issue: the shape follows the person): the identity code
    # (glvd.identity, the mean of the views' 128-D descriptors; 0 = none) enters both fields, and each of
    # the 68 landmark keypoints sees, per view, its offset to where the detector marks that landmark
    identity_dim: int = 0
    landmark_guidance: bool = False
    # what the landmark offsets (metres) are multiplied by: IN_SCALE (decimetres) made a pixel of offset an
    # input of ~0.02, too small for the fields to learn to use (session 16); 1000: millimetres
    landmark_input_scale: float = IN_SCALE
    # > 0: the descent starts from, and measures its offsets against, the face the identity code predicts
    # (a linear field of this rank over the template's vertices, fitted on renders) instead of the template
    identity_prior_rank: int = 0
    # the descent lands on the neutral face and glvd.expression reads each view's ARKit weights from its
    # landmarks (trained apart: glvd-train expression)
    expression_head: bool = False
    # False: the fields read no image features (only the identity code, the landmarks and the cameras): the
    # render-trained encoder's features follow each photo's light and pose on real photos, not the person
    # (research/photo_consistency_sources); the camera head and its refiner still read the image
    field_image: bool = True
    # both fields also read the identity backbone's pixel features (Guidance.chip_maps: dlib's ResNet trained on
    # real faces, its stage-3 maps on each view's chip) where each point lands on the chip
    # (research/pixel_identity: more identity than the descriptor on renders, consistent on real photos)
    chip_features: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["encoder_widths"] = list(self.encoder_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["encoder_widths"] = tuple(d["encoder_widths"])
        d.setdefault("offset_input", False)  # checkpoints from before the option had no such input
        d.setdefault("camera_refiner", False)
        d.setdefault("identity_dim", 0)
        d.setdefault("landmark_guidance", False)
        d.setdefault("landmark_input_scale", IN_SCALE)
        d.setdefault("identity_prior_rank", 0)
        d.setdefault("expression_head", False)
        d.setdefault("field_image", True)
        d.setdefault("chip_features", False)
        return cls(**d)


def fuse_maps(maps: list[torch.Tensor], combine: str = "sum") -> torch.Tensor:
    """Upsample multi-scale maps to the finest one and sum (or concatenate) them.

    One bilinear lookup per point then reads all scales at once (sampling is the
    hot loop of every step).
    """
    size = maps[0].shape[-2:]
    up = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
    return torch.cat(up, 1) if combine == "cat" else torch.stack(up, 0).sum(0)


def view_weights(points: torch.Tensor, normals: torch.Tensor | None, cams: Cameras) -> torch.Tensor | None:
    """Soft visibility: how squarely each point faces each camera, normalised over views.

    Args:
        points, normals: ``(B, P, 3)``; normals may be None for a single view.
    Returns:
        ``(B, V, P, 1)`` weights summing to 1 over V, or None for a single view, where
        the softmax is exactly 1 (callers then skip the weighting: a third of a step's time).
    """
    if cams.views == 1:
        return None
    to_cam = F.normalize(cams.centres()[:, :, None, :] - points[:, None], dim=-1)
    cos = (to_cam * normals[:, None]).sum(-1, keepdim=True)
    logits = 6.0 * cos
    return torch.softmax(logits, dim=1)


def chip_projection(channels: int) -> nn.Conv2d:
    """The first layer's part for the chip maps (:attr:`ModelConfig.chip_features`), folded into the maps as the
    image projections are; zero-initialised (see KeypointModule.guide)."""
    proj = nn.Conv2d(CHIP_MAP_CHANNELS, channels, 1, bias=False)
    nn.init.zeros_(proj.weight)
    return proj


def project_chip_maps(proj: nn.Conv2d | None, guidance: Guidance | None) -> torch.Tensor | None:
    """``(B*V, C, 8, 8)`` channels-last projected chip maps, or None (no projection, or no maps given: then the
    model runs as if it had none, e.g. a view where no face was found has zero maps)."""
    if proj is None or guidance is None or guidance.chip_maps is None:
        return None
    maps = guidance.chip_maps.flatten(0, 1).to(proj.weight.dtype)
    return proj(maps).contiguous(memory_format=torch.channels_last)


class KeypointModule(nn.Module):
    """Refines K keypoints: per-view prediction in camera frame, rotated to the head, pooled."""

    def __init__(self, cfg: ModelConfig, feat_channels: tuple[int, ...], global_channels: int, num_kp: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, cfg.kp_feat, 1) for c in feat_channels)
        self.embed = nn.Parameter(torch.randn(num_kp, cfg.kp_embed) * 0.1)
        self.global_proj = nn.Linear(global_channels, 64)
        cin = cfg.kp_feat * len(feat_channels) + cfg.kp_embed + 64 + 3 + 1
        self.mlp = nn.Sequential(
            nn.Linear(cin, cfg.kp_hidden), nn.ReLU(inplace=True),
            nn.Linear(cfg.kp_hidden, cfg.kp_hidden), nn.ReLU(inplace=True),
            nn.Linear(cfg.kp_hidden, 3),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        # the guidance inputs add to the first layer's pre-activation; zero-initialised, so a model widened
        # from one without them computes exactly what it did until training uses them
        self.identity_dim, self.landmark_guidance = cfg.identity_dim, cfg.landmark_guidance
        self.landmark_scale = cfg.landmark_input_scale
        guide_in = cfg.identity_dim + (LANDMARK_FEATURES if cfg.landmark_guidance else 0)
        self.guide = nn.Linear(guide_in, cfg.kp_hidden, bias=False) if guide_in else None
        if self.guide is not None:
            nn.init.zeros_(self.guide.weight)
        self.chip_proj = chip_projection(cfg.kp_hidden) if cfg.chip_features else None

    def prepare(self, feats: FeatureMaps, guidance: Guidance | None = None) -> dict:
        maps = [p(m) for p, m in zip(self.proj, feats.maps, strict=False)]
        fused = fuse_maps(maps, combine="cat").contiguous(memory_format=torch.channels_last)  # see VertexModule
        out = {"map": fused, "global": self.global_proj(feats.global_)}
        if self.guide is not None or self.chip_proj is not None:
            out["guidance"] = guidance if guidance is not None else Guidance.none(
                feats.batch, feats.views, feats.global_.device, self.identity_dim or DESCRIPTOR_DIM)
        out["chip"] = project_chip_maps(self.chip_proj, out.get("guidance"))
        return out

    def guidance_features(self, g: Guidance, cams: Cameras, uv: torch.Tensor, depth: torch.Tensor,
                          Kn: int) -> torch.Tensor:
        """``(B, V, K, identity_dim + 3)``: the identity code and, for the 68 landmark keypoints, the offset
        to the detected landmark back-projected to the keypoint's depth (camera frame, dm) and a found flag."""
        B, V = cams.batch, cams.views
        parts = []
        if self.identity_dim:
            parts.append(g.identity[:, None, None, :].expand(B, V, Kn, -1))
        if self.landmark_guidance:
            metric, found = g.landmark_offsets(cams, uv[:, :, :68], depth[:, :, :68])
            lm_feat = torch.cat([metric * self.landmark_scale, found.to(metric.dtype)], -1)
            pad = lm_feat.new_zeros(B, V, Kn - 68, LANDMARK_FEATURES)
            parts.append(torch.cat([lm_feat, pad], 2))
        return torch.cat(parts, -1)

    def forward(self, prep: dict, feats: FeatureMaps, cams: Cameras, kp: torch.Tensor, kp_template: torch.Tensor,
                kp_normals: torch.Tensor) -> torch.Tensor:
        """``kp (B, K, 3)`` -> refined ``(B, K, 3)``."""
        B, V = cams.batch, cams.views
        uv, depth = cams.project(kp)
        sampled = sample_maps(prep["map"], uv, feats.size)  # (B,V,K,C)
        Kn = kp.shape[1]
        # the keypoint's offset from its template position and its depth, seen from this camera
        off = torch.einsum("bvij,bkj->bvki", cams.R, kp - kp_template) * IN_SCALE
        z = (depth - cams.t[:, :, None, 2])[..., None] * IN_SCALE
        g = prep["global"].reshape(B, V, 1, -1).expand(B, V, Kn, -1)
        emb = self.embed[None, None].expand(B, V, Kn, -1)
        h = torch.cat([sampled, emb, g, off, z], -1)
        if self.guide is None and prep.get("chip") is None:
            out = self.mlp(h)
        else:
            pre = self.mlp[0](h)
            if self.guide is not None:
                pre = pre + self.guide(self.guidance_features(prep["guidance"], cams, uv, depth, Kn))
            if prep.get("chip") is not None:
                pre = pre + sample_maps(prep["chip"], prep["guidance"].to_chip(uv), CHIP_SIZE)
            out = self.mlp[1:](pre)
        d_cam = out * OUT_SCALE  # (B,V,K,3) in each camera's frame
        d_head = torch.einsum("bvji,bvkj->bvki", cams.R, d_cam)
        w = view_weights(kp, kp_normals, cams)
        return kp + (d_head[:, 0] if w is None else (w * d_head).sum(1))


class VertexModule(nn.Module):
    """Moves every vertex with one shared MLP; O(N) per step.

    The first layer is linear in the pixel-aligned features, so it is folded into
    the feature maps (``proj``) before sampling: a vertex samples its own
    pre-activations directly instead of a wide feature vector. The MLP runs on
    ``(B, P, H)`` rows, the layout of the pooled samples of inference
    (:mod:`glvd.pooled_sampling`); training transposes grid_sample's ``(B, H, P)`` once.
    """

    def __init__(self, cfg: ModelConfig, feat_channels: tuple[int, ...], global_channels: int, num_vertices: int,
                 neighbour_ids: torch.Tensor) -> None:
        super().__init__()
        H = cfg.vert_hidden
        self.register_buffer("neighbours", neighbour_ids, persistent=True)  # (N, M) keypoint indices
        m = neighbour_ids.shape[1]
        self.proj = nn.ModuleList(nn.Conv2d(c, H, 1, bias=False) for c in feat_channels)
        self.offset_input = cfg.offset_input
        self.rel = nn.Linear(3 * m + 9 + (3 if cfg.offset_input else 0), H)
        self.global_proj = nn.Linear(global_channels, H, bias=False)
        self.vertex_embed = nn.Parameter(torch.zeros(num_vertices, H))  # a learned per-vertex bias/embedding
        self.l2 = nn.Linear(H, H)
        self.l3 = nn.Linear(H, 3)
        nn.init.zeros_(self.l3.weight)
        nn.init.zeros_(self.l3.bias)
        self.guided = cfg.guidance
        # the identity code adds to every view's global term (zero-initialised: see KeypointModule.guide)
        self.identity_proj = nn.Linear(cfg.identity_dim, H, bias=False) if cfg.identity_dim else None
        if self.identity_proj is not None:
            nn.init.zeros_(self.identity_proj.weight)
        self.chip_proj = chip_projection(H) if cfg.chip_features else None

    def prepare(self, feats: FeatureMaps, guidance: Guidance | None = None) -> dict:
        # channels-last: a point's channels lie together (grid_sample ~10% faster, the pooled bag reads rows)
        fused = fuse_maps([p(m) for p, m in zip(self.proj, feats.maps, strict=False)])
        glob = self.global_proj(feats.global_)
        if self.identity_proj is not None:
            g = guidance if guidance is not None else Guidance.none(feats.batch, feats.views, glob.device,
                                                                    self.identity_proj.in_features)
            glob = (glob.reshape(feats.batch, feats.views, -1) + self.identity_proj(g.identity)[:, None]).flatten(0, 1)
        chip = project_chip_maps(self.chip_proj, guidance)
        return {"map": fused.contiguous(memory_format=torch.channels_last), "global": glob, "chip": chip,
                "guidance": guidance if chip is not None else None}

    def forward(self, prep: dict, feats: FeatureMaps, cams: Cameras, x: torch.Tensor, kp: torch.Tensor,
                normals: torch.Tensor, idx: torch.Tensor | None = None,
                template: torch.Tensor | None = None) -> torch.Tensor:
        """Move vertices.

        Args:
            x: ``(B, N, 3)`` all current vertices; normals ``(B, N, 3)`` (None for one view).
            kp: ``(B, K, 3)`` current keypoints.
            idx: optional ``(P,)`` subset of vertices to move (training).
            template: ``(N, 3)`` template vertices, or ``(B, N, 3)`` per-face reference shapes (needed with
                ``offset_input``).
        Returns:
            ``(B, P, 3)`` new positions of the subset (all vertices when idx is None).
        """
        B, V = cams.batch, cams.views
        if idx is not None:
            x, normals = x[:, idx], (None if normals is None else normals[:, idx])
        nbr = self.neighbours if idx is None else self.neighbours[idx]
        P = x.shape[1]
        uv, _ = cams.project(x)
        w = view_weights(x, normals, cams)  # (B,V,P,1), None for one view
        w = None if w is None else w[..., 0]  # (B,V,P)
        glob = prep["global"].reshape(B, V, -1)  # (B,V,H)
        # pre = the first layer's image part: pooled pixel-aligned features + global feature, (B,P,H)
        chip = prep.get("chip")
        uv_chip = None if chip is None else prep["guidance"].to_chip(uv)
        if not torch.is_grad_enabled() and x.device.type == "cpu":
            # inference: every view's samples and their weighted sum in one call (several times faster)
            pre = pooled_samples(prep["map"], uv, feats.size, w)
            pre += glob[:, 0, None, :] if w is None else torch.bmm(w.transpose(1, 2), glob)
            if chip is not None:
                pre += pooled_samples(chip, uv_chip, CHIP_SIZE, w)
        else:  # grid_sample: its gradients reach the sampling positions
            feat = sample_maps_channels_first(prep["map"], uv, feats.size)  # (B,V,H,P)
            if chip is not None:
                feat = feat + sample_maps_channels_first(chip, uv_chip, CHIP_SIZE)
            if w is None:
                pre = feat[:, 0] + glob[:, 0, :, None]
            else:
                # visibility-weighted sums over views as batched matmuls (no (B,V,H,P) temporary)
                pre = torch.bmm(glob.transpose(1, 2), w)
                for v in range(V):
                    pre.addcmul_(feat[:, v], w[:, None, v])
            pre = pre.transpose(1, 2)
        if w is None:
            rot = cams.R.reshape(B, 1, 9).expand(B, P, 9)
        else:
            rot = torch.bmm(w.transpose(1, 2), cams.R.reshape(B, V, 9))  # (B,P,9) which way the views look
        if self.guided:
            # (B,P,M,3) guidance: offsets to keypoints (index_select: 3x faster than kp[:, nbr] on the CPU)
            kp_nbr = torch.index_select(kp, 1, nbr.reshape(-1)).view(B, P, -1, 3)
            rel = (x[:, :, None, :] - kp_nbr).mul_(IN_SCALE)
        else:
            rel = torch.zeros(B, P, nbr.shape[1], 3, dtype=x.dtype, device=x.device)
        emb = self.vertex_embed if idx is None else self.vertex_embed[idx]  # (P,H)
        parts = [rel.reshape(B, P, -1), rot]
        if self.offset_input:
            # template: (N, 3), or (B, N, 3) per face (the identity prior's reference shape)
            if template.dim() == 2:
                template = template[None]
            x_t = template if idx is None else template[:, idx]
            parts.append((x - x_t) * IN_SCALE)  # (B,P,3) how far this vertex has already moved
        # h = relu(pre + emb + rel(parts)), (B,P,H)
        h = torch.relu_(F.linear(torch.cat(parts, -1), self.rel.weight, self.rel.bias).add_(pre).add_(emb))
        h = torch.relu_(F.linear(h, self.l2.weight, self.l2.bias))
        return x + F.linear(h, self.l3.weight, self.l3.bias) * OUT_SCALE  # the step is predicted in cm


class GLVD(nn.Module):
    """The whole model: encoder, camera head, keypoint and vertex modules, and the descent loop."""

    def __init__(self, cfg: ModelConfig, template: Template) -> None:
        super().__init__()
        self.cfg = cfg
        self.template = template
        self.encoder = ImageEncoder(cfg.encoder_widths)
        fc, gc = self.encoder.out_channels, self.encoder.global_channels
        kp_ids = torch.from_numpy(template.keypoint_ids)
        nbr = torch.from_numpy(nearest_keypoints(template.vertices, template.keypoint_ids, cfg.neighbours))
        self.register_buffer("template_vertices", torch.from_numpy(template.vertices.astype(np.float32)))
        self.register_buffer("quads", torch.from_numpy(template.quads))
        self.register_buffer("keypoint_ids", kp_ids)
        self._corner_op = quad_corner_operator(self.quads, template.num_vertices)
        # vertex normals by a sparse matmul (fast on the CPU); False: by index_add (glvd.cuda_graph may need it)
        self.sparse_normals = True
        self.camera_head = CameraHead(gc)
        self.keypoints = KeypointModule(cfg, fc, gc, len(kp_ids)) if cfg.guidance else None
        self.vertices = VertexModule(cfg, fc, gc, template.num_vertices, nbr)
        if cfg.identity_prior_rank:
            # the identity prior: reference = template + prior_basis^T ([code, 1] @ prior_map), fitted on renders
            # (glvd-train guided --prior); buffers, never trained by gradient
            r = cfg.identity_prior_rank
            self.register_buffer("prior_map", torch.zeros(cfg.identity_dim + 1, r))
            self.register_buffer("prior_basis", torch.zeros(r, template.num_vertices, 3))
        self.expression = ExpressionHead(len(template.expression_names)) if cfg.expression_head else None
        self.camera_refiner = None
        if cfg.camera_refiner and self.keypoints is not None:  # it reads the keypoint module's map
            self.camera_refiner = CameraRefiner(cfg.kp_feat * len(fc), self.keypoints.global_proj.out_features,
                                                len(kp_ids))
            # the template's keypoint normals: what the refiner reads before every descent, computed once
            normals = vertex_normals(self.template_vertices[None], self.quads, self._corner_op)[0, kp_ids]
            self.register_buffer("template_keypoint_normals", normals, persistent=False)

    def load_state_dict_widening(self, state: dict) -> None:
        """Load weights of a model without ``offset_input`` into one with it (the new input starts at zero).

        The result computes exactly what the old model did until training uses the new input.
        """
        state = dict(state)
        w = state.get("vertices.rel.weight")
        own = self.vertices.rel.weight
        if w is not None and w.shape[1] < own.shape[1]:
            state["vertices.rel.weight"] = torch.cat([w, w.new_zeros(w.shape[0], own.shape[1] - w.shape[1])], 1)
        self.load_state_dict(state)

    def encode(self, images: torch.Tensor) -> FeatureMaps:
        """``images (B, V, 3, S, S)`` -> :class:`FeatureMaps` (one encoder pass per view)."""
        B, V = images.shape[:2]
        maps, g = self.encoder(images.flatten(0, 1))
        return FeatureMaps(maps=maps, global_=g, batch=B, views=V, size=images.shape[-1])

    def estimate_cameras(self, feats: FeatureMaps, K: torch.Tensor, prep: dict | None = None) -> Cameras:
        """The camera head's cameras, refined on the template's keypoints when the model has a refiner
        (then ``prep``, :meth:`prepare`'s output, saves computing the keypoint map twice)."""
        R, t, _ = self.camera_head(feats, K)
        cams = Cameras(K, R, t)
        if self.camera_refiner is None:
            return cams
        prep = self.prepare(feats) if prep is None else prep
        return self.refine_cameras(prep, feats, cams)

    def refine_cameras(self, prep: dict, feats: FeatureMaps, cams: Cameras, x: torch.Tensor | None = None,
                       rounds: int | None = None) -> Cameras:
        """Cameras corrected by the refiner, on the keypoints of ``x (B, N, 3)`` (default: the template);
        ``rounds`` of it (default: as trained)."""
        if self.camera_refiner is None:
            return cams
        if x is None:
            points = self.template_vertices[self.keypoint_ids][None].expand(cams.batch, -1, -1)
            normals = self.template_keypoint_normals[None].expand(cams.batch, -1, -1)
        else:
            points = x[:, self.keypoint_ids]
            normals = self.normals(x)[:, self.keypoint_ids]
        kp = prep.get("camera_kp", prep["kp"])
        return self.camera_refiner(kp["map"], kp["global"], cams, points, normals, feats.size, rounds)

    @property
    def needs_guidance(self) -> bool:
        """Whether the model reads the identity code or the landmarks (then pass them to :meth:`prepare`)."""
        return bool(self.cfg.identity_dim or self.cfg.landmark_guidance or self.cfg.chip_features)

    def prepare(self, feats: FeatureMaps, guidance: Guidance | None = None) -> dict:
        """Per-call projections of the feature maps (and the guidance), shared by all steps; with an
        identity prior also ``ref (B, N, 3)``, the face the identity code predicts."""
        fields = feats if self.cfg.field_image else feats.blank()
        out = {
            "kp": self.keypoints.prepare(fields, guidance) if self.keypoints is not None else None,
            "v": self.vertices.prepare(fields, guidance),
        }
        if self.camera_refiner is not None and not self.cfg.field_image:
            out["camera_kp"] = self.keypoints.prepare(feats, guidance)  # the refiner reads the image
        if self.cfg.identity_prior_rank:
            ident = guidance.identity if guidance is not None else torch.zeros(
                feats.batch, self.cfg.identity_dim, device=self.template_vertices.device)
            out["ref"] = self.identity_prior(ident)
        return out

    def identity_prior(self, identity: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` identity codes -> ``(B, N, 3)`` the faces they predict (the template without a prior)."""
        if not self.cfg.identity_prior_rank:
            return self.template_vertices[None].expand(identity.shape[0], -1, -1)
        coef = torch.cat([identity, identity.new_ones(identity.shape[0], 1)], 1) @ self.prior_map
        return self.template_vertices[None] + torch.einsum("br,rnc->bnc", coef, self.prior_basis)

    def reference(self, prep: dict | None, batch: int) -> torch.Tensor:
        """What the descent starts from and measures its offsets against: ``(B, N, 3)``."""
        if prep is not None and prep.get("ref") is not None:
            return prep["ref"]
        return self.template_vertices[None].expand(batch, -1, -1)

    def step(self, prep: dict, feats: FeatureMaps, cams: Cameras, x: torch.Tensor, kp: torch.Tensor,
             idx: torch.Tensor | None = None, normals: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One descent step: keypoints, then vertices.

        Args:
            x: ``(B, N, 3)`` current vertices; kp: ``(B, K, 3)`` current keypoints.
            idx: optional vertex subset (training); then the first output is ``(B, P, 3)``.
            normals: ``(B, N, 3)`` the normals that weight the views (default: :meth:`normals` of ``x``; a
                training descent passes those of a gradient-free descent of every vertex).
        Returns:
            new vertices ``(B, N|P, 3)`` and new keypoints ``(B, K, 3)``.
        """
        # normals only weight the views against each other: one view needs none
        if normals is None and cams.views > 1:
            normals = self.normals(x)
        ref = prep.get("ref")
        if self.keypoints is not None:
            kp_t = self.template_vertices[self.keypoint_ids][None] if ref is None else ref[:, self.keypoint_ids]
            kp_n = None if normals is None else normals[:, self.keypoint_ids]
            kp = self.keypoints(prep["kp"], feats, cams, kp, kp_t, kp_n)
        x_new = self.move_vertices(prep, feats, cams, x, kp, normals, idx)
        if self.keypoints is None:
            # the LVD ablation has no keypoint module: its "keypoints" just follow the vertices
            kp = x_new[:, self.keypoint_ids] if idx is None else kp
        return x_new, kp

    def move_vertices(self, prep: dict, feats: FeatureMaps, cams: Cameras, x: torch.Tensor, kp: torch.Tensor,
                      normals: torch.Tensor | None, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The vertex half of :meth:`step`: ``x (B, N, 3)`` moved given the keypoints ``kp (B, K, 3)`` (the subset
        ``idx`` only when given: ``(B, P, 3)``)."""
        ref = prep.get("ref")
        tmpl = self.template_vertices if ref is None else ref
        return self.vertices(prep["v"], feats, cams, x, kp, normals, idx, tmpl)

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """The vertex normals ``(B, N, 3)`` of the meshes ``x (B, N, 3)``."""
        return vertex_normals(x, self.quads, self._corner_op_on(x.device))

    def _corner_op_on(self, device: torch.device) -> torch.Tensor | None:
        if not self.sparse_normals:
            return None
        if self._corner_op.device != device:
            self._corner_op = self._corner_op.to(device)
        return self._corner_op

    def initial_state(self, batch: int, prep: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting shape and its keypoints, ``(B, N, 3)`` and ``(B, K, 3)``: the template, or with an
        identity prior the face it predicts (``prep["ref"]``)."""
        x0 = self.reference(prep, batch).clone()
        return x0, x0[:, self.keypoint_ids].clone()

    def descend(self, feats: FeatureMaps, cams: Cameras, steps: int | None = None,
                x0: torch.Tensor | None = None,
                on_step: Callable[[int, torch.Tensor], None] | None = None,
                cancel: CancelToken | None = None, prep: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the descent (``prep``: :meth:`prepare`'s output when the caller already has it).

        Returns:
            ``verts (B, T+1, N, 3)`` and ``keypoints (B, T+1, K, 3)``; index 0 is the start.
        """
        steps = self.cfg.steps if steps is None else steps
        prep = self.prepare(feats) if prep is None else prep
        x, kp = self.initial_state(feats.batch, prep)
        if x0 is not None:
            x, kp = x0, x0[:, self.keypoint_ids]
        xs, kps = [x], [kp]
        for i in range(steps):
            if cancel is not None and cancel.is_set():
                raise Cancelled("reconstruction cancelled")
            x, kp = self.step(prep, feats, cams, x, kp)
            xs.append(x)
            kps.append(kp)
            if on_step is not None:
                on_step(i + 1, x)
        return torch.stack(xs, 1), torch.stack(kps, 1)
