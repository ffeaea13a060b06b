"""``glvd-train camera-refiner``: train a model's camera refiner (glvd.camera_refine) on cached features,
the rest of the model frozen.

The refiner reads the keypoint module's feature map, which the frozen encoder and projection give
once per render, so a fixed set of renders is encoded once and the refiner trained on it for many
iterations (as glvd-train finetune-heads does for the fields). Each iteration starts a chunk's views
from the camera head's cameras or from the true ones jittered by several degrees, on keypoints
between the template's and the true face's (what the refiner sees before and after a descent), and
scores every round's cameras against the truth (rotation in degrees, the head's projected position
and depth) and the observed keypoint pixels against the true keypoints' projections.

Usage: .venv/bin/glvd-train camera-refiner --checkpoint CKPT --out runs/camref/model.pt
           [--faces 3000] [--minutes 40]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from glvd.cameras import Cameras, euler_to_matrix, rotation_angle_deg
from glvd.checkpoint import load_checkpoint, save_checkpoint
from glvd.camera_head import translation_to_uvz
from glvd.model import GLVD
from glvd.pose import POST_DESCENT_ROUNDS

from .finetune_heads import build_cache
from .metrics import vertex_error_mm
from .report import start
from .synth import SynthConfig, SyntheticFaces
from .train import VAL_SEED, git_commit

CACHE_SEED = 60_000_000  # disjoint from training, validation, evaluation and glvd-train finetune-heads's cache


@torch.no_grad()
def encode_chunk(model: GLVD, s: dict) -> dict:
    """What the refiner reads of a batch of renders (the keypoint map stored in half precision), and the truth."""
    feats = model.encode(s["images"])
    R_p, t_p, _ = model.camera_head(feats, s["K"])
    kp = model.keypoints.prepare(feats)
    return {"views": s["images"].shape[1], "map": kp["map"].half(), "global": kp["global"], "K": s["K"],
            "R": s["R"], "t": s["t"], "R_p": R_p, "t_p": t_p, "gt": s["vertices"]}


def jittered(cams: Cameras, gen: torch.Generator, deg: float, rel_t: float) -> Cameras:
    """True cameras with rotation errors of ``deg`` (per axis, s.d.) and translation errors of ``rel_t``."""
    B, V = cams.batch, cams.views
    ang = torch.randn(B, V, 3, generator=gen) * math.radians(deg)
    Rj = euler_to_matrix(ang[..., 0], ang[..., 1], ang[..., 2])
    return Cameras(cams.K, Rj @ cams.R, cams.t * (1 + rel_t * torch.randn(B, V, 3, generator=gen)))


def rotation_deg(Ra: torch.Tensor, Rb: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for the geodesic angle (degrees): ``|Ra - Rb|_F / sqrt(2)`` = 2 sin(angle / 2)."""
    return torch.rad2deg((Ra - Rb).flatten(-2).norm(dim=-1) / math.sqrt(2.0))


def refiner_loss(model: GLVD, c: dict, gen: torch.Generator, head_frac: float) -> dict:
    """Every round's camera error and observation error for one cached chunk."""
    gt = c["gt"]
    B, size = gt.shape[0], model.cfg.image_size
    true = Cameras(c["K"], c["R"], c["t"])
    if bool(torch.rand((), generator=gen) < head_frac):
        cams = Cameras(c["K"], c["R_p"], c["t_p"])
    else:
        cams = jittered(true, gen, float(torch.empty(()).uniform_(2.0, 12.0, generator=gen)), 0.04)
    ids = model.keypoint_ids
    tmpl = model.template_vertices[None].expand(B, -1, -1)
    # keypoints somewhere between the template's and the truth's: before and after a descent
    a = torch.rand(B, 1, 1, generator=gen)
    x = tmpl + a * (gt - tmpl)
    with torch.no_grad():
        normals = model.normals(x)[:, ids]
    pts = x[:, ids] + torch.randn(B, len(ids), 3, generator=gen) * 0.001
    uv_true, _ = true.project(gt[:, ids])
    refined, observed, rounds = model.camera_refiner.trace(c["map"].float(), c["global"], cams, pts, normals, size)
    n = len(rounds)
    wts = [(r + 1) / (n * (n + 1) / 2) for r in range(n)]
    uvz_true = translation_to_uvz(true.t, true.K, size)
    rot = sum(w * rotation_deg(r.R, true.R).mean() for w, r in zip(wts, rounds, strict=True))
    pos = sum(w * (translation_to_uvz(r.t, r.K, size) - uvz_true).abs().mean()
              for w, r in zip(wts, rounds, strict=True))
    obs = sum(w * F.smooth_l1_loss(o, uv_true, beta=2.0) for w, o in zip(wts, observed, strict=True))
    return {"rot": rot, "pos": pos, "obs": obs, "total": rot + 100.0 * pos + 0.2 * obs,
            "final_deg": float(rotation_angle_deg(refined.R.detach(), true.R).mean())}


