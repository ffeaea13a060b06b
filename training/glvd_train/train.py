"""Training GLVD on synthetic renders (LVD-style supervision at every step).

Each iteration renders a fresh batch (seeded by the iteration number, so a
resumed run sees exactly the batches an uninterrupted run would), encodes the
views once, and supervises one descent step from perturbed starting meshes:
the keypoints and a random subset of vertices are pulled toward the ground
truth. The camera head is trained on the same batch. A validation descent on
fixed held-out faces runs every few minutes and is logged to ``log.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from glvd.camera_head import translation_to_uvz
from glvd.cameras import Cameras, euler_to_matrix, rotation_angle_deg
from glvd.checkpoint import read_checkpoint, save_checkpoint
from glvd.model import GLVD, ModelConfig
from glvd.topology import load_kit, template_from_kit

from .metrics import apply_similarity, similarity_transform, vertex_error_mm

VAL_SEED = 10_000_019  # disjoint from every training seed (training uses seed * 1_000_003 + iteration)


@dataclass
class TrainConfig:
    out: str = "runs/glvd"
    kit: str | None = None
    minutes: float = 110.0  # wall-clock budget of this invocation
    iterations: int = 1_000_000  # hard cap across resumes
    batch: int = 8
    max_views: int = 3
    vertex_subset: int = 2048
    dataset_size: int = 0  # 0: a fresh batch every iteration; n: cycle over n fixed batches (smoke tests)
    start_jitter: float = 0.5  # scales the rigid jitter and noise of the perturbed starting meshes
    true_camera_frac: float = 0.7  # batches descending with (jittered) true cameras; the rest use the camera head's
    absolute_weight: float = 0.1  # weight of the unaligned error next to the similarity-aligned one
    own_start_frac: float = 0.5  # batches that start where the model's own first 1..T-1 steps from the template end
    path_start_prob: float = 0.0  # starts part-way from the template to the truth (they leak the answer: keep 0)
    aux_weight: float = 1.0  # the coefficient probe's loss (shape signal for the encoder)
    reuse: int = 2  # iterations per rendered batch (rendering is the bottleneck on a 2-core CPU)
    # > 0: train on whole descents of this many steps from the template, the encoder included (what
    # glvd-train finetune-heads --unroll does for the heads alone on cached features); a GPU job
    unroll: int = 0
    rise_weight: float = 30.0  # with unroll: the penalty on a step that raises the batch's error
    # curriculum: nuisance variation (SynthConfig.at_difficulty) held at 0 for `hold` iterations, then
    # raised linearly to the full distribution over `ramp` iterations; (0, 0) = full from the start
    curriculum: tuple[int, int] = (0, 0)
    curriculum_from: int = 0  # the iteration the curriculum counts from (set when a run starts)
    lr: float = 1e-3
    lr_min: float = 5e-5
    lr_half_life_it: int = 20000  # exponential decay to lr_min (training spans several sessions)
    warmup: int = 300  # iterations of linear lr warm-up after a fresh optimizer (a new or continued model)
    optimizer_from: int = 0  # the iteration the optimizer was created at (set when a run starts)
    seed: int = 0
    save_every_s: float = 180.0
    val_every_s: float = 600.0
    val_samples: int = 32
    threads: int = 2
    loader_workers: int = 1
    device: str = "cpu"  # where the model trains ("cuda" on a GPU machine)
    render_device: str = "cpu"  # where batches are rendered; another device needs loader_workers=0
    init_from: str | None = None  # continue from a model checkpoint (e.g. the shipped one) with a fresh optimizer
    model: dict = field(default_factory=dict)  # ModelConfig overrides
    synth: dict = field(default_factory=dict)  # SynthConfig overrides


def curriculum_difficulty(iteration: int, cfg: TrainConfig) -> float:
    """The nuisance level in [0, 1] of the batch rendered for ``iteration``."""
    hold, ramp = cfg.curriculum
    k = iteration - cfg.curriculum_from - hold
    if k < 0:
        return 0.0
    return 1.0 if ramp <= 0 else min(1.0, k / ramp)


def git_commit() -> str:
    """The checkout's short commit, for provenance ("unknown" outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class _Batches(torch.utils.data.IterableDataset):
    """Renders batch ``i`` from seed ``(seed, i)``; iteration starts where training resumes."""

    def __init__(self, kit: str | None, synth_cfg: dict, image_size: int, seed: int, start: int, batch: int,
                 max_views: int, dataset_size: int = 0, difficulty=None, device: str = "cpu") -> None:
        self.kit, self.synth_cfg, self.image_size, self.device = kit, synth_cfg, image_size, device
        self.seed, self.start, self.batch, self.max_views = seed, start, batch, max_views
        self.dataset_size = dataset_size
        self.difficulty = difficulty  # batch index -> nuisance level in [0, 1] (None: always 1)

    def __iter__(self):
        from .synth import SynthConfig, SyntheticFaces

        info = torch.utils.data.get_worker_info()
        if info is not None:
            torch.set_num_threads(1)  # one core per rendering process; in-process rendering keeps the trainer's
        cfg = SynthConfig(image_size=self.image_size, **self.synth_cfg)
        gen = None
        # several loader workers take turns (the loader reads them round-robin, so order is kept)
        stride = info.num_workers if info is not None else 1
        i = self.start + (info.id if info is not None else 0)
        while True:
            j = i % self.dataset_size if self.dataset_size else i
            s = self.seed * 1_000_003 + j
            if gen is None:
                gen = SyntheticFaces(kit_path=self.kit, config=cfg, seed=s, device=self.device)
            else:
                gen.gen.manual_seed(s)  # all of the generator's randomness comes from this torch.Generator
            gen.config = cfg if self.difficulty is None else cfg.at_difficulty(self.difficulty(i))
            views = 1 + (j % self.max_views)
            yield i, gen.sample(self.batch, views)
            i += stride


