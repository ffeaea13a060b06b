"""``glvd-train finetune-heads``: fine-tune the keypoint and vertex modules on cached encoder features
(the encoder frozen).

On this 2-core CPU a training iteration is mostly rendering and the encoder. With the encoder,
the camera head and the feature projections frozen, their outputs for a fixed set of renders can
be computed once and the two field modules trained on them for many more iterations than full
training affords; the loss is `glvd_train.train.losses`' (one descent step from a perturbed template or
from the model's own state after k steps; true-but-jittered or estimated cameras), or with
``--unroll T`` the errors after every one of T steps of a full descent from the template,
back-propagated through the whole descent (later steps weighted more, rises penalised), which
teaches the descent to keep falling instead of jumping in one step and wobbling.

Usage: .venv/bin/glvd-train finetune-heads --checkpoint CKPT --out runs/heads/model.pt
           [--faces 2000] [--minutes 40] [--unroll 10 --rise-weight 10]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import time
from collections.abc import Callable
from typing import Any

import torch

from glvd.cameras import Cameras
from glvd.checkpoint import load_checkpoint, save_checkpoint
from glvd.encoder import FeatureMaps

from .report import start
from .synth import SynthConfig, SyntheticFaces
from .train import (
    VAL_SEED,
    field_losses,
    git_commit,
    jitter_cameras,
    unrolled_field_losses,
    validate,
)

CACHE_SEED = 50_000_000  # disjoint from training (seed * 1_000_003 + iteration), validation and evaluation seeds


@torch.no_grad()
def encode_fields(model, s: dict) -> dict:
    """What the field modules read of a batch of renders (their prepared maps), the head's cameras and the truth."""
    feats = model.encode(s["images"])
    R_p, t_p, _ = model.camera_head(feats, s["K"])
    prep = model.prepare(feats)
    return {"views": s["images"].shape[1], "kp_map": prep["kp"]["map"].clone(),
            "kp_global": prep["kp"]["global"].clone(), "v_map": prep["v"]["map"].clone(),
            "v_global": prep["v"]["global"].clone(), "K": s["K"], "R": s["R"], "t": s["t"], "R_p": R_p,
            "t_p": t_p, "gt": s["vertices"]}


@torch.no_grad()
def build_cache(model, kit: str | None, faces: int, chunk: int, max_views: int, seed: int, log,
                encode: Callable[[Any, dict], dict] = encode_fields) -> list[dict]:
    """Chunks of ``chunk`` faces with 1..max_views views, each rendered once and passed through ``encode``
    (default: the field modules' frozen features; glvd-train camera-refiner caches the refiner's)."""
    gen = SyntheticFaces(kit_path=kit, config=SynthConfig(image_size=model.cfg.image_size), seed=seed)
    rng = random.Random(seed)
    out, t0 = [], time.monotonic()
    for c in range(math.ceil(faces / chunk)):
        out.append(encode(model, gen.sample(chunk, rng.randint(1, max_views))))
        if (c + 1) % 25 == 0:
            log(f"cached {(c + 1) * chunk} faces ({time.monotonic() - t0:.0f} s)")
    return out


def _chunk_inputs(model, c: dict, gen: torch.Generator, subset: int, true_camera_frac: float):
    """Features, prepared maps, cameras (true-but-jittered or estimated) and a vertex subset of a chunk."""
    B, V = c["gt"].shape[0], c["views"]
    feats = FeatureMaps(maps=[], global_=c["v_global"], batch=B, views=V, size=model.cfg.image_size)
    prep = {"kp": {"map": c["kp_map"], "global": c["kp_global"]},
            "v": {"map": c["v_map"], "global": c["v_global"]}}
    cams = Cameras(c["K"], c["R"], c["t"])
    use_true = bool(torch.rand((), generator=gen) < true_camera_frac)
    cams = jitter_cameras(cams, gen) if use_true else Cameras(c["K"], c["R_p"], c["t_p"])
    idx = torch.randperm(c["gt"].shape[1], generator=gen)[:subset]
    return feats, prep, cams, idx


def step_loss(model, c: dict, gen: torch.Generator, subset: int, true_camera_frac: float, own_start_frac: float,
              absolute_weight: float, damping: float = 1.0) -> dict:
    """`glvd_train.train.losses` without the camera and probe terms, on one cached chunk (``damping``: see
    :func:`glvd_train.train.field_losses`)."""
    feats, prep, cams, idx = _chunk_inputs(model, c, gen, subset, true_camera_frac)
    out = field_losses(model, prep, feats, cams, c["gt"], idx, gen, 1.0, absolute_weight, own_start_frac, 0.0,
                       damping)
    out["total"] = out["vert"] + out["kp"]
    return out


def unrolled_loss(model, c: dict, gen: torch.Generator, subset: int, true_camera_frac: float,
                  absolute_weight: float, steps: int, rise_weight: float) -> dict:
    """:func:`glvd_train.train.unrolled_field_losses` on one cached chunk (its cameras and vertex subset drawn
    as :func:`step_loss` draws them)."""
    feats, prep, cams, idx = _chunk_inputs(model, c, gen, subset, true_camera_frac)
    return unrolled_field_losses(model, prep, feats, cams, c["gt"], idx, steps, absolute_weight, rise_weight)


