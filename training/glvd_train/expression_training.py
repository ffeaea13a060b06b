"""``glvd-train expression``: the expression head (glvd.expression) on the kit's landmark geometry.

The head reads 2D points, so it trains on 2D points: every iteration draws fresh heads (identity,
sparse ARKit expression, out-of-PCA field) and cameras as the data engine does, projects their 68
landmark vertices (nothing is rendered) and adds detector-like noise: per-point Gaussian noise of a
per-sample size up to ``--noise-px`` crop pixels (128 px crop) and a small error of the camera
rotation, as the runtime's estimated cameras have. ``--cache-fraction`` takes that share of each batch from
the feature cache's renders instead, with MediaPipe's points on them (never its first ``--val-shards`` shards):
MediaPipe marks our renders with systematic offsets (the brows, a mouth opening it reads at a third) that the
projections never show, research/expression_weights. ``--loss sparse`` (:func:`sparse_loss`) lets an off
weight sit below 0, where the clamp hides it.

Validation: fresh heads with noise of up to 1 px, and the cache's held-out renders with MediaPipe's landmarks
(the render path; a lower bound, see docs/model_history.md). The head is attached to ``--init-from``
and written to ``--out`` as a checkpoint (the descent's weights unchanged).

    glvd-train expression --init-from runs/neutral/model.pt --out runs/expression/model.pt --minutes 15
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from glvd.cameras import euler_to_matrix
from glvd.checkpoint import load_checkpoint, save_checkpoint
from glvd.expression import ExpressionHead
from glvd.model import GLVD, ModelConfig

from .train import git_commit


def with_expression_head(model: GLVD, head: ExpressionHead) -> GLVD:
    """The same model (its descent unchanged) carrying ``head`` (``ModelConfig.expression_head``)."""
    cfg = ModelConfig.from_dict({**model.cfg.to_dict(), "expression_head": True})
    out = GLVD(cfg, model.template)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("expression.")}
    state.update({f"expression.{k}": v for k, v in head.state_dict().items()})
    out.load_state_dict(state, strict=True)
    return out


def r_squared(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``(n, E)`` -> per column ``1 - SSE / SST`` (NaN where the truth does not vary)."""
    sst = (truth - truth.mean(0)).pow(2).sum(0)
    r2 = 1 - (pred - truth).pow(2).sum(0) / sst.clamp_min(1e-12)
    return torch.where(sst > 1e-9, r2, torch.full_like(r2, float("nan")))


def most_visible(deltas: np.ndarray, names: list[str], count: int = 10) -> list[str]:
    """The ``count`` expressions that move the face most (RMS over the face area of their deltas
    ``(E, N, 3)``); ``mouthClose`` is left out: the data engine caps it by jawOpen, so it is almost never on."""
    rms = np.sqrt((deltas.astype(np.float64) ** 2).sum(-1).mean(-1))
    order = [i for i in np.argsort(-rms) if names[i] != "mouthClose"]
    return [names[i] for i in order[:count]]


