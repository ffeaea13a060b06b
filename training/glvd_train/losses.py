"""What training minimises: one descent step from a perturbed start (:func:`field_losses`) or whole unrolled
descents (:func:`unrolled_field_losses`), the camera head's error, and the coefficient probe's; :func:`losses`
is one batch's, as :class:`LossConfig` says."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from glvd.camera_head import translation_to_uvz
from glvd.cameras import Cameras, euler_to_matrix
from glvd.model import GLVD

from .metrics import apply_similarity, similarity_transform

if TYPE_CHECKING:
    from .train import TrainConfig


def perturbed_start(template: torch.Tensor, gt: torch.Tensor, gen: torch.Generator, jitter: float = 1.0,
                    path_prob: float = 0.0) -> torch.Tensor:
    """Starting meshes: the template, or (with ``path_prob``) a point on the path to the truth.

    Args:
        template: ``(N, 3)``; gt: ``(B, N, 3)``.
    Returns:
        ``(B, N, 3)``: template + a (GT - template), a = 0 or (with ``path_prob``) a in [0, 1],
        then a small similarity jitter and vertex noise. Path starts carry part of the
        answer in their shape, so a field trained on them learns to extrapolate its input
        instead of reading the image; training keeps them off by default.
    """
    B, dev = gt.shape[0], gt.device
    # every draw comes from the CPU generator (same numbers on any device), then moves
    a = torch.rand(B, 1, 1, generator=gen)
    a = torch.where(torch.rand(B, 1, 1, generator=gen) >= path_prob, torch.zeros_like(a), a).to(dev)
    x = template[None] + a * (gt - template[None])
    ang = torch.randn(B, 3, generator=gen) * math.radians(2.0) * jitter
    Rj = euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2]).to(dev)
    scale = (1 + 0.03 * jitter * torch.randn(B, 1, 1, generator=gen)).to(dev)
    shift = (torch.randn(B, 1, 3, generator=gen) * 0.003 * jitter).to(dev)
    c = x.mean(1, keepdim=True)
    x = scale * torch.einsum("bij,bnj->bni", Rj, x - c) + c + shift
    sigma = torch.rand(B, 1, 1, generator=gen) * 0.0015 * jitter
    return x + (torch.randn(x.shape, generator=gen) * sigma).to(dev)


def jitter_cameras(cams: Cameras, gen: torch.Generator, deg: float = 2.0, rel_t: float = 0.01) -> Cameras:
    """Small errors on known cameras, as an estimate would have."""
    B, V = cams.batch, cams.views
    ang = torch.randn(B, V, 3, generator=gen) * math.radians(deg)
    Rj = euler_to_matrix(ang[..., 0], ang[..., 1], ang[..., 2]).to(cams.R.device)
    t = cams.t * (1 + rel_t * torch.randn(B, V, 3, generator=gen)).to(cams.t.device)
    return Cameras(cams.K, Rj @ cams.R, t)


def shape_error_cm(pred: torch.Tensor, gt: torch.Tensor, absolute_weight: float) -> torch.Tensor:
    """Mean vertex error (cm) after a similarity alignment, plus a little of the unaligned error.

    The alignment is computed without gradient and then applied to ``pred``, so the loss
    teaches the shape (what evaluation scores) and the small absolute term keeps the
    descent from drifting. A rigid offset the image cannot reveal (a start jittered
    against imperfect cameras) then no longer swamps the shape signal.

    Args:
        pred, gt: ``(B, P, 3)`` metres.
    """
    with torch.no_grad():
        tf = similarity_transform(pred.detach(), gt)
    aligned = (apply_similarity(pred, tf) - gt).norm(dim=-1).mean()
    absolute = (pred - gt).norm(dim=-1).mean()
    return (aligned + absolute_weight * absolute) * 100.0


class CoefficientProbe(nn.Module):
    """Training-only: identity and expression coefficients from the encoder's global feature.

    Scored in vertex space through the kit's linear bases, so each mode counts as much as it
    moves the face. Never part of the shipped model (the fields stay free of the PCA space);
    it only hands the encoder a direct, low-dimensional shape signal.
    """

    def __init__(self, global_channels: int, basis: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("basis", basis, persistent=False)  # (C, N_face, 3) cm per unit coefficient
        self.head = nn.Linear(global_channels, basis.shape[0])
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_kit(cls, kit: dict, global_channels: int) -> CoefficientProbe:
        n = int(kit["face_area"][1])
        basis = torch.from_numpy(np.concatenate([kit["identity"][:, :n], kit["expression"][:, :n]], 0)).float()
        return cls(global_channels, basis)

    def loss(self, global_: torch.Tensor, views: int, coeffs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Mean vertex error (cm) of the probe's shape.

        Args:
            global_: ``(B*V, G)``; coeffs: ``(B, C)`` true identity + expression; idx: ``(P,)`` vertex subset.
        """
        pred = self.head(global_).reshape(-1, views, coeffs.shape[1]).mean(1)  # (B, C): views agree on one face
        return torch.einsum("bc,cpk->bpk", pred - coeffs, self.basis[:, idx]).norm(dim=-1).mean()