@torch.no_grad()
def evaluate_refiner(model: GLVD, val: dict) -> dict:
    """Median rotation error (deg, over views) of the camera head, the refiner on the template, and the
    refiner again on the descent's result; the final v2v error (mm) with the head's and the refined cameras."""
    model.eval()
    true = Cameras(val["K"], val["R"], val["t"])
    feats = model.encode(val["images"])
    prep = model.prepare(feats)
    R_h, t_h, _ = model.camera_head(feats, val["K"])
    head = Cameras(val["K"], R_h, t_h)
    pre = model.refine_cameras(prep, feats, head)
    xs_h, _ = model.descend(feats, head)
    xs_r, _ = model.descend(feats, pre)
    post = model.refine_cameras(prep, feats, pre, xs_r[:, -1], rounds=POST_DESCENT_ROUNDS)
    angles = {name: rotation_angle_deg(cams.R, true.R).flatten() for name, cams in (("head", head), ("pre", pre),
                                                                                    ("post", post))}
    med = {name: float(a.median()) for name, a in angles.items()}
    med["post_mean"] = float(angles["post"].mean())  # steadier than the median on a few dozen views: selects saves
    med["v2v_head"] = float(vertex_error_mm(xs_h[:, -1], val["vertices"]).mean())
    med["v2v_refined"] = float(vertex_error_mm(xs_r[:, -1], val["vertices"]).mean())
    model.train()
    return med


def refiner_provenance(prov: dict, step: dict) -> dict:
    """The model's provenance, kept whole, with this run under ``camera_refiner``."""
    out = {k: v for k, v in prov.items() if k not in ("path", "saved")}  # save_checkpoint stamps "saved"
    out["camera_refiner"] = step
    return out


def _line(v: dict) -> str:
    return (f"rotation median {v['head']:.2f} deg (head) -> {v['pre']:.2f} (refined on the template) -> "
            f"{v['post']:.2f} (again after the descent; mean {v['post_mean']:.2f}); v2v {v['v2v_head']:.3f} -> "
            f"{v['v2v_refined']:.3f} mm")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="glvd-train camera-refiner",
        description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--faces", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=40.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--head-frac", type=float, default=0.5,
                   help="share of chunks starting from the camera head's cameras (the rest: jittered true ones)")
    a, t0 = start(p, argv)
    assert a.out, "--out is required"
    torch.manual_seed(0)
    base, prov = load_checkpoint(a.checkpoint, torch.device("cpu"))
    cfg = base.cfg
    cfg.camera_refiner = True
    model = GLVD(cfg, base.template)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("camera_refiner.") for k in missing), (missing, unexpected)
    for q in model.parameters():
        q.requires_grad_(False)
    trainable = list(model.camera_refiner.parameters())
    for q in trainable:
        q.requires_grad_(True)
    model.eval()  # no dropout or norm statistics anywhere; eval keeps the frozen parts exactly as shipped
    cache = build_cache(model, a.kit, a.faces, 8, 3, CACHE_SEED, lambda m: print(m, flush=True), encode_chunk)
    cfg_v = SynthConfig(image_size=cfg.image_size)
    vals = {"1 view": SyntheticFaces(kit_path=a.kit, config=cfg_v, seed=VAL_SEED).sample(32, 1),
            "3 views": SyntheticFaces(kit_path=a.kit, config=cfg_v, seed=VAL_SEED + 1).sample(16, 3)}
    for name, val in vals.items():
        print(f"start, {name}: {_line(evaluate_refiner(model, val))}", flush=True)
    opt = torch.optim.Adam(trainable, lr=a.lr)
    gen = torch.Generator().manual_seed(1)
    best, it, t_train = float("inf"), 0, time.monotonic()
    run: dict[str, float] = {"rot": 0.0, "pos": 0.0, "obs": 0.0, "final_deg": 0.0, "n": 0}
    while time.monotonic() - t_train < a.minutes * 60:
        frac = (time.monotonic() - t_train) / (a.minutes * 60)
        for g in opt.param_groups:  # cosine decay to a tenth over the run
            g["lr"] = a.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
        out = refiner_loss(model, cache[int(torch.randint(len(cache), (), generator=gen))], gen, a.head_frac)
        opt.zero_grad(set_to_none=True)
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(trainable, 5.0)
        opt.step()
        it += 1
        for k in ("rot", "pos", "obs", "final_deg"):
            run[k] += float(out[k])
        run["n"] += 1
        if it % a.val_every == 0:
            n = run["n"]
            print(f"it {it}: loss rot {run['rot'] / n:.2f} deg, pos {run['pos'] / n:.4f}, obs {run['obs'] / n:.2f} px, "
                  f"final {run['final_deg'] / n:.2f} deg ({(time.monotonic() - t0) / 60:.1f} min)", flush=True)
            run = dict.fromkeys(run, 0.0)
            v = {name: evaluate_refiner(model, val) for name, val in vals.items()}
            for name, r in v.items():
                print(f"  val {name}: {_line(r)}", flush=True)
            score = v["1 view"]["post_mean"] + v["3 views"]["post_mean"]
            if score < best:
                best = score
                step = {"from": a.checkpoint, "commit": git_commit(), "iterations": it, "faces": a.faces,
                        "lr": a.lr, "head_frac": a.head_frac, "minutes": round((time.monotonic() - t_train) / 60, 1),
                        **{f"val_rot_{name.split()[0]}v_{k}_deg": round(r[k], 2)
                           for name, r in v.items() for k in ("head", "pre", "post")}}
                save_checkpoint(a.out, model, refiner_provenance(prov, step))
    print(f"done: {it} iterations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