class _BatchDifficulty:
    """Picklable map from a rendered batch's index to its curriculum difficulty (loader workers call it)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def __call__(self, batch_index: int) -> float:
        return curriculum_difficulty(batch_index * self.cfg.reuse, self.cfg)


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


def losses(model: GLVD, s: dict, gen: torch.Generator, subset: int, jitter: float = 1.0,
           true_camera_frac: float = 0.5, absolute_weight: float = 1.0, own_start_frac: float = 0.0,
           path_prob: float = 0.0, probe: CoefficientProbe | None = None, aux_weight: float = 1.0,
           unroll: int = 0, rise_weight: float = 30.0) -> dict[str, torch.Tensor]:
    """Camera, keypoint, vertex and (with a probe) coefficient losses (vertex/keypoint in cm) for one batch.

    ``unroll`` > 0: the vertex and keypoint losses are those of whole descents of that many steps from the
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
    use_true = bool(torch.rand((), generator=gen) < true_camera_frac)
    cams = jitter_cameras(cams, gen) if use_true else Cameras(K, R_p.detach(), t_p.detach())
    idx = torch.randperm(gt.shape[1], generator=gen)[:subset].to(gt.device)
    prep = model.prepare(feats)
    if unroll:
        fl = unrolled_field_losses(model, prep, feats, cams, gt, idx, unroll, absolute_weight, rise_weight)
        out = {"cam": loss_cam, "vert": fl["vert"], "kp": fl["kp"], "rise": fl["rise"]}
        out["total"] = fl["total"] + 0.5 * loss_cam
    else:
        out = {"cam": loss_cam, **field_losses(model, prep, feats, cams, gt, idx, gen, jitter, absolute_weight,
                                               own_start_frac, path_prob)}
        out["total"] = out["vert"] + out.get("kp", 0.0) + 0.5 * loss_cam
    if probe is not None:
        coeffs = torch.cat([s["identity"], s["expression"]], 1)
        out["aux"] = probe.loss(feats.global_, images.shape[1], coeffs, idx)
        out["total"] = out["total"] + aux_weight * out["aux"]
    return out


