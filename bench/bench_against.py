"""Reconstruction speed of this checkout against an older git revision, interleaved in one process.

This machine's speed drifts by up to 1.5x within seconds, so timings taken minutes apart do not
compare. Here the older revision's runtime package is extracted (``git archive``) and imported
under another name, both load the same checkpoint (or the old side ``--old-checkpoint``), and
their runs alternate on the same input: encode, cameras and the photo path's descent for a photo
without landmarks (``glvd.pose.descend_with_landmark_cameras``), medians per side and their ratio.

    python bench/bench_against.py 7fd953d [--runs 30] [--views 1 3] [--threads 1] [--old-checkpoint F]
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "vendor/glvd/glvd"


def import_revision(rev: str, into: Path, name: str = "glvd_old"):
    """The runtime package as it was at ``rev``, importable as ``name``."""
    tar = subprocess.run(["git", "-C", str(REPO), "archive", rev, PACKAGE], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(into, filter="data")
    (into / PACKAGE).rename(into / name)
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def alternating_medians(calls: dict[str, Callable[[], object]], runs: int, warmup: int = 2) -> list[float]:
    """Median seconds of each call over ``runs`` rounds that call them in turn, after ``warmup`` rounds."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(warmup + runs):
        for name, fn in calls.items():
            t = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return [statistics.median(times[k]) for k in calls]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the git revision to compare against")
    ap.add_argument("--checkpoint", default=None, help="default: this checkout's shipped checkpoint")
    ap.add_argument("--old-checkpoint", default=None,
                    help="the checkpoint the old revision loads (default: the same; give the old shipped file "
                         "when the new one has parts the old runtime does not know, such as a camera refiner)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--views", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore", UserWarning)
    import glvd.checkpoint as new_ckpt
    from glvd.cameras import default_intrinsics

    path = a.checkpoint or str(new_ckpt.default_checkpoint_path())
    with tempfile.TemporaryDirectory() as tmp:
        old = import_revision(a.rev, Path(tmp))
        old_ckpt = importlib.import_module(f"{old.__name__}.checkpoint")
        old_path = a.old_checkpoint or path
        models = {"this checkout": new_ckpt.load_checkpoint(path, torch.device("cpu"))[0],
                  a.rev: old_ckpt.load_checkpoint(old_path, torch.device("cpu"))[0]}
        # each side's own photo path without landmarks: cameras, descent, and whatever follows it
        poses = {"this checkout": importlib.import_module("glvd.pose"),
                 a.rev: importlib.import_module(f"{old.__name__}.pose")}
        S = models["this checkout"].cfg.image_size
        print(f"checkpoint {path} (old side: {old_path}), {S} px crops, 10 steps, {torch.get_num_threads()} torch "
              f"threads, {a.runs} alternating runs per side after warm-up")
        print("views  this checkout (ms)  " + f"{a.rev} (ms)".ljust(20) + "ratio (old / new)")
        with torch.inference_mode():
            for V in a.views:
                imgs = torch.rand(1, V, 3, S, S, generator=torch.Generator().manual_seed(V))
                K = default_intrinsics(S, S, focal_ratio=2.0).expand(1, V, 3, 3)
                def run(m, pose, imgs=imgs, K=K, V=V):
                    f = m.encode(imgs)
                    pose.descend_with_landmark_cameras(m, f, m.estimate_cameras(f, K), [None] * V)

                new, old_s = alternating_medians({k: partial(run, m, poses[k]) for k, m in models.items()}, a.runs)
                print(f"{V:5d}  {new * 1000:18.1f}  {old_s * 1000:18.1f}  {old_s / new:.2f}x")


if __name__ == "__main__":
    main()