def field_losses(model: GLVD, prep: dict, feats, cams: Cameras, gt: torch.Tensor, idx: torch.Tensor,
                 gen: torch.Generator, jitter: float = 1.0, absolute_weight: float = 1.0, own_start_frac: float = 0.0,
                 path_prob: float = 0.0, damping: float = 1.0) -> dict[str, torch.Tensor]:
    """Vertex and keypoint losses (cm) of one descent step on the vertex subset ``idx``.

    The step starts from a perturbed template (:func:`perturbed_start`) or, with ``own_start_frac``, from
    the model's own state after 1-9 steps; ``damping`` < 1 makes those steps damped,
    ``x <- x + damping * (step(x) - x)``, for 1-10 steps (``glvd-train finetune-heads --damping``).
    ``gt``: ``(B, N, 3)``; ``prep``: ``model.prepare(feats)`` (or cached equivalents).
    """
    B, kp_ids = gt.shape[0], model.keypoint_ids
    if bool(torch.rand((), generator=gen) < own_start_frac):
        # start where inference would be after some of its steps, so the field learns to correct its own drift
        k = int(torch.randint(1, max(2, model.cfg.steps + (damping < 1.0)), (), generator=gen))
        with torch.no_grad():
            x0, kp0 = model.initial_state(B)
            for _ in range(k):
                x1, kp1 = model.step(prep, feats, cams, x0, kp0)
                if damping == 1.0:
                    x0, kp0 = x1, kp1
                else:
                    x0, kp0 = x0 + damping * (x1 - x0), kp0 + damping * (kp1 - kp0)
    else:
        x0 = perturbed_start(model.template_vertices, gt, gen, jitter, path_prob)
        kp0 = x0[:, kp_ids] + (torch.randn(B, len(kp_ids), 3, generator=gen) * 0.001).to(gt.device)
    x1, kp1 = model.step(prep, feats, cams, x0, kp0, idx)
    out = {"vert": shape_error_cm(x1, gt[:, idx], absolute_weight)}
    if model.keypoints is not None:
        out["kp"] = shape_error_cm(kp1, gt[:, kp_ids], absolute_weight)
    return out


def unrolled_field_losses(model: GLVD, prep: dict, feats, cams: Cameras, gt: torch.Tensor, idx: torch.Tensor,
                          steps: int, absolute_weight: float = 1.0, rise_weight: float = 30.0) -> dict:
    """Errors after each of ``steps`` descent steps from the template, with gradients through the descent.

    What inference does, trained as such: step t's error is weighted t / sum(1..T), so the end matters
    most but every step counts, and each rise of the batch's vertex error over the previous step adds
    ``rise_weight`` times the rise. A vertex moves by its own position, the keypoints and (several views)
    its normal, so the subset ``idx``'s trajectory is exact when the normals come from a gradient-free
    descent of all vertices. ``gt``: ``(B, N, 3)``; ``prep``: ``model.prepare(feats)`` (gradients reach
    the encoder through it) or cached equivalents (``glvd-train finetune-heads``).
    Returns ``vert`` / ``kp`` (weighted errors, cm), ``rise``, ``total`` (their sum, the rises weighted)
    and ``vert_steps``: the per-step vertex errors (floats).
    """
    kp_ids = model.keypoint_ids
    B, V = gt.shape[0], feats.views
    x_all, kp = model.initial_state(B, prep)  # x_all: every vertex, no gradient (normals; a scatter target)
    x = x_all[:, idx]
    weights = [(t + 1) / (steps * (steps + 1) / 2) for t in range(steps)]
    vert, kp_loss, rise, prev, errs = 0.0, 0.0, gt.new_zeros(()), None, []
    for t in range(steps):
        normals = None
        if V > 1:
            with torch.no_grad():
                normals = model.normals(x_all)
        x, kp = model.step(prep, feats, cams, x_all.index_copy(1, idx, x), kp, idx, normals)
        if V > 1:
            with torch.no_grad():
                x_all = model.move_vertices(prep, feats, cams, x_all, kp.detach(), normals)
        e = shape_error_cm(x, gt[:, idx], absolute_weight)
        vert = vert + weights[t] * e
        kp_loss = kp_loss + weights[t] * shape_error_cm(kp, gt[:, kp_ids], absolute_weight)
        if prev is not None:
            rise = rise + torch.relu(e - prev)
        prev = e
        errs.append(e.detach())
    # one device-to-host copy for all steps, not a GPU sync per step in the training loop
    return {"vert": vert, "kp": kp_loss, "rise": rise, "total": vert + kp_loss + rise_weight * rise,
            "vert_steps": torch.stack(errs).tolist()}