def descent_errors_mm(model: GLVD, feats, cams: Cameras, gt: torch.Tensor, steps: int = 10) -> list[float]:
    """Mean aligned face-area error (mm) over the batch after each step of a full descent (0 = the start).

    Args:
        gt: ``(B, N, 3)`` ground-truth vertices.
    """
    xs, _ = model.descend(feats, cams, steps)
    return [vertex_error_mm(xs[:, i], gt).mean().item() for i in range(xs.shape[1])]


@torch.no_grad()
def validate(model: GLVD, val: dict, steps: int = 10, easy: dict | None = None) -> dict[str, float]:
    """Full descents on fixed held-out faces: error (mm, aligned) per step, true and estimated cameras.

    ``easy``: optional held-out faces at curriculum difficulty 0, descended with the true cameras
    (``val_easy_mm``): shows whether the model reads the face where the task is easiest.
    """
    model.eval()
    res: dict[str, float] = {}
    if easy is not None:
        e = descent_errors_mm(model, model.encode(easy["images"]), Cameras(easy["K"], easy["R"], easy["t"]),
                              easy["vertices"], steps)
        res.update(val_easy_mm=e[-1], val_easy_step0_mm=e[0])
    feats = model.encode(val["images"])
    cams_true = Cameras(val["K"], val["R"], val["t"])
    cams_est = model.estimate_cameras(feats, val["K"])
    for name, cams in (("true", cams_true), ("est", cams_est)):
        per_step = descent_errors_mm(model, feats, cams, val["vertices"], steps)
        res[f"val_{name}_mm"] = per_step[-1]
        res[f"val_{name}_step0_mm"] = per_step[0]
        res[f"val_{name}_steps"] = per_step
    res["val_rot_deg"] = rotation_angle_deg(cams_est.R, cams_true.R).mean().item()
    model.train()
    return res


def _to(sample: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in sample.items()}


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


UNROLL_NEEDS_GUIDANCE = "unrolled descents train the keypoint-guided model, not the LVD ablation (--no-guidance)"


