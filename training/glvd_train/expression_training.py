"""``glvd-train expression``: the expression head (glvd.expression) on the kit's landmark geometry.

The head reads 2D points, so it trains on 2D points: every iteration draws fresh heads (identity,
sparse ARKit expression, out-of-PCA field) and cameras as the data engine does, projects their 68
landmark vertices (nothing is rendered) and adds detector-like noise: per-point Gaussian noise of a
per-sample size up to ``--noise-px`` crop pixels (128 px crop) and a small error of the camera
rotation, as the runtime's estimated cameras have. MediaPipe on our renders is far noisier than on
photos (it was trained on real faces), so renders would teach the head to distrust its input.

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


def cache_render_set(cache: Path, val_shards: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cache's held-out views with MediaPipe's landmarks (mapped to the 68): ``landmarks (n, 68, 2)``,
    their true ``R (n, 3, 3)`` and ``expression (n, E)``."""
    from glvd.landmarks_map import mediapipe_to_68

    from .feature_cache import FeatureCache

    c = FeatureCache(cache)
    a = c.arrays
    n_val = val_shards * c.meta["faces_per_shard"]
    lm, R, E = [], [], []
    for f, v in zip(*np.nonzero(a["mesh_found"][:n_val]), strict=True):
        lm.append(mediapipe_to_68(a["mesh2d"][f, v]))
        R.append(a["R"][f, v])
        E.append(a["expression"][f])
    return (torch.from_numpy(np.stack(lm)).float(), torch.from_numpy(np.stack(R)).float(),
            torch.from_numpy(np.stack(E)).float())


def main(argv: list[str] | None = None) -> int:
    from .synth import SynthConfig, SyntheticFaces

    p = argparse.ArgumentParser(prog="glvd-train expression", description=__doc__.split("\n\n")[0])
    p.add_argument("--init-from", default=None, help="checkpoint to add the head to (default: the shipped one)")
    p.add_argument("--out", type=Path, default=Path("runs/expression/model.pt"))
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--noise-px", type=float, default=2.0, help="largest per-point landmark noise (128 px crop)")
    p.add_argument("--rotation-noise", type=float, default=3.0, help="camera rotation error, degrees (std)")
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
    model, prov = load_checkpoint(a.init_from, torch.device("cpu"))
    names = list(model.template.expression_names)
    head = ExpressionHead(len(names))
    if a.head_from:
        donor, donor_prov = load_checkpoint(a.head_from, torch.device("cpu"))
        if donor.expression is None:
            log(f"{a.head_from} has no expression head")
            return 2
        head.load_state_dict(donor.expression.state_dict())
    cfg = SynthConfig(image_size=model.cfg.image_size)
    train_gen = SyntheticFaces(a.kit, cfg, seed=a.seed)
    val = SyntheticFaces(a.kit, cfg, seed=a.seed + 10_000).sample_landmarks(4096, 1)
    val_gen = torch.Generator().manual_seed(a.seed + 1)
    val_lm, val_R = noisy(val, val_gen, 1.0, 0.0)
    renders = cache_render_set(a.cache, a.val_shards) if (a.cache / "cache.json").is_file() else None
    top = [names.index(n) for n in most_visible(model.template.expressions, names)]
    opt = torch.optim.Adam(head.parameters(), a.lr)
    gen = torch.Generator().manual_seed(a.seed + 2)
    sched_total = None
    t0, it, best = time.monotonic(), 0, None

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
        head.train()
        return out

    while (time.monotonic() - t0) / 60 < a.minutes:
        s = train_gen.sample_landmarks(a.batch, 1)
        lm, R = noisy(s, gen, a.noise_px, a.rotation_noise)
        loss = (head.raw(lm, R)[:, 0] - s["expression"]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
        if sched_total is None and it == 50:  # the learning rate falls over the run's expected iterations
            per_it = (time.monotonic() - t0) / it
            sched_total = max(int(a.minutes * 60 / per_it), it + 1)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, sched_total - it, eta_min=a.lr * 0.05)
        elif sched_total is not None and it < sched_total:
            sched.step()
        if it % a.val_every == 0:
            best = evaluate()
            msg = "; ".join(f"{k}: MAE {v['mae']:.4f}, R2 top-10 min {min(v['r2_top10']):.2f} "
                            f"median {np.median(v['r2_top10']):.2f}" for k, v in best.items())
            log(f"it {it} ({(time.monotonic() - t0) / 60:.1f} min): loss {float(loss.detach()):.4f}; {msg}")
    best = evaluate()
    model = with_expression_head(model, head)
    provenance = {k: v for k, v in prov.items() if k not in ("path", "saved")}
    earlier = donor_prov.get("expression_head", {}).get("iterations", 0) if a.head_from else 0
    provenance["expression_head"] = {
        "from": a.init_from or "shipped", "head_from": a.head_from, "earlier_iterations": earlier,
        "commit": git_commit(), "iterations": it, "batch": a.batch,
        "minutes": round((time.monotonic() - t0) / 60, 1), "noise_px": a.noise_px,
        "rotation_noise_deg": a.rotation_noise, "top10": [names[i] for i in top],
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
