"""From a reconstruct request to the first step event, with a cold and with a prestarted worker.

The Blender panel starts the worker when it is first drawn; the worker says "ready" at once and
then loads torch, the model and the face detector in the background. This times what the artist
waits for: spawn + request at once (cold), and a request sent after the worker had time to warm
up (prestarted, the usual case). Medians over --runs fresh worker processes; the prestarted figure
is also given as a ratio to the cold one (same machine, same run).

    python bench/bench_worker.py [--runs 3] [--warm-wait 8] [--photo PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def first_step_s(photo: str, wait: float) -> dict[str, float]:
    """Seconds from the request to the ready / first step / result events of a fresh worker."""
    env = {**os.environ, "GLOG_minloglevel": "2"}
    t0 = time.perf_counter()
    pr = subprocess.Popen([sys.executable, "-m", "glvd", "worker", "--device", "cpu"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    marks: dict[str, float] = {}
    assert pr.stdin is not None and pr.stdout is not None
    if wait:
        time.sleep(wait)
        t0 = time.perf_counter()
    pr.stdin.write(json.dumps({"id": "r1", "cmd": "reconstruct", "images": [photo], "steps": 10,
                               "expressions": False}) + "\n")
    pr.stdin.flush()
    for line in pr.stdout:
        ev = json.loads(line)
        t = time.perf_counter() - t0
        if ev["event"] == "ready":
            marks.setdefault("ready", t)
        if ev["event"] == "step" and ev["step"] == 1:
            marks["first_step"] = t
        if ev["event"] in ("result", "error"):
            if ev["event"] == "error":
                raise SystemExit(f"worker error: {ev['message']}")
            marks["result"] = t
            break
    pr.stdin.write(json.dumps({"id": "r2", "cmd": "shutdown"}) + "\n")
    pr.stdin.flush()
    pr.wait(timeout=60)
    return marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warm-wait", type=float, default=8.0, help="seconds between spawn and request (prestarted)")
    ap.add_argument("--photo", default=None, help="default: scikit-image's astronaut")
    a = ap.parse_args()
    photo = a.photo
    if photo is None:
        from PIL import Image
        from skimage import data

        photo = str(Path(tempfile.mkdtemp()) / "astronaut.jpg")
        Image.fromarray(data.astronaut()).save(photo, quality=92)
    rows = {}
    for name, wait in (("cold (spawn + request at once)", 0.0), (f"prestarted ({a.warm_wait:g} s head start)",
                                                                 a.warm_wait)):
        runs = [first_step_s(photo, wait) for _ in range(a.runs)]
        rows[name] = {k: statistics.median(r[k] for r in runs) for k in ("first_step", "result")}
    cold = next(iter(rows.values()))["first_step"]
    print(f"worker, 1 photo, 10 steps, CPU; medians of {a.runs} fresh processes")
    for name, r in rows.items():
        print(f"  {name:38s} first step {r['first_step']:.2f} s ({r['first_step'] / cold:.2f}x cold), "
              f"result {r['result']:.2f} s")


if __name__ == "__main__":
    main()