def train(cfg: TrainConfig, log=print) -> Path:
    """Train (or resume) into ``cfg.out``; returns the path of the exported model checkpoint."""
    from .synth import SynthConfig, SyntheticFaces

    for d in (cfg.device, cfg.render_device):
        if torch.device(d).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {d!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU")
    if cfg.render_device != "cpu" and cfg.loader_workers > 0:
        raise ValueError("rendering on another device than the CPU needs loader_workers=0 (--workers 0)")
    if cfg.unroll and not cfg.model.get("guidance", True):
        raise ValueError(UNROLL_NEEDS_GUIDANCE)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    state_path = out / "state.pt"
    resumed = state_path.is_file()
    if resumed:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        saved_cfg = state["train_config"]
        # the budget and output may change between resumes; the recipe may not
        keep = {"minutes", "out", "iterations", "threads", "loader_workers", "save_every_s", "val_every_s",
                "device", "render_device"}
        cfg = dataclasses.replace(TrainConfig(**{k: v for k, v in saved_cfg.items() if k not in keep}),
                                  **{k: getattr(cfg, k) for k in keep})
    init = None
    if not resumed and cfg.init_from:
        # a new session continues the shipped model: the run folder (state.pt) is not in git, the checkpoint is
        init = read_checkpoint(cfg.init_from)
        # the checkpoint's config; a model from before offset_input gains it (zero-initialised), unless
        # the run's own model overrides say otherwise
        merged = dict(init["config"])
        merged.setdefault("offset_input", True)
        cfg = dataclasses.replace(cfg, model=merged | dict(cfg.model))
    mcfg = ModelConfig(**cfg.model)
    if cfg.unroll and not mcfg.guidance:  # a continued checkpoint's own config
        raise ValueError(UNROLL_NEEDS_GUIDANCE)
    kit = load_kit(cfg.kit)
    torch.manual_seed(cfg.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = GLVD(mcfg, template_from_kit(kit))
    probe = CoefficientProbe.from_kit(kit, model.encoder.global_channels) if cfg.aux_weight > 0 else None
    device = torch.device(cfg.device)
    model.to(device)
    if probe is not None:
        probe.to(device)
    params = list(model.parameters()) + (list(probe.parameters()) if probe is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    it, wall = 0, 0.0
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    if resumed:
        model.load_state_dict(state["model"])
        if probe is not None:
            probe.load_state_dict(state["probe"])
        opt.load_state_dict(state["optimizer"])
        it, wall = state["iteration"], state["wall_s"]
        gen.set_state(state["generator"])
        log(f"resumed {state_path} at iteration {it} ({wall / 60:.1f} min trained)")
    elif init is not None:
        model.load_state_dict_widening(init["state_dict"])
        it = int(init["provenance"].get("iterations", 0))
        wall = float(init["provenance"].get("wall_minutes", 0.0)) * 60
        gen.manual_seed(cfg.seed + 1 + it)
        log(f"continuing {cfg.init_from} from iteration {it} with a fresh optimizer")
    if not resumed:
        start = it
        if init is not None and list(init["provenance"].get("curriculum", [])) == list(cfg.curriculum):
            # continuing a model trained with this same curriculum: carry on with its schedule
            start = int(init["provenance"].get("curriculum_from", it))
        cfg = dataclasses.replace(cfg, curriculum_from=start, curriculum=tuple(cfg.curriculum), optimizer_from=it)
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    synth_cfg = SynthConfig(image_size=mcfg.image_size, **cfg.synth)
    val = _to(SyntheticFaces(kit_path=cfg.kit, config=synth_cfg, seed=VAL_SEED).sample(cfg.val_samples, 1), device)
    curriculum_on = any(cfg.curriculum)
    val_easy = (_to(SyntheticFaces(kit_path=cfg.kit, config=synth_cfg.at_difficulty(0.0), seed=VAL_SEED)
                    .sample(cfg.val_samples, 1), device) if curriculum_on else None)

    # every rendered batch serves `reuse` iterations; saves happen between batches, so resume is exact
    batch_i = state.get("batch", it // cfg.reuse) if resumed else -(-it // cfg.reuse)
    ds = _Batches(cfg.kit, cfg.synth, mcfg.image_size, cfg.seed, batch_i, cfg.batch, cfg.max_views,
                  cfg.dataset_size, _BatchDifficulty(cfg) if curriculum_on else None, cfg.render_device)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=cfg.loader_workers,
                                         prefetch_factor=2 if cfg.loader_workers else None,
                                         persistent_workers=False)
    log_path = out / "log.csv"
    new_log = not log_path.is_file()
    logf = open(log_path, "a", newline="")  # noqa: SIM115 (kept open across the whole loop)
    writer = csv.writer(logf)
    if new_log:
        writer.writerow(["iteration", "wall_min", "lr", "loss", "vert_cm", "kp_cm", "cam", "val_true_mm",
                         "val_est_mm", "val_step0_mm", "val_rot_deg", "difficulty", "val_easy_mm",
                         "val_easy_step0_mm"])

    def lr_at(i: int) -> float:
        # a fresh Adam on a trained model takes large first steps: the warm-up keeps them from undoing it
        warm = min(1.0, (i - cfg.optimizer_from + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
        return warm * max(cfg.lr_min, cfg.lr * 0.5 ** (i / cfg.lr_half_life_it))

    def save(final_metrics: dict | None = None) -> Path:
        _atomic_save({"model": model.state_dict(), "probe": probe.state_dict() if probe is not None else None,
                      "optimizer": opt.state_dict(), "iteration": it, "batch": batch_i,
                      "wall_s": wall, "generator": gen.get_state(), "train_config": dataclasses.asdict(cfg)},
                     state_path)
        prov = {"trained": True, "commit": git_commit(), "iterations": it, "wall_minutes": round(wall / 60, 1),
                "init_from": cfg.init_from,
                "batch": cfg.batch, "max_views": cfg.max_views, "seed": cfg.seed, "synth": cfg.synth,
                "curriculum": list(cfg.curriculum), "curriculum_from": cfg.curriculum_from,
                "device": str(device), **({"unroll": cfg.unroll, "rise_weight": cfg.rise_weight} if cfg.unroll else {})}
        if final_metrics:
            prov.update({k: v for k, v in final_metrics.items() if not isinstance(v, list)})
        return save_checkpoint(out / "model.pt", model, prov)

    start = time.monotonic()
    last_save = last_val = start
    waited, asked = 0.0, start  # time spent waiting for the next rendered batch (with 0 workers: rendering)
    running: dict[str, float] = {}
    metrics: dict = {}
    model.train()
    try:
        from tqdm import tqdm
        bar = tqdm(total=cfg.iterations, initial=it, dynamic_ncols=True, mininterval=5)
    except ImportError:
        bar = None
    for i, s in loader:
        waited += time.monotonic() - asked
        wall += time.monotonic() - asked  # rendering counts (in-process on a GPU it is most of the time)
        assert i == batch_i, f"loader out of step ({i} != {batch_i})"
        s = _to(s, device)
        batch_i += 1
        for _ in range(cfg.reuse):
            t0 = time.monotonic()
            for g in opt.param_groups:
                g["lr"] = lr_at(it)
            ls = losses(model, s, gen, cfg.vertex_subset, cfg.start_jitter, cfg.true_camera_frac,
                        cfg.absolute_weight, cfg.own_start_frac, cfg.path_start_prob, probe, cfg.aux_weight,
                        cfg.unroll, cfg.rise_weight)
            opt.zero_grad(set_to_none=True)
            ls["total"].backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # CUDA runs asynchronously: count the step where it ran
            it += 1
            wall += time.monotonic() - t0
            for k, v in ls.items():
                x = float(v.detach())
                running[k] = 0.98 * running.get(k, x) + 0.02 * x
            if bar is not None:
                bar.update(1)
                bar.set_postfix(vert=f"{running['vert']:.3f}cm", aux=f"{running.get('aux', 0):.3f}cm",
                                cam=f"{running['cam']:.3f}", refresh=False)
        now = time.monotonic()
        done = now - start > cfg.minutes * 60 or it >= cfg.iterations
        if now - last_val > cfg.val_every_s or done:
            metrics = validate(model, val, easy=val_easy)
            last_val = now
            diff = curriculum_difficulty(it, cfg)
            writer.writerow([it, round(wall / 60, 2), lr_at(it), running["total"], running["vert"],
                             running.get("kp", ""), running["cam"], metrics["val_true_mm"], metrics["val_est_mm"],
                             metrics["val_true_step0_mm"], metrics["val_rot_deg"], round(diff, 3),
                             metrics.get("val_easy_mm", ""), metrics.get("val_easy_step0_mm", "")])
            logf.flush()
            easy_txt = (f"; easy set {metrics['val_easy_mm']:.2f} mm (template {metrics['val_easy_step0_mm']:.2f}),"
                        f" difficulty {diff:.2f}" if val_easy is not None else "")
            log(f"it {it}: val {metrics['val_true_mm']:.2f} mm (true cams), {metrics['val_est_mm']:.2f} mm "
                f"(estimated), template {metrics['val_true_step0_mm']:.2f} mm, rot {metrics['val_rot_deg']:.1f} deg"
                + easy_txt + f"; waiting for data {100 * waited / max(now - start, 1e-9):.0f}% of the time")
        if now - last_save > cfg.save_every_s or done:
            save(metrics)
            last_save = now
        if done:
            break
        asked = time.monotonic()
    if bar is not None:
        bar.close()
    logf.close()
    return save(metrics)