def noisy(s: dict, gen: torch.Generator, noise_px: float, rot_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``landmarks (B, V, 68, 2)`` with per-sample noise in [0, noise_px] and ``R`` off by up to rot_deg."""
    lm, R = s["landmarks2d"], s["R"]
    B, V = lm.shape[:2]
    sigma = noise_px * torch.rand(B, V, 1, 1, generator=gen)
    lm = lm + sigma * torch.randn(lm.shape, generator=gen)
    ang = torch.deg2rad(rot_deg * torch.randn(3, B, V, generator=gen))
    return lm, R @ euler_to_matrix(ang[0], ang[1], ang[2])


def cache_views(cache: Path, shards: range) -> dict[str, torch.Tensor]:
    """The views of the cache's ``shards`` (complete ones only) where MediaPipe found the face: its points mapped
    to the 68 ``mediapipe (n, 68, 2)``, the true projections ``truth (n, 68, 2)`` (crop pixels), the true
    ``R (n, 3, 3)``, ``expression (n, E)`` and ``face (n,)`` (the face's row in the shards read). Reads only these
    arrays of each shard (not the images and maps :class:`~glvd_train.feature_cache.FeatureCache` loads)."""
    from glvd.landmarks_map import mediapipe_to_68

    from .feature_cache import existing_shards, shard_path

    out: dict[str, list] = {"mediapipe": [], "truth": [], "R": [], "expression": [], "face": []}
    faces, complete = 0, existing_shards(cache)
    for i in range(shards.start, min(shards.stop, complete)):
        with np.load(shard_path(cache, i)) as d:
            found, mesh, lm, R, E = d["mesh_found"], d["mesh2d"], d["landmarks2d"], d["R"], d["expression"]
        for f, v in zip(*np.nonzero(found), strict=True):
            out["mediapipe"].append(mediapipe_to_68(mesh[f, v]))
            out["truth"].append(lm[f, v])
            out["R"].append(R[f, v])
            out["expression"].append(E[f])
            out["face"].append(faces + f)
        faces += len(found)
    if not out["face"]:
        raise FileNotFoundError(f"{cache} has no complete shard in {shards}")
    return {k: torch.from_numpy(np.stack(v)).float() if k != "face" else torch.tensor(v) for k, v in out.items()}


def cache_render_set(cache: Path, val_shards: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cache's held-out views with MediaPipe's landmarks (mapped to the 68): ``landmarks (n, 68, 2)``,
    their true ``R (n, 3, 3)`` and ``expression (n, E)``."""
    v = cache_views(cache, range(val_shards))
    return v["mediapipe"], v["R"], v["expression"]


def sparse_loss(raw: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The squared error of what the head outputs, ``raw`` clamped to [0, 1] (:meth:`ExpressionHead.forward`),
    where the clamp takes it to the truth: a weight that is off (0, most of them most of the time) costs only
    where ``raw > 0``, so the head may keep its off weights below 0, a margin that the input's noise then has
    to cross before it shows as a false positive; on weights that are on, the plain squared error."""
    pred = torch.where(truth <= 0, raw.clamp_min(0.0), torch.where(truth >= 1, raw.clamp_max(1.0), raw))
    return (pred - truth).pow(2).mean()


def rotated(R: torch.Tensor, rot_deg: float, gen: torch.Generator) -> torch.Tensor:
    """``R (..., 3, 3)`` times a random rotation of ``rot_deg`` degrees (std per Euler angle)."""
    ang = torch.deg2rad(rot_deg * torch.randn(3, *R.shape[:-2], generator=gen))
    return R @ euler_to_matrix(ang[0], ang[1], ang[2])


def mixed_batch(train_gen, views: dict[str, torch.Tensor] | None, gen: torch.Generator, batch: int,
                noise_px: float, rot_deg: float, cache_fraction: float,
                cache_noise_px: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch ``landmarks (B, 68, 2), R (B, 3, 3), expression (B, E)``: ``cache_fraction`` of it
    drawn from the cache's ``views`` (MediaPipe's points on renders, with their real errors, plus per-sample
    Gaussian noise up to ``cache_noise_px``), the rest fresh projected heads with :func:`noisy`'s noise; both
    with the rotation error."""
    n_cache = round(batch * cache_fraction) if views is not None else 0
    lms, Rs, Es = [], [], []
    if n_cache < batch:
        s = train_gen.sample_landmarks(batch - n_cache, 1)
        lm, R = noisy(s, gen, noise_px, rot_deg)
        lms.append(lm[:, 0])
        Rs.append(R[:, 0])
        Es.append(s["expression"])
    if n_cache:
        idx = torch.randint(len(views["face"]), (n_cache,), generator=gen)
        lm = views["mediapipe"][idx]
        sigma = cache_noise_px * torch.rand(n_cache, 1, 1, generator=gen)
        lms.append(lm + sigma * torch.randn(lm.shape, generator=gen))
        Rs.append(rotated(views["R"][idx], rot_deg, gen))
        Es.append(views["expression"][idx])
    return torch.cat(lms), torch.cat(Rs), torch.cat(Es)


def train_head(head: ExpressionHead, train_gen, views: dict[str, torch.Tensor] | None, *, minutes: float = 0.0,
               iterations: int | None = None, batch: int = 512, lr: float = 1e-3, noise_px: float = 2.0,
               rotation_noise: float = 3.0, cache_fraction: float = 0.0, cache_noise_px: float = 0.0,
               loss: str = "mse", seed: int = 0, every: int = 0, on_every=None) -> int:
    """Adam on ``loss`` (``mse`` of the raw output, or :func:`sparse_loss`) over :func:`mixed_batch` batches, the
    learning rate falling on a cosine to 5%, for ``iterations`` (a result that does not depend on what else
    shares the CPU) or else ``minutes``; ``on_every(it, loss)`` every ``every`` iterations. Returns the count."""
    if loss not in ("mse", "sparse"):
        raise ValueError(f"unknown loss {loss!r}")
    opt = torch.optim.Adam(head.parameters(), lr)
    gen = torch.Generator().manual_seed(seed + 2)
    sched, end = None, iterations
    if iterations is not None:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iterations, 1), eta_min=lr * 0.05)
    t0, it = time.monotonic(), 0
    head.train()
    while (it < iterations) if iterations is not None else ((time.monotonic() - t0) / 60 < minutes):
        lm, R, E = mixed_batch(train_gen, views, gen, batch, noise_px, rotation_noise, cache_fraction,
                               cache_noise_px)
        raw = head.raw(lm, R)
        value = sparse_loss(raw, E) if loss == "sparse" else (raw - E).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        it += 1
        if sched is None and it == 50:  # by time: the learning rate falls over the run's expected iterations
            end = max(int(minutes * 60 / ((time.monotonic() - t0) / it)), it + 1)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, end - it, eta_min=lr * 0.05)
        elif sched is not None and it < end:
            sched.step()
        if every and on_every is not None and it % every == 0:
            on_every(it, float(value.detach()))
    head.eval()
    return it


