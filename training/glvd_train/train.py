"""Training GLVD on synthetic renders (LVD-style supervision at every step).

Each iteration renders a fresh batch (seeded by the iteration number, so a
resumed run sees exactly the batches an uninterrupted run would), encodes the
views once, and supervises one descent step from perturbed starting meshes:
the keypoints and a random subset of vertices are pulled toward the ground
truth. The camera head is trained on the same batch. A validation descent on
fixed held-out faces runs every few minutes and is logged to ``log.csv``.

What it minimises is :mod:`glvd_train.losses`'; :func:`train` resolves the recipe (``_recipe``) and hands it
to a ``_Run`` (the model, its optimizer, the batches, validation and saving).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from glvd.cameras import Cameras, rotation_angle_deg
from glvd.checkpoint import read_checkpoint, save_checkpoint
from glvd.model import GLVD, ModelConfig
from glvd.topology import load_kit, template_from_kit

# the losses live in .losses; these names stay importable from here (guided_training, finetune_heads, scripts)
from .losses import (  # noqa: F401
    CoefficientProbe,
    LossConfig,
    field_losses,
    jitter_cameras,
    losses,
    perturbed_start,
    shape_error_cm,
    unrolled_field_losses,
)
from .metrics import vertex_error_mm

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
    _refuse_what_cannot_run(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    cfg, state, init = _recipe(cfg, out / "state.pt")
    return _Run(cfg, out, state, init, log).loop()


def _refuse_what_cannot_run(cfg: TrainConfig) -> None:
    """A ValueError, before anything is written, for what this machine or the recipe cannot do."""
    for d in (cfg.device, cfg.render_device):
        if torch.device(d).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {d!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU")
    if cfg.render_device != "cpu" and cfg.loader_workers > 0:
        raise ValueError("rendering on another device than the CPU needs loader_workers=0 (--workers 0)")
    if cfg.unroll and not cfg.model.get("guidance", True):
        raise ValueError(UNROLL_NEEDS_GUIDANCE)


#: what may change between resumes of one run (its budget and where it runs); the recipe may not
RESUMABLE_CHANGES = {"minutes", "out", "iterations", "threads", "loader_workers", "save_every_s", "val_every_s",
                     "device", "render_device"}


def _recipe(cfg: TrainConfig, state_path: Path) -> tuple[TrainConfig, dict | None, dict | None]:
    """The run's config, its saved state (None: a new run) and the checkpoint it continues (None: none).

    A resumed run keeps its saved recipe (:data:`RESUMABLE_CHANGES` aside); a new one continuing a checkpoint
    takes the checkpoint's model config, overridden by its own ``model``.
    """
    state = None
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        saved_cfg = state["train_config"]
        cfg = dataclasses.replace(TrainConfig(**{k: v for k, v in saved_cfg.items() if k not in RESUMABLE_CHANGES}),
                                  **{k: getattr(cfg, k) for k in RESUMABLE_CHANGES})
    init = None
    if state is None and cfg.init_from:
        # a new session continues the shipped model: the run folder (state.pt) is not in git, the checkpoint is
        init = read_checkpoint(cfg.init_from)
        # the checkpoint's config; a model from before offset_input gains it (zero-initialised), unless
        # the run's own model overrides say otherwise
        merged = dict(init["config"])
        merged.setdefault("offset_input", True)
        cfg = dataclasses.replace(cfg, model=merged | dict(cfg.model))
    return cfg, state, init


def learning_rate(cfg: TrainConfig, i: int) -> float:
    """The learning rate of iteration ``i``: a warm-up after a fresh optimizer, then exponential decay."""
    # a fresh Adam on a trained model takes large first steps: the warm-up keeps them from undoing it
    warm = min(1.0, (i - cfg.optimizer_from + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
    return warm * max(cfg.lr_min, cfg.lr * 0.5 ** (i / cfg.lr_half_life_it))


LOG_COLUMNS = ["iteration", "wall_min", "lr", "loss", "vert_cm", "kp_cm", "cam", "val_true_mm", "val_est_mm",
               "val_step0_mm", "val_rot_deg", "difficulty", "val_easy_mm", "val_easy_step0_mm"]


class _Run:
    """One invocation of :func:`train`: the model, its optimizer, where training stands (``state.pt``), the
    batches, the validation faces and ``log.csv``; :meth:`loop` trains until the budget is spent."""

    def __init__(self, cfg: TrainConfig, out: Path, state: dict | None, init: dict | None, log) -> None:
        mcfg = ModelConfig(**cfg.model)
        if cfg.unroll and not mcfg.guidance:  # a continued checkpoint's own config
            raise ValueError(UNROLL_NEEDS_GUIDANCE)
        self.out, self.log, self.state_path = out, log, out / "state.pt"
        kit = load_kit(cfg.kit)
        torch.manual_seed(cfg.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.model = model = GLVD(mcfg, template_from_kit(kit))
        self.probe = probe = (CoefficientProbe.from_kit(kit, model.encoder.global_channels) if cfg.aux_weight > 0
                              else None)
        self.device = torch.device(cfg.device)
        model.to(self.device)
        if probe is not None:
            probe.to(self.device)
        self.params = list(model.parameters()) + (list(probe.parameters()) if probe is not None else [])
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=1e-4)
        self.cfg = cfg = self._restore(cfg, state, init)
        self.loss_cfg = LossConfig.of(cfg)
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        self._validation_faces(mcfg)
        # every rendered batch serves `reuse` iterations; saves happen between batches, so resume is exact
        self.batch_i = state.get("batch", self.it // cfg.reuse) if state is not None else -(-self.it // cfg.reuse)
        ds = _Batches(cfg.kit, cfg.synth, mcfg.image_size, cfg.seed, self.batch_i, cfg.batch, cfg.max_views,
                      cfg.dataset_size, _BatchDifficulty(cfg) if self.val_easy is not None else None,
                      cfg.render_device)
        self.loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=cfg.loader_workers,
                                                  prefetch_factor=2 if cfg.loader_workers else None,
                                                  persistent_workers=False)
        log_path = out / "log.csv"
        new_log = not log_path.is_file()
        self.logf = open(log_path, "a", newline="")  # noqa: SIM115 (kept open across the whole loop)
        self.writer = csv.writer(self.logf)
        if new_log:
            self.writer.writerow(LOG_COLUMNS)
        self.running: dict[str, float] = {}
        self.metrics: dict = {}

    def _restore(self, cfg: TrainConfig, state: dict | None, init: dict | None) -> TrainConfig:
        """Where training stands (iteration, wall time, generator): from ``state.pt``, the continued checkpoint,
        or the start; a new run's config gains the iterations its curriculum and optimizer count from."""
        self.it, self.wall = 0, 0.0
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        if state is not None:
            self.model.load_state_dict(state["model"])
            if self.probe is not None:
                self.probe.load_state_dict(state["probe"])
            self.opt.load_state_dict(state["optimizer"])
            self.it, self.wall = state["iteration"], state["wall_s"]
            self.gen.set_state(state["generator"])
            self.log(f"resumed {self.state_path} at iteration {self.it} ({self.wall / 60:.1f} min trained)")
            return cfg
        if init is not None:
            self.model.load_state_dict_widening(init["state_dict"])
            self.it = int(init["provenance"].get("iterations", 0))
            self.wall = float(init["provenance"].get("wall_minutes", 0.0)) * 60
            self.gen.manual_seed(cfg.seed + 1 + self.it)
            self.log(f"continuing {cfg.init_from} from iteration {self.it} with a fresh optimizer")
        start = self.it
        if init is not None and list(init["provenance"].get("curriculum", [])) == list(cfg.curriculum):
            # continuing a model trained with this same curriculum: carry on with its schedule
            start = int(init["provenance"].get("curriculum_from", self.it))
        return dataclasses.replace(cfg, curriculum_from=start, curriculum=tuple(cfg.curriculum),
                                   optimizer_from=self.it)

    def _validation_faces(self, mcfg: ModelConfig) -> None:
        """The fixed held-out faces of :func:`validate` (and, with a curriculum, its easy ones)."""
        from .synth import SynthConfig, SyntheticFaces

        cfg = self.cfg
        synth_cfg = SynthConfig(image_size=mcfg.image_size, **cfg.synth)
        self.val = _to(SyntheticFaces(kit_path=cfg.kit, config=synth_cfg, seed=VAL_SEED).sample(cfg.val_samples, 1),
                       self.device)
        self.val_easy = (_to(SyntheticFaces(kit_path=cfg.kit, config=synth_cfg.at_difficulty(0.0), seed=VAL_SEED)
                             .sample(cfg.val_samples, 1), self.device) if any(cfg.curriculum) else None)

    def save(self) -> Path:
        """``state.pt`` (to resume) and the exported ``model.pt`` with its provenance (and the last validation)."""
        cfg, it, wall = self.cfg, self.it, self.wall
        _atomic_save({"model": self.model.state_dict(),
                      "probe": self.probe.state_dict() if self.probe is not None else None,
                      "optimizer": self.opt.state_dict(), "iteration": it, "batch": self.batch_i,
                      "wall_s": wall, "generator": self.gen.get_state(), "train_config": dataclasses.asdict(cfg)},
                     self.state_path)
        prov = {"trained": True, "commit": git_commit(), "iterations": it, "wall_minutes": round(wall / 60, 1),
                "init_from": cfg.init_from,
                "batch": cfg.batch, "max_views": cfg.max_views, "seed": cfg.seed, "synth": cfg.synth,
                "curriculum": list(cfg.curriculum), "curriculum_from": cfg.curriculum_from,
                "device": str(self.device),
                **({"unroll": cfg.unroll, "rise_weight": cfg.rise_weight} if cfg.unroll else {})}
        if self.metrics:
            prov.update({k: v for k, v in self.metrics.items() if not isinstance(v, list)})
        return save_checkpoint(self.out / "model.pt", self.model, prov)

    def _optimize(self, s: dict, bar) -> None:
        """One iteration on the batch ``s``."""
        t0 = time.monotonic()
        for g in self.opt.param_groups:
            g["lr"] = learning_rate(self.cfg, self.it)
        ls = losses(self.model, s, self.gen, self.loss_cfg, self.probe)
        self.opt.zero_grad(set_to_none=True)
        ls["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # CUDA runs asynchronously: count the step where it ran
        self.it += 1
        self.wall += time.monotonic() - t0
        running = self.running
        for k, v in ls.items():
            x = float(v.detach())
            running[k] = 0.98 * running.get(k, x) + 0.02 * x
        if bar is not None:
            bar.update(1)
            bar.set_postfix(vert=f"{running['vert']:.3f}cm", aux=f"{running.get('aux', 0):.3f}cm",
                            cam=f"{running['cam']:.3f}", refresh=False)

    def _validate(self, waiting_pct: float) -> None:
        """Validate, write a row of ``log.csv`` and say how it stands (``waiting_pct``: time spent waiting for
        data so far)."""
        it, running = self.it, self.running
        self.metrics = metrics = validate(self.model, self.val, easy=self.val_easy)
        diff = curriculum_difficulty(it, self.cfg)
        self.writer.writerow([it, round(self.wall / 60, 2), learning_rate(self.cfg, it), running["total"],
                              running["vert"], running.get("kp", ""), running["cam"], metrics["val_true_mm"],
                              metrics["val_est_mm"], metrics["val_true_step0_mm"], metrics["val_rot_deg"],
                              round(diff, 3), metrics.get("val_easy_mm", ""), metrics.get("val_easy_step0_mm", "")])
        self.logf.flush()
        easy_txt = (f"; easy set {metrics['val_easy_mm']:.2f} mm (template {metrics['val_easy_step0_mm']:.2f}),"
                    f" difficulty {diff:.2f}" if self.val_easy is not None else "")
        self.log(f"it {it}: val {metrics['val_true_mm']:.2f} mm (true cams), {metrics['val_est_mm']:.2f} mm "
                 f"(estimated), template {metrics['val_true_step0_mm']:.2f} mm, rot {metrics['val_rot_deg']:.1f} deg"
                 + easy_txt + f"; waiting for data {waiting_pct:.0f}% of the time")

    def loop(self) -> Path:
        """Train until the wall-clock budget or the iteration cap; validate and save on their clocks and at the end."""
        cfg = self.cfg
        start = time.monotonic()
        last_save = last_val = start
        waited, asked = 0.0, start  # time spent waiting for the next rendered batch (with 0 workers: rendering)
        self.model.train()
        try:
            from tqdm import tqdm
            bar = tqdm(total=cfg.iterations, initial=self.it, dynamic_ncols=True, mininterval=5)
        except ImportError:
            bar = None
        for i, s in self.loader:
            waited += time.monotonic() - asked
            self.wall += time.monotonic() - asked  # rendering counts (in-process on a GPU it is most of the time)
            assert i == self.batch_i, f"loader out of step ({i} != {self.batch_i})"
            s = _to(s, self.device)
            self.batch_i += 1
            for _ in range(cfg.reuse):
                self._optimize(s, bar)
            now = time.monotonic()
            done = now - start > cfg.minutes * 60 or self.it >= cfg.iterations
            if now - last_val > cfg.val_every_s or done:
                self._validate(100 * waited / max(now - start, 1e-9))
                last_val = now
            if now - last_save > cfg.save_every_s or done:
                self.save()
                last_save = now
            if done:
                break
            asked = time.monotonic()
        if bar is not None:
            bar.close()
        self.logf.close()
        return self.save()
