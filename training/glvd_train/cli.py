"""``glvd-train`` / ``python -m glvd_train``: train, evaluate, finetune-heads, camera-refiner.

The runtime's own command line (``glvd reconstruct|batch|worker|info``) has no training in it;
``train`` and ``evaluate`` take exactly the arguments ``glvd train`` / ``glvd evaluate`` took before the
split; ``finetune-heads`` and ``camera-refiner`` those of tools/finetune_heads.py and
tools/train_camera_refiner.py (the shipped recipe's fine-tuning stages, now modules of this package).
Exit codes: 0 success, 1 internal error, 2 usage or a setting that cannot work, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

#: subcommands whose options their module's ``main(argv)`` parses: name -> (module, help)
DELEGATED = {
    "cache": ("glvd_train.feature_cache", "build (or grow, resuming) the feature cache: renders with MediaPipe's "
              "landmarks and the identity descriptor computed once"),
    "ridge": ("glvd_train.descriptor_ridge", "fit baseline (f), the identity descriptor's ridge map to the kit's "
              "identity, on the feature cache"),
    "prior": ("glvd_train.prior_refit", "refit a checkpoint's identity prior (the descriptor ridge times the kit's "
              "identity basis) on the feature cache, the rest of the model unchanged"),
    "guided": ("glvd_train.guided_training", "train the fields to read the identity code and the landmarks, on "
               "the feature cache (whole unrolled descents; the encoder frozen)"),
    "expression": ("glvd_train.expression_training", "train the expression head (each photo's ARKit weights from "
                   "its landmarks) on projected landmark geometry, and attach it to a checkpoint"),
    "evaluate": ("glvd_train.evaluate", "evaluate checkpoints and baselines; writes docs/RESULTS.md"),
    "finetune-heads": ("glvd_train.finetune_heads", "fine-tune the keypoint and vertex modules on cached encoder "
                       "features, the encoder frozen (the shipped model's last stage: --unroll 10)"),
    "camera-refiner": ("glvd_train.camera_refiner_training", "train a checkpoint's camera refiner on cached "
                       "features, the rest of the model frozen"),
}


def _err(msg: str) -> None:
    print(f"glvd-train: {msg}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="glvd-train", description="GLVD Face training: train and evaluate the model "
                                "on synthetic renders of the ICT FaceKit.")
    p.add_argument("--version", action="version", version=f"glvd-train {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train GLVD on synthetic renders of the ICT FaceKit (resumes automatically)")
    t.add_argument("--out", default="runs/glvd", help="run folder (state.pt, model.pt, log.csv)")
    t.add_argument("--kit", default=None, help="ict_facekit_light.npz (default: $GLVD_KIT or ../shared/data/...)")
    t.add_argument("--minutes", type=float, default=110.0, help="wall-clock budget of this invocation")
    t.add_argument("--iterations", type=int, default=1_000_000, help="stop after this many iterations in total")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--workers", type=int, default=2, help="rendering processes (0: render in the training process)")
    t.add_argument("--device", default="cpu", help="where the model trains: cpu (default) or cuda")
    t.add_argument("--render-device", default="cpu",
                   help="where batches are rendered: cpu (default) or cuda (needs --workers 0)")
    t.add_argument("--reuse", type=int, default=2, help="iterations per rendered batch (rendering is the bottleneck)")
    t.add_argument("--path-start-prob", type=float, default=0.0,
                   help="share of starts part-way to the truth (0.75 = the recipe of the shipped checkpoint)")
    t.add_argument("--aux-weight", type=float, default=1.0, help="the training-only coefficient probe (0 = off)")
    t.add_argument("--lr", type=float, default=1e-3,
                   help="learning rate at iteration 0; it halves every 20,000 iterations (default 1e-3)")
    t.add_argument("--curriculum", type=int, nargs=2, default=(0, 0), metavar=("HOLD", "RAMP"),
                   help="render near-frontal, evenly lit, neutral faces for HOLD iterations, then widen to the "
                        "full distribution over RAMP iterations (default 0 0: full from the start)")
    t.add_argument("--no-guidance", action="store_true", help="train the LVD ablation (no keypoint module)")
    t.add_argument("--unroll", type=int, default=0, metavar="STEPS",
                   help="train on whole descents of STEPS steps from the template, the encoder included "
                        "(0: one step from a perturbed or own start; a GPU job)")
    t.add_argument("--rise-weight", type=float, default=30.0,
                   help="with --unroll: the penalty on a step that raises the batch's error")
    t.add_argument("--init-from", default=None,
                   help="continue training a model checkpoint (e.g. the shipped one) with a fresh optimizer")
    t.add_argument("--model", default="{}", help="JSON ModelConfig overrides, e.g. '{\"image_size\": 128}'")
    t.add_argument("--synth", default="{}", help="JSON SynthConfig overrides")
    t.add_argument("--save-every", type=float, default=180.0, help="seconds between checkpoints")
    t.add_argument("--val-every", type=float, default=600.0, help="seconds between validations")

    # the options of these belong to their modules' own parsers (glvd-train evaluate --help shows them)
    for name, (_, what) in DELEGATED.items():
        sub.add_parser(name, help=what, add_help=False)
    return p


def _train(a: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    model = json.loads(a.model)
    if a.no_guidance:
        model["guidance"] = False
    cfg = TrainConfig(out=a.out, kit=a.kit, minutes=a.minutes, iterations=a.iterations, batch=a.batch, seed=a.seed,
                      threads=a.threads, loader_workers=a.workers, model=model, synth=json.loads(a.synth),
                      save_every_s=a.save_every, val_every_s=a.val_every, init_from=a.init_from,
                      reuse=a.reuse, path_start_prob=a.path_start_prob, aux_weight=a.aux_weight,
                      curriculum=tuple(a.curriculum), device=a.device, render_device=a.render_device, lr=a.lr,
                      unroll=a.unroll, rise_weight=a.rise_weight)
    try:
        path = train(cfg, log=_err)
    except ValueError as exc:  # a setting that cannot work (e.g. --device cuda without a GPU)
        _err(f"error: {exc}")
        return 2
    _err(f"model written to {path}")
    return 0



def main(argv: list[str] | None = None) -> int:
    a, rest = _parser().parse_known_args(argv)
    if rest and a.cmd not in DELEGATED:
        _parser().parse_args(argv)  # the usual "unrecognized arguments" error and exit code 2
    from glvd.errors import GLVDError
    from glvd.cli import EXIT_CODES

    try:
        if a.cmd == "train":
            return _train(a)
        if a.cmd in DELEGATED:
            return importlib.import_module(DELEGATED[a.cmd][0]).main(rest)
    except GLVDError as exc:
        _err(str(exc))
        return EXIT_CODES.get(exc.code, 1)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    return 2
