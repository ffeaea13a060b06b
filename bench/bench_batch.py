"""Many photos from the command line: ``glvd batch`` (one process) against a shell loop of ``glvd reconstruct``.

Writes the sample photos (astronaut, grace_hopper, LFW faces upscaled) to a temporary folder, then times
both ways over the same photos, alternating, and prints the wall time per face (median over repeats) and
their ratio. Every process starts cold, as a user's would.

    python bench/bench_batch.py [--photos 8] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from glvd_train.evaluate_photos import sample_photos


def _run(args: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "glvd", *args], capture_output=True, text=True)
    if r.returncode not in (0, 4, 7):  # no face in a photo (4 alone, 7 in a batch): reported, part of the work
        raise SystemExit(f"glvd {' '.join(args[:2])} failed ({r.returncode}): {r.stderr[-500:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for name, img in sample_photos(max(0, a.photos - 2))[: a.photos]:
            paths.append(tmp / f"{name}.jpg")
            Image.fromarray(img).save(paths[-1], quality=92)
        common = ["--format", "glb", "--device", a.device, "-q"]
        batch_s, loop_s = [], []
        for k in range(a.repeats):
            batch_s.append(_run(["batch", *map(str, paths), "-o", str(tmp / f"batch{k}"), *common]) / len(paths))
            t = 0.0
            for p in paths:
                t += _run(["reconstruct", str(p), "-o", str(tmp / f"loop{k}" / f"{p.stem}.glb"), "--device",
                           a.device, "-q"])
            loop_s.append(t / len(paths))
    b, lp = statistics.median(batch_s), statistics.median(loop_s)
    print(f"{len(paths)} photos, {a.repeats} repeats, device {a.device}")
    print(f"glvd batch (one process):        {b:.2f} s per face (median)")
    print(f"loop of glvd reconstruct:        {lp:.2f} s per face (median)")
    print(f"batch / loop: {b / lp:.2f}x the time ({lp / b:.1f}x faster)")


if __name__ == "__main__":
    main()