@dataclass(frozen=True)
class LossConfig:
    """How :func:`losses` draws one batch's descent and weighs its terms (:meth:`of` takes them from a
    :class:`TrainConfig`, whose fields of the same meaning say more)."""

    subset: int  # vertices supervised per step (TrainConfig.vertex_subset)
    jitter: float = 1.0  # of the perturbed starts (TrainConfig.start_jitter)
    true_camera_frac: float = 0.5
    absolute_weight: float = 1.0
    own_start_frac: float = 0.0
    path_prob: float = 0.0  # TrainConfig.path_start_prob
    aux_weight: float = 1.0  # the coefficient probe's loss, when there is a probe
    unroll: int = 0
    rise_weight: float = 30.0

    @classmethod
    def of(cls, cfg: TrainConfig) -> LossConfig:
        return cls(subset=cfg.vertex_subset, jitter=cfg.start_jitter, true_camera_frac=cfg.true_camera_frac,
                   absolute_weight=cfg.absolute_weight, own_start_frac=cfg.own_start_frac,
                   path_prob=cfg.path_start_prob, aux_weight=cfg.aux_weight, unroll=cfg.unroll,
                   rise_weight=cfg.rise_weight)


def losses(model: GLVD, s: dict, gen: torch.Generator, lc: LossConfig,
           probe: CoefficientProbe | None = None) -> dict[str, torch.Tensor]:
    """Camera, keypoint, vertex and (with a probe) coefficient losses (vertex/keypoint in cm) for one batch.

    ``lc.unroll`` > 0: the vertex and keypoint losses are those of whole descents of that many steps from the
    template (:func:`unrolled_field_losses`, encoder included) instead of one step from a start.
    """
    images, K, R, t, gt = s["images"], s["K"], s["R"], s["t"], s["vertices"]
    S = images.shape[-1]
    feats = model.encode(images)
    R_p, t_p, uvz_p = model.camera_head(feats, K)
    uvz = translation_to_uvz(t, K, S)
    loss_cam = (R_p - R).abs().mean() + (uvz_p - uvz).abs().mean()
    cams = Cameras(K, R, t)
    # some batches descend with the (detached) estimated cameras, so the fields
    # learn to work with what the camera head gives on real photos
    use_true = bool(torch.rand((), generator=gen) < lc.true_camera_frac)
    cams = jitter_cameras(cams, gen) if use_true else Cameras(K, R_p.detach(), t_p.detach())
    idx = torch.randperm(gt.shape[1], generator=gen)[:lc.subset].to(gt.device)
    prep = model.prepare(feats)
    if lc.unroll:
        fl = unrolled_field_losses(model, prep, feats, cams, gt, idx, lc.unroll, lc.absolute_weight, lc.rise_weight)
        out = {"cam": loss_cam, "vert": fl["vert"], "kp": fl["kp"], "rise": fl["rise"]}
        out["total"] = fl["total"] + 0.5 * loss_cam
    else:
        out = {"cam": loss_cam, **field_losses(model, prep, feats, cams, gt, idx, gen, lc.jitter, lc.absolute_weight,
                                               lc.own_start_frac, lc.path_prob)}
        out["total"] = out["vert"] + out.get("kp", 0.0) + 0.5 * loss_cam
    if probe is not None:
        coeffs = torch.cat([s["identity"], s["expression"]], 1)
        out["aux"] = probe.loss(feats.global_, images.shape[1], coeffs, idx)
        out["total"] = out["total"] + lc.aux_weight * out["aux"]
    return out
