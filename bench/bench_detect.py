"""Face detection + landmarks per photo: the torch port (glvd.mediapipe_torch) against mediapipe 0.10.21.

Both run FaceMesh's static-image path (BlazeFace short range, then the landmark network on the
rotated face crop) on the same photos in this process, alternating call by call (this machine's
speed drifts within seconds), and print the median time per photo of each, their ratio, and how
far the port's landmarks are from mediapipe's (median / max px).

    python bench/bench_detect.py                 # packaged photos (+ ../shared identity photos), 478 points
    python bench/bench_detect.py --refine 0      # the 468-point model (what glvd.detect uses)
    python bench/bench_detect.py --threads 2 --runs 20 [--device cuda]

Figures only, no assertions. Without mediapipe installed only the port's times are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vendor" / "glvd"))
IDENTITY = REPO.parent / "shared" / "data" / "photos_identity"

from glvd.mediapipe_torch.pipeline import FaceMesh  # noqa: E402
from glvd.preprocess import load_image  # noqa: E402


def photos(max_identity: int) -> dict[str, np.ndarray]:
    from glvd_train.evaluate_photos import package_photos

    out = package_photos()
    for p in sorted(IDENTITY.glob("*.jpg"))[:max_identity]:
        out[p.stem] = load_image(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--refine", type=int, default=1, help="1: 478 points (attention model), 0: 468")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--identity", type=int, default=6, help="how many ../shared identity photos to add")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.setdefault("GLOG_minloglevel", "2")
    imgs = photos(a.identity)
    t = time.perf_counter()
    ours = FaceMesh(refine_landmarks=bool(a.refine), device=a.device)
    load_s = time.perf_counter() - t
    try:
        import mediapipe as mp

        ref = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                              refine_landmarks=bool(a.refine))
    except Exception:  # not installed (Python 3.13 has no wheel with the face models)
        ref = None
    print(f"torch {torch.__version__}, {a.threads} thread(s), device {a.device}; "
          f"{478 if a.refine else 468} points; port loads in {load_s:.2f} s; {len(imgs)} photos, {a.runs} runs each")

    def sync() -> None:
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    ours_all, ref_all = [], []
    for name, img in imgs.items():
        h, w = img.shape[:2]
        t_ours, t_ref = [], []
        for i in range(a.runs + 1):
            t = time.perf_counter()
            f = ours.process(img)
            sync()
            if i:
                t_ours.append(time.perf_counter() - t)
            if ref is not None:
                t = time.perf_counter()
                r = ref.process(img)
                if i:
                    t_ref.append(time.perf_counter() - t)
        mo = statistics.median(t_ours)
        ours_all.append(mo)
        line = f"{name:28s} {w}x{h}: port {mo * 1000:6.1f} ms"
        if ref is not None:
            mr = statistics.median(t_ref)
            ref_all.append(mr)
            line += f"  mediapipe {mr * 1000:6.1f} ms  port/mediapipe {mo / mr:5.1f}x"
            if f and r.multi_face_landmarks:
                b = np.array([(p.x * w, p.y * h) for p in r.multi_face_landmarks[0].landmark])
                d = np.linalg.norm(f[0].pixels - b, axis=1)
                line += f"  landmarks median {np.median(d):.4f} / max {d.max():.4f} px"
            else:
                line += f"  faces: port {len(f)}, mediapipe {len(r.multi_face_landmarks or [])}"
        print(line)
    summary = f"median over photos: port {statistics.median(ours_all) * 1000:.1f} ms"
    if ref_all:
        ratios = [o / r for o, r in zip(ours_all, ref_all, strict=True)]
        summary += (f", mediapipe {statistics.median(ref_all) * 1000:.1f} ms, "
                    f"port/mediapipe {statistics.median(ratios):.1f}x")
    print(summary)


if __name__ == "__main__":
    main()