def main(argv: list[str] | None = None) -> int:
    from .synth import SynthConfig, SyntheticFaces

    p = argparse.ArgumentParser(prog="glvd-train expression", description=__doc__.split("\n\n")[0])
    p.add_argument("--init-from", default=None, help="checkpoint to add the head to (default: the shipped one)")
    p.add_argument("--out", type=Path, default=Path("runs/expression/model.pt"))
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--iterations", type=int, default=None, help="train this many iterations (overrides --minutes)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--noise-px", type=float, default=2.0, help="largest per-point landmark noise (128 px crop)")
    p.add_argument("--rotation-noise", type=float, default=3.0, help="camera rotation error, degrees (std)")
    p.add_argument("--loss", choices=("mse", "sparse"), default="mse",
                   help="sparse: an off weight costs only where the clamped output is above 0 (sparse_loss)")
    p.add_argument("--cache-fraction", type=float, default=0.0,
                   help="this share of each batch from the cache's MediaPipe points on renders (never from its "
                   "first --val-shards shards)")
    p.add_argument("--cache-noise-px", type=float, default=0.0, help="extra noise on the cache's points, px")
    p.add_argument("--train-from-shard", type=int, default=None,
                   help="the first cache shard to train on (default --val-shards; never below it)")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--cache", type=Path, default=Path("runs/cache"), help="for the render-path validation")
    p.add_argument("--val-shards", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kit", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--half", action="store_true", help="store the weights as float16 (the shipped file)")
    p.add_argument("--head-from", default=None, help="continue from this checkpoint's expression head (with "
                   "--minutes 0: just move it onto --init-from's descent)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    first = a.val_shards if a.train_from_shard is None else a.train_from_shard
    if first < a.val_shards:
        log(f"--train-from-shard {first} would train on the held-out shards 0-{a.val_shards - 1}")
        return 2
    model, prov = load_checkpoint(a.init_from, torch.device("cpu"))
    names = list(model.template.expression_names)
    head = ExpressionHead(len(names))
    donor_prov: dict = {}
    if a.head_from:
        donor, donor_prov = load_checkpoint(a.head_from, torch.device("cpu"))
        if donor.expression is None:
            log(f"{a.head_from} has no expression head")
            return 2
        head.load_state_dict(donor.expression.state_dict())
    has_cache = (a.cache / "cache.json").is_file()
    views = None
    if a.cache_fraction > 0:
        if not has_cache:
            log(f"--cache-fraction needs a feature cache at {a.cache}")
            return 2
        views = cache_views(a.cache, range(first, 1_000_000))
        log(f"training on {len(views['face'])} MediaPipe views of the cache (shards {first}+) "
            f"for {a.cache_fraction:.0%} of each batch")
    cfg = SynthConfig(image_size=model.cfg.image_size)
    train_gen = SyntheticFaces(a.kit, cfg, seed=a.seed)
    val = SyntheticFaces(a.kit, cfg, seed=a.seed + 10_000).sample_landmarks(4096, 1)
    val_gen = torch.Generator().manual_seed(a.seed + 1)
    val_lm, val_R = noisy(val, val_gen, 1.0, 0.0)
    renders = cache_render_set(a.cache, a.val_shards) if has_cache else None
    top = [names.index(n) for n in most_visible(model.template.expressions, names)]
    t0 = time.monotonic()

    def evaluate() -> dict:
        head.eval()
        with torch.no_grad():
            out = {}
            for tag, lm, R, E in [("synthetic, noise <= 1 px", val_lm[:, 0], val_R[:, 0], val["expression"])] + (
                    [("renders, MediaPipe", *renders)] if renders is not None else []):
                w = head(lm[:, None], R[:, None])[:, 0]
                r2 = r_squared(w, E)
                out[tag] = {"mae": float((w - E).abs().mean()), "r2_top10": [float(r2[i]) for i in top],
                            "r2": r2.tolist()}
        return out

    def report(it: int, loss: float) -> None:
        res = evaluate()
        head.train()
        msg = "; ".join(f"{k}: MAE {v['mae']:.4f}, R2 top-10 min {min(v['r2_top10']):.2f} "
                        f"median {np.median(v['r2_top10']):.2f}" for k, v in res.items())
        log(f"it {it} ({(time.monotonic() - t0) / 60:.1f} min): loss {loss:.4f}; {msg}")

    it = train_head(head, train_gen, views, minutes=a.minutes, iterations=a.iterations, batch=a.batch, lr=a.lr,
                    noise_px=a.noise_px, rotation_noise=a.rotation_noise, cache_fraction=a.cache_fraction,
                    cache_noise_px=a.cache_noise_px, loss=a.loss, seed=a.seed, every=a.val_every,
                    on_every=report) if (a.iterations or a.minutes > 0) else 0
    best = evaluate()
    model = with_expression_head(model, head)
    provenance = {k: v for k, v in prov.items() if k not in ("path", "saved")}
    earlier_head = donor_prov.get("expression_head", {})
    earlier = earlier_head.get("earlier_iterations", 0) + earlier_head.get("iterations", 0) if donor_prov else 0
    provenance["expression_head"] = {
        "from": a.init_from or "shipped", "head_from": a.head_from,
        "earlier_iterations": earlier,
        "commit": git_commit(), "iterations": it, "batch": a.batch,
        "minutes": round((time.monotonic() - t0) / 60, 1), "noise_px": a.noise_px,
        "rotation_noise_deg": a.rotation_noise, "loss": a.loss, "cache_fraction": a.cache_fraction,
        "cache_noise_px": a.cache_noise_px, "cache_shards_from": first if views is not None else None,
        "cache_views": len(views["face"]) if views is not None else 0, "top10": [names[i] for i in top],
        "validation": {k: {"mae": round(v["mae"], 4), "r2_top10": [round(x, 3) for x in v["r2_top10"]]}
                       for k, v in best.items()}}
    save_checkpoint(a.out, model.eval(), provenance, half=a.half)
    log(f"done: {it} iterations -> {a.out}")
    for k, v in best.items():
        log(f"  {k}: MAE {v['mae']:.4f}; R2 " + ", ".join(f"{names[i]} {r:.2f}" for i, r in zip(top, v["r2_top10"],
                                                                                                strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
