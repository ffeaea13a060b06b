"""``glvd-train evaluate``: GLVD against its baselines on held-out synthetic faces; writes docs/RESULTS.md.

Test sets come from :class:`glvd_train.synth.SyntheticFaces` with seeds disjoint from training
(training uses ``seed * 1_000_003 + iteration``, validation ``10_000_019``; here ``20_000_000+``):
held-out identities with the training distribution, and an out-of-PCA set
(:meth:`SynthConfig.out_of_pca`). Every face is drawn with 3 views; the 1-view rows use its first
view, so 1- and 3-view rows score the same faces.

Metrics (millimetres, after a similarity (Procrustes) alignment of the prediction onto the ground
truth, :func:`glvd_train.metrics.similarity_align`):
- ``v2v``: mean per-vertex error on the face area (9,409 vertices; aligned on them) and on the
  narrow face area (the first ``template.narrow_count`` vertices; aligned on those);
- ``surf``: symmetric surface error, point-to-triangle (mean of predicted vertices -> GT surface and
  GT vertices -> predicted surface; exact distances, :mod:`glvd_train.surface`), face-area alignment;
- ``lm68``: error at the 68 landmark vertices, face-area alignment;
- the face-area ``v2v`` after every descent step (step 0 = the template);
- camera rotation error (degrees) of estimated cameras.

The parts: this module holds the command line; :mod:`glvd_train.evaluate_runner` runs and scores every method
(an :class:`~glvd_train.evaluate_results.Evaluation`), :mod:`glvd_train.evaluate_targets` holds the targets in one
table, :mod:`glvd_train.evaluate_report` writes docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from .evaluate_report import render_report, write_plot
from .evaluate_runner import EvaluationError, run, say


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glvd-train evaluate",
                                description="Evaluate GLVD and its baselines; writes RESULTS.md")
    p.add_argument("--checkpoint", default=None, help="default: runs/glvd/model.pt if present, else the shipped one")
    p.add_argument("--ablation", default="runs/lvd/model.pt", help="the LVD ablation checkpoint (glvd-train train "
                   "--no-guidance); default runs/lvd/model.pt")
    p.add_argument("--kit", default=None, help="ict_facekit_light.npz (default: $GLVD_KIT or ../shared/data/...)")
    p.add_argument("--canonical", default=None, help="MediaPipe canonical_face_model.obj (default ../shared/...)")
    p.add_argument("--samples", type=int, default=64,
                   help="faces per test set (default 64: 8 swing by more than the effects measured)")
    p.add_argument("--ridge", default=None, help="baseline (f)'s map (glvd-train ridge); default "
                   "runs/descriptor_ridge.npz, else fitted on --cache, else (f) is skipped")
    p.add_argument("--cache", default="runs/cache", help="feature cache (glvd-train cache) to fit (f) on")
    p.add_argument("--photos-identity", default=None, help="real photos of the same people (default "
                   "../shared/data/photos_identity): the real-photo consistency rows; 'none' skips them")
    p.add_argument("--views", type=int, nargs="+", default=[1, 3], help="view counts (default 1 3)")
    p.add_argument("--steps", type=int, default=None, help="descent steps (default: the checkpoint's)")
    p.add_argument("--out", default="docs/RESULTS.md")
    p.add_argument("--plot", default=None, help="error-per-step PNG (default: results_steps.png beside --out)")
    p.add_argument("--skip-slow", action="store_true", help="drop the analysis-by-synthesis baseline")
    p.add_argument("--abs-samples", type=int, default=4, help="faces per view count fitted by (c) (default 4)")
    p.add_argument("--abs-steps", type=int, default=300,
                   help="gradient steps of (c) (default 300: the issue's \"a few hundred\")")
    p.add_argument("--no-mediapipe", action="store_true", help="GT landmarks + 2 px noise for (b); no (e)")
    p.add_argument("--surface-points", type=int, default=3000,
                   help="vertices per direction for the surface error (0 = all 9,409; default 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--photos", type=int, default=0, metavar="LFW",
                   help="also score real photos (astronaut, grace_hopper and the first LFW lfw_subset faces) "
                        "against MediaPipe and dlib, with overlays beside --out (default 0: skip)")
    return p


def main(argv: list[str]) -> int:
    p = _parser()
    argv = list(argv)
    if argv[:1] == ["--"]:  # `glvd-train evaluate -- --samples 4`: the CLI's remainder keeps the separator
        argv = argv[1:]
    a = p.parse_args(argv)
    if a.samples < 1 or not a.views or min(a.views) < 1:
        p.error("--samples and --views must be positive")
    torch.set_num_threads(a.threads)
    command = " ".join(["glvd-train evaluate", *(shlex.quote(x) for x in argv)])
    t_start = time.perf_counter()
    try:
        ev = run(a, command, t_start)
    except EvaluationError as exc:
        say(str(exc))
        return exc.code
    out = Path(a.out)
    plot = Path(a.plot) if a.plot else out.with_name("results_steps.png")
    plot_ok = write_plot(plot, ev.curves, a.views)
    text = render_report(ev, plot if plot_ok else None, out)
    if a.photos:
        from glvd.api import Reconstructor

        from .evaluate_photos import evaluate_photos, report

        overlays = out.parent / "overlays"
        scores, dlib_why = evaluate_photos(Reconstructor(Path(ev.info["checkpoint"]), device="cpu"), overlays,
                                           a.photos, log=say)
        text += "\n" + report(scores, dlib_why, overlays, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    say(f"wrote {out} in {ev.info['total_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
