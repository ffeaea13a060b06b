"""Where the real-photo inconsistency comes from: which input makes two photos of one person differ.

On ``../shared/data/photos_identity`` (25 photos, 9 people; evaluation only, never trained on) the shipped
model's neutral faces are 0.75x as far apart within a person as between people, the descriptor's ridge
(baseline (f)) 0.35-0.45. This measures the within/between ratio (glvd_train.photo_consistency.spread) at
every descent step, and with one input of the descent taken away at a time:

- the landmarks the keypoint module reads (hidden: NaN, as for a view where none were found; the camera is
  still placed by them),
- the identity code (zeros: the descent starts from the prior's face of an unknown person),
- the identity code replaced by the mean of the person's photos' codes (an oracle: what a perfectly
  consistent code would give),
- the image: the encoder's feature maps and global feature of a flat grey crop (the descent sees only the
  identity code and the landmarks).

Usage: .venv/bin/python -m research.photo_consistency_sources.photo_consistency_sources
       [--out research/photo_consistency_sources/photo_consistency_sources.md]
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np
import torch

from glvd.api import Reconstructor
from glvd_train.photo_consistency import default_photos_dir, spread
from research.common import finish, generated_by, start


def people_of(paths: list[Path]) -> list[str]:
    return [p.name.split("_")[1] for p in paths]


@contextlib.contextmanager
def patched_guidance(rec: Reconstructor, change):
    """``rec.guidance`` with ``change(guidance, path)`` applied to what it returns (this tool only)."""
    original = rec.guidance
    current = {"path": None}

    def guidance(views, images):
        return change(original(views, images), current["path"])

    rec.guidance = guidance
    try:
        yield current
    finally:
        rec.guidance = original


@contextlib.contextmanager
def grey_image(rec: Reconstructor):
    """The encoder sees a flat grey crop (the identity code and the landmarks come from the real photo)."""
    original = rec.model.encode

    def encode(crops):
        return original(torch.full_like(crops, 0.5))

    rec.model.encode = encode
    try:
        yield
    finally:
        rec.model.encode = original


def run_all(rec: Reconstructor, paths: list[Path], current: dict | None = None) -> list[np.ndarray]:
    """Per photo the neutral vertices at every step ``(T+1, N, 3)`` in mm."""
    out = []
    for p in paths:
        if current is not None:
            current["path"] = p
        out.append(rec.reconstruct([str(p)]).vertices * 1000.0)
    return out


def ratios_by_step(names: list[str], runs: list[np.ndarray]) -> list[dict]:
    return [spread(names, [r[t] for r in runs]) for t in range(runs[0].shape[0])]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--quick", action="store_true", help="only the checkpoint as it is and its landmarks hidden")
    args, t0 = start(ap, argv)
    args.out = args.out or "research/photo_consistency_sources/photo_consistency_sources.md"
    paths = sorted((args.photos or default_photos_dir()).glob("person_*"))
    names = people_of(paths)
    rec = Reconstructor(args.checkpoint, device="cpu")

    # the person's mean identity code (the oracle row): the codes of all their photos first
    codes: dict[Path, torch.Tensor] = {}
    with patched_guidance(rec, lambda g, p: (codes.__setitem__(p, g.identity.clone()), g)[1]) as cur:
        base = run_all(rec, paths, cur)
    person_code = {n: torch.stack([codes[p] for p, m in zip(paths, names, strict=True) if m == n]).mean(0)
                   for n in set(names)}

    def no_landmarks(g, p):
        g.landmarks = torch.full_like(g.landmarks, float("nan"))
        return g

    def no_identity(g, p):
        g.identity = torch.zeros_like(g.identity)
        return g

    def person_identity(g, p):
        g.identity = person_code[p.name.split("_")[1]].clone()
        return g

    variants = {"shipped": base}
    changes = [("landmarks hidden from the descent", no_landmarks), ("identity code zeroed", no_identity),
               ("identity code = the person's mean code (oracle)", person_identity)]
    for label, change in changes[:1] if args.quick else changes:
        with patched_guidance(rec, change) as cur:
            variants[label] = run_all(rec, paths, cur)
    if not args.quick:
        with grey_image(rec):
            variants["grey image (code and landmarks only)"] = run_all(rec, paths)
        with grey_image(rec), patched_guidance(rec, no_landmarks) as cur:
            variants["grey image, landmarks hidden (code only)"] = run_all(rec, paths, cur)

    lines = ["# Where the real-photo inconsistency comes from", "",
             generated_by("research.photo_consistency_sources.photo_consistency_sources", argv), "",
             f"{len(paths)} photos of {len(set(names))} people (`{default_photos_dir().name}`), each "
              "reconstructed alone (1 view, the photo path's cameras), the neutral face area; within / between as "
              "in `glvd_train.photo_consistency` (similarity-aligned onto the mean, mm). Checkpoint: "
              f"`{rec.checkpoint_path}`.", "",
              "## The ratio at every step (step 0: the identity prior's face)", "",
              "| variant | " + " | ".join(str(t) for t in range(base[0].shape[0])) + " |",
              "|---|" + "---|" * base[0].shape[0]]
    final = {}
    for label, runs in variants.items():
        by_step = ratios_by_step(names, runs)
        final[label] = by_step[-1]
        lines.append(f"| {label} | " + " | ".join(f"{r['ratio']:.2f}" for r in by_step) + " |")
    lines += ["", "## The last step", "", "| variant | within (mm) | between (mm) | ratio | moved from shipped (mm) |",
              "|---|---|---|---|---|"]
    for label, r in final.items():
        moved = np.mean([np.linalg.norm(a[-1] - b[-1], axis=1).mean() for a, b in zip(variants[label], base,
                                                                                      strict=True)])
        lines.append(f"| {label} | {r['within_mm']:.2f} | {r['between_mm']:.2f} | {r['ratio']:.2f} | {moved:.2f} |")
    finish(lines, t0, args.threads, args.out)


if __name__ == "__main__":
    main()