def finetuned_provenance(prov: dict, step: dict, val: dict) -> dict:
    """The trained model's provenance, kept whole (a later `glvd-train train --init-from` reads its iterations and
    curriculum), with this fine-tune appended to its ``finetuned_heads`` list and the new validation."""
    out = {k: v for k, v in prov.items() if k not in ("path", "saved")}  # save_checkpoint stamps "saved"
    out["finetuned_heads"] = [*out.get("finetuned_heads", []), step]  # load_checkpoint gives a list
    out.update({k: v for k, v in val.items() if not isinstance(v, list)})
    return out


def _three_views(model, val3: dict) -> str:
    """The 3-view validation line: final error with the true and the camera head's cameras, and rises."""
    v = validate(model, val3)
    return (f"3 views {v['val_true_mm']:.3f} mm (true), {v['val_est_mm']:.3f} (est), "
            f"{_rises(v['val_est_steps'])} rises")


def _rises(errors: list[float]) -> int:
    """How many steps of a descent made the error worse."""
    return sum(b > a for a, b in itertools.pairwise(errors))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="glvd-train finetune-heads",
        description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--faces", type=int, default=2000)
    p.add_argument("--minutes", type=float, default=40.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--subset", type=int, default=2048)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--damping", type=float, default=1.0,
                   help="own starts from a damped descent (x += damping * step); 1 = the model's own descent")
    p.add_argument("--unroll", type=int, default=0,
                   help="train on full descents of this many steps from the template (0: one-step loss)")
    p.add_argument("--rise-weight", type=float, default=10.0, help="with --unroll: the penalty on rising errors")
    p.add_argument("--true-camera-frac", type=float, default=0.7,
                   help="share of chunks descended with the true (jittered) cameras; the rest use the camera head's")
    a, t0 = start(p, argv)
    assert a.out, "--out is required"
    torch.manual_seed(0)
    model, prov = load_checkpoint(a.checkpoint, torch.device("cpu"))
    model.train()
    trainable = [*model.keypoints.mlp.parameters(), model.keypoints.embed, *model.vertices.rel.parameters(),
                 *model.vertices.l2.parameters(), *model.vertices.l3.parameters(), model.vertices.vertex_embed]
    for q in model.parameters():
        q.requires_grad_(False)
    for q in trainable:
        q.requires_grad_(True)
    cache = build_cache(model, a.kit, a.faces, 8, 3, CACHE_SEED, print)
    val_gen = SyntheticFaces(kit_path=a.kit, config=SynthConfig(image_size=model.cfg.image_size), seed=VAL_SEED)
    val = val_gen.sample(32, 1)  # glvd-train train's validation faces
    # 3-view faces too: session 9's unrolled fine-tune gained with 1 view and lost 1% with 3 unseen
    val3 = SyntheticFaces(kit_path=a.kit, config=SynthConfig(image_size=model.cfg.image_size),
                          seed=VAL_SEED + 1).sample(16, 3)
    base = validate(model, val)
    print(f"start: val {base['val_true_mm']:.3f} mm (true cams), {base['val_est_mm']:.3f} (estimated); "
          f"steps {' '.join(f'{e:.3f}' for e in base['val_true_steps'])}; {_three_views(model, val3)}", flush=True)
    opt = torch.optim.Adam(trainable, lr=a.lr)
    gen = torch.Generator().manual_seed(1)
    best, it, t_train = base["val_true_mm"], 0, time.monotonic()
    run = {"vert": 0.0, "kp": 0.0, "n": 0}
    while time.monotonic() - t_train < a.minutes * 60:
        c = cache[int(torch.randint(len(cache), (), generator=gen))]
        if a.unroll:
            out = unrolled_loss(model, c, gen, a.subset, a.true_camera_frac, 0.1, a.unroll, a.rise_weight)
        else:
            out = step_loss(model, c, gen, a.subset, a.true_camera_frac, 0.5, 0.1, a.damping)
        opt.zero_grad(set_to_none=True)
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(trainable, 5.0)  # gradients through a whole descent can spike
        opt.step()
        it += 1
        for k in ("vert", "kp"):
            run[k] += float(out[k])
        run["n"] += 1
        if it % a.val_every == 0:
            v = validate(model, val)
            print(f"it {it}: loss vert {run['vert'] / run['n']:.4f} kp {run['kp'] / run['n']:.4f} cm; val "
                  f"{v['val_true_mm']:.3f} mm (true), {v['val_est_mm']:.3f} (est); steps "
                  f"{' '.join(f'{e:.3f}' for e in v['val_true_steps'])}; estimated cameras "
                  f"{' '.join(f'{e:.4f}' for e in v['val_est_steps'])}, {_rises(v['val_est_steps'])} rises; "
                  f"{_three_views(model, val3)} ({(time.monotonic() - t0) / 60:.1f} min)", flush=True)
            run = {"vert": 0.0, "kp": 0.0, "n": 0}
            # with --unroll every validation is kept (the step profile matters as much as the end)
            if v["val_true_mm"] < best or a.unroll:
                best = v["val_true_mm"]
                step = {"from": a.checkpoint, "commit": git_commit(), "iterations": it, "faces": a.faces,
                        "lr": a.lr, "unroll": a.unroll, "rise_weight": a.rise_weight,
                        "true_camera_frac": a.true_camera_frac, "minutes": round((time.monotonic() - t_train) / 60, 1)}
                save_checkpoint(a.out, model.eval(), finetuned_provenance(prov, step, v))
                model.train()
    print(f"done: {it} iterations, best val {best:.3f} mm (start {base['val_true_mm']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
