"""Can a fresh encoder read identity from the renders, and how much does the nuisance variation cost?

Trains the model's encoder architecture from scratch plus a linear head to regress the first six
identity coefficients (standardised, MSE) on a fixed set of renders, once per curriculum
difficulty (``SynthConfig.at_difficulty``: 0 = near-frontal, evenly lit, neutral, no degradation;
1 = the training distribution), with the same renders count, time and seed each, and reports the
held-out R^2 as training goes. This is the experiment behind ``glvd-train train --curriculum``.

Usage: .venv/bin/python -m research.learnability.learnability [--iterations 2400] [--renders 3072] [--image-size 128]
       [--out research/learnability/learnability.md]
"""

from __future__ import annotations

import argparse

from glvd.model import ModelConfig
from glvd_train.synth import SynthConfig, SyntheticFaces
from research.common import curriculum_options, finish, generated_by, learnability, start


SEED = 30_000_123  # disjoint from training, validation, evaluate and signal_budget


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    curriculum_options(p, [0.0, 1.0])
    p.add_argument("--image-size", type=int, default=ModelConfig().image_size,
                   help="crop size of the renders (the encoder is fully convolutional; the model uses 128)")
    a, t0 = start(p, argv)
    mcfg = ModelConfig()
    lines = ["# Learnability of identity from the renders", "",
             generated_by("research.learnability.learnability", argv), "",
             f"A fresh encoder of the model's architecture (widths {list(mcfg.encoder_widths)}, "
             f"{a.image_size} px crops) and a linear head regress the first 6 identity coefficients "
             f"(standardised, MSE; 1.0 = predicting the mean) on {a.renders:,} fixed renders, batch 16, "
             f"{a.iterations:,} iterations each; R^2 on 256 held-out renders of the same difficulty. "
             "Difficulty 0 = near-frontal (+-3 deg), one light, neutral expression, exact crop, no photo "
             "degradation; 1 = the training distribution (`SynthConfig()`); see `SynthConfig.at_difficulty`.", ""]
    for d in a.difficulties:
        cfg = SynthConfig(image_size=a.image_size).at_difficulty(d)
        gen = SyntheticFaces(kit_path=a.kit, config=cfg, seed=SEED)
        rows = learnability(gen, mcfg.encoder_widths, 0.0, n_train=a.renders, n_test=256, iterations=a.iterations)
        lines += [f"## Difficulty {d:g}", "", "| iterations | train loss | held-out R^2, identity modes 1-6 | mean |",
                  "|---|---|---|---|"]
        lines += [f"| {i} | {loss:.2f} | {', '.join(f'{v:.2f}' for v in r2)} | {sum(r2) / len(r2):.2f} |"
                  for i, loss, r2 in rows]
        lines.append("")
        print("\n".join(lines[-len(rows) - 5:]), flush=True)  # this difficulty's heading and table
    finish(lines, t0, a.threads, a.out, echo=a.out is None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
