"""Throughput of the synthetic data engine (glvd_train.synth): rendered crops per second.

Prints, for each stage and for the whole ``SyntheticFaces.sample`` call, the median
over repeated runs, and a machine-independent ratio against a fixed reference
workload (elementwise ops, gathers and a matmul) timed in the same process just
before every run, so a busy machine shows up in both.

    python bench/bench_render.py                 # 256x256, batch 16, 1 view, torch's default threads
    python bench/bench_render.py --threads 1     # as a single-threaded DataLoader worker sees it
    python bench/bench_render.py --size 192 --views 3 --repeats 7
    python bench/bench_render.py --against 66d28fc   # sample() against an older revision, interleaved

This machine's speed drifts by up to 1.5x within seconds; ``--against REV`` imports REV's runtime
package beside this checkout's (as bench/bench_against.py does) and alternates their ``sample``
calls on the same config and seed, which is the comparison to trust.

Needs the ICT kit (../shared/data/ict_facekit/ or $GLVD_KIT). Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vendor" / "glvd"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from glvd_train.synth import SynthConfig, SyntheticFaces  # noqa: E402
from glvd_train.synth.augment import augment  # noqa: E402
from glvd_train.synth.morphable import default_kit_path  # noqa: E402
from reference import reference_workload  # noqa: E402


def timed(fn, repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Run ``fn`` ``repeats`` times.

    Returns its wall times, its CPU times (this process, all threads) and the wall times of
    the reference workload taken just before each run.
    """
    fn()  # warm-up
    ts, cpu, refs = [], [], []
    for _ in range(repeats):
        refs.append(reference_workload())
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return ts, cpu, refs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--kit", default=None)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--against", default=None, help="also time REV's sample(), alternating with this checkout's")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = SynthConfig(image_size=args.size, augment=not args.no_augment)
    gen = SyntheticFaces(kit_path=args.kit, config=cfg, seed=0)
    B, V = args.batch, args.views
    n = B * V
    print(f"glvd_train.synth bench: {args.size}x{args.size}, batch {B} x {V} views, torch threads {torch.get_num_threads()}")

    # stages, on one fixed draw
    shapes = gen._shapes(B)
    verts = shapes["head_vertices"]
    K, R, t = gen._cameras(verts, V)
    albedo, hair = gen.appearance.sample(B, gen.gen)
    lights = gen._lights(n)
    spec = gen.appearance.spec_mask(hair)
    img = torch.rand(n, 3, args.size, args.size)
    stages = {
        "shapes": lambda: gen._shapes(B),
        "albedo": lambda: gen.appearance.sample(B, gen.gen),
        "render (raster+shade)": lambda: gen.render(verts, albedo, K, R, t, lights, spec),
        "backgrounds": lambda: gen.backgrounds.sample(n, gen.gen),
        "augment": lambda: augment(img.clone(), gen.gen, cfg.augment_config),
    }
    med = statistics.median
    print(f"{'stage':24s} {'wall ms/view':>12s} {'cpu ms/view':>12s} {'x ref':>7s}")
    for name, fn in stages.items():
        ts, cpu, refs = timed(fn, args.repeats)
        ratio = med(t / r for t, r in zip(ts, refs, strict=True)) / n
        print(f"{name:24s} {med(ts) / n * 1000:12.1f} {med(cpu) / n * 1000:12.1f} {ratio:7.3f}")

    ts, cpu, refs = timed(lambda: gen.sample(B, V), args.repeats)
    ratio = med(n / t * r for t, r in zip(ts, refs, strict=True))
    print(f"{'sample() total':24s} {med(ts) / n * 1000:12.1f} {med(cpu) / n * 1000:12.1f} {1 / ratio:7.3f}")
    print(f"views/s (wall clock): {n / med(ts):.1f}   (median of {args.repeats} runs of {n} views)")
    print(f"views per CPU-second: {n / med(cpu):.1f}   (= views/s of one thread on an otherwise idle core)")
    print(f"reference workload: {med(refs) * 1000:.1f} ms; views per reference-second: {ratio:.2f}")
    if args.against:
        against(args, cfg, n)
    la = Path("/proc/loadavg")
    print(f"load average: {' '.join(la.read_text().split()[:3]) if la.exists() else '?'}")


def against(args, cfg: SynthConfig, n: int) -> None:
    """Median ``sample`` time of this checkout and of ``args.against``, their calls alternating."""
    from bench_against import alternating_medians, import_revision

    with tempfile.TemporaryDirectory() as tmp:
        old = import_revision(args.against, Path(tmp))
        old_synth = importlib.import_module(f"{old.__name__}.synth")
        kit = args.kit or str(default_kit_path())  # the extracted copy would look beside itself
        gens = [SyntheticFaces(kit_path=kit, config=cfg, seed=0),
                old_synth.SyntheticFaces(kit_path=kit, config=old_synth.SynthConfig(
                    image_size=args.size, augment=not args.no_augment), seed=0)]
        runs = 2 * args.repeats
        new, old_s = alternating_medians({str(i): partial(g.sample, args.batch, args.views)
                                          for i, g in enumerate(gens)}, runs, warmup=1)
        print(f"against {args.against} ({runs} alternating calls each): this checkout "
              f"{n / new:.1f} views/s, {args.against} {n / old_s:.1f} views/s, ratio {old_s / new:.2f}x")


if __name__ == "__main__":
    main()
