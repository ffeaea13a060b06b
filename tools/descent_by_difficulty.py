"""Aligned vertex error after every descent step, per checkpoint and per curriculum difficulty.

Shows where a model reads the face and where its descent drifts: the same held-out faces are
rendered at each difficulty (``SynthConfig.at_difficulty``; 0 = near-frontal, one light, neutral,
no degradation; 1 = the training distribution) and descended with the true cameras.

Usage: .venv/bin/python tools/descent_by_difficulty.py CKPT [CKPT ...] [--difficulties 0 0.5 1]
       [--faces 24] [--out docs/curriculum.md]
"""

from __future__ import annotations

import argparse

import torch

from glvd.cameras import Cameras
from glvd.checkpoint import load_checkpoint
from glvd.synth import SynthConfig, SyntheticFaces
from glvd.train import descent_errors_mm
from report import finish, generated_by, start

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
             generated_by("descent_by_difficulty.py", argv), "",
             f"{a.faces} held-out faces (seed {SEED}), 1 view, {size} px, true cameras; face-area v2v in mm after "
             "similarity alignment, after each step (0 = the template).", "",
             "| difficulty | checkpoint (iterations) | " + " | ".join(str(i) for i in range(11)) + " |",
             "|---|---|" + "---|" * 11]
    for d in a.difficulties:
        gen = SyntheticFaces(kit_path=a.kit, config=SynthConfig(image_size=size).at_difficulty(d), seed=SEED)
        s = gen.sample(a.faces, 1)
        for path, model, prov in models:
            with torch.no_grad():
                errs = descent_errors_mm(model, model.encode(s["images"]), Cameras(s["K"], s["R"], s["t"]),
                                         s["vertices"])
            best = min(range(len(errs)), key=errs.__getitem__)
            cells = [f"**{e:.2f}**" if i == best else f"{e:.2f}" for i, e in enumerate(errs)]
            lines.append(f"| {d:g} | `{path}` ({prov.get('iterations', '?')}) | " + " | ".join(cells) + " |")
    lines.append("")
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
