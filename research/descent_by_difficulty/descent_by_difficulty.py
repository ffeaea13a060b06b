"""Aligned vertex error after every descent step, per checkpoint and per curriculum difficulty.

Shows where a model reads the face and where its descent drifts: the same held-out faces are
rendered at each difficulty (``SynthConfig.at_difficulty``; 0 = near-frontal, one light, neutral,
no degradation; 1 = the training distribution) and descended with the true cameras. At
difficulty 1 a second table splits the faces by the head's yaw (where a model helps and where not).

Usage: .venv/bin/python -m research.descent_by_difficulty.descent_by_difficulty CKPT [CKPT ...] [--difficulties 0 0.5 1]
       [--faces 24] [--out research/descent_by_difficulty/curriculum.md]
"""

from __future__ import annotations

import argparse

import torch

from glvd.cameras import Cameras, head_yaw_deg
from glvd.checkpoint import load_checkpoint
from glvd_train.metrics import vertex_error_mm
from glvd_train.synth import SynthConfig, SyntheticFaces
from research.common import YAW_BINS, finish, generated_by, start

SEED = 30_000_777  # disjoint from training, validation, evaluate and the other tools


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--difficulties", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--faces", type=int, default=24)
    a, t0 = start(p, argv)
    models = [(c, *load_checkpoint(c)) for c in a.checkpoints]
    size = models[0][1].cfg.image_size
    lines = ["# Descent error by curriculum difficulty", "",
             generated_by("research.descent_by_difficulty.descent_by_difficulty", argv), "",
             f"{a.faces} held-out faces (seed {SEED}), 1 view, {size} px, true cameras; face-area v2v in mm after "
             "similarity alignment, after each step (0 = the template).", "",
             "| difficulty | checkpoint (iterations) | " + " | ".join(str(i) for i in range(11)) + " |",
             "|---|---|" + "---|" * 11]
    by_yaw: list[str] = []
    for d in a.difficulties:
        gen = SyntheticFaces(kit_path=a.kit, config=SynthConfig(image_size=size).at_difficulty(d), seed=SEED)
        s = gen.sample(a.faces, 1)
        yaw = head_yaw_deg(s["R"][:, 0])
        for path, model, prov in models:
            with torch.no_grad():
                xs, _ = model.descend(model.encode(s["images"]), Cameras(s["K"], s["R"], s["t"]))
            per_face = torch.stack([vertex_error_mm(xs[:, i], s["vertices"]) for i in range(xs.shape[1])], 1)
            errs = per_face.mean(0).tolist()  # (T+1,)
            best = min(range(len(errs)), key=errs.__getitem__)
            cells = [f"**{e:.2f}**" if i == best else f"{e:.2f}" for i, e in enumerate(errs)]
            name = f"`{path}` ({prov.get('iterations', '?')})"
            lines.append(f"| {d:g} | {name} | " + " | ".join(cells) + " |")
            if d == 1.0:
                by_yaw.append(f"| {name} | " + " | ".join(
                    f"{per_face[k, -1].mean():.2f} vs {per_face[k, 0].mean():.2f} (n={int(k.sum())})"
                    for k in ((yaw >= lo) & (yaw < hi) for lo, hi in YAW_BINS)) + " |")
    if by_yaw:
        lines += ["", "Difficulty 1 by the head's yaw from the camera: after step 10 vs the template (step 0).", "",
                  "| checkpoint (iterations) | " + " | ".join(f"yaw {lo}-{hi} deg" for lo, hi in YAW_BINS) + " |",
                  "|---|" + "---|" * len(YAW_BINS), *by_yaw]
    lines.append("")
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
