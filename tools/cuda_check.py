"""Does the runtime compute the same on CUDA as on the CPU, and does a CUDA graph replay match eager?

For a lent GPU machine (it cannot run here). On held-out renders (1 view and 3 views) it runs what the
runtime does without a detector's landmarks (glvd.cuda_graph.eager_reconstruction: camera head and refiner,
the descent, the refiner once more) on the CPU and on CUDA, and as a CUDA graph, and prints the largest
differences, the rotation errors of the camera head and the refined cameras on CUDA, and the final vertex
error against the truth. Exits 1 when CUDA and the CPU disagree beyond float tolerance.

    python3 tools/cuda_check.py [--checkpoint PATH] [--kit KIT]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vendor" / "glvd"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import torch  # noqa: E402

from glvd.cameras import rotation_angle_deg  # noqa: E402
from glvd.checkpoint import default_checkpoint_path, load_checkpoint  # noqa: E402
from glvd.cuda_graph import GraphedPipeline, eager_reconstruction  # noqa: E402
from glvd_train.metrics import vertex_error_mm  # noqa: E402
from glvd_train.synth import SynthConfig, SyntheticFaces  # noqa: E402

#: CPU vs CUDA (TF32 off): float32 round-off through ten steps; a real mismatch is millimetres or degrees
MAX_VERTEX_DIFF_MM = 0.05
MAX_ROTATION_DIFF_DEG = 0.05


def _diffs(a, b) -> tuple[float, float]:
    """Largest final-vertex difference (mm) and rotation difference (deg) of two reconstructions."""
    (xa, _, ca), (xb, _, cb) = a, b
    v = float((xa[:, -1].cpu() - xb[:, -1].cpu()).norm(dim=-1).max()) * 1000
    # ||Ra - Rb||_F / sqrt(2) is the angle between them (radians) while small; acos of the trace bottoms out
    # at ~0.03 deg in float32
    r = float((ca.R.cpu().double() - cb.R.cpu().double()).flatten(-2).norm(dim=-1).max()) / 2 ** 0.5 * 57.2958
    return v, r


def _runtime_check(synth: SyntheticFaces, checkpoint: str | None, device: str, runs: int = 10) -> bool:
    """glvd.Reconstructor on CUDA with and without CUDA graphs, on renders as photos (the detector, the photo
    path's PnP where it finds landmarks): the same result, and the median time of each (same process).
    Skipped, with the reason, where the machine has no working face detector."""
    import statistics
    import time

    from glvd.api import Reconstructor

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    s = synth.sample(1, 3)
    photos = [(s["images"][0, v].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy() for v in range(3)]
    ok = True
    for views in (1, 3):
        results, times = {}, {}
        for graphs in (False, True):
            try:
                rec = Reconstructor(checkpoint, device=device, cuda_graphs=graphs)
                results[graphs] = rec.reconstruct(photos[:views])
                ts = []
                for _ in range(runs):
                    sync()
                    t = time.perf_counter()
                    rec.reconstruct(photos[:views])
                    sync()
                    ts.append((time.perf_counter() - t) * 1000)
                times[graphs] = statistics.median(ts)
            except Exception as e:  # no usable face detector on this machine (OpenCV, MediaPipe): say so
                print(f"runtime (Reconstructor) not checked: {type(e).__name__}: {e}")
                return True
        e, g = results[False], results[True]
        dv = float(abs(e.vertices[-1] - g.vertices[-1]).max()) * 1000
        dr = float(abs(e.cameras["R"] - g.cameras["R"]).max())
        ok &= dv <= MAX_VERTEX_DIFF_MM and dr <= 1e-3 and e.camera_sources == g.camera_sources
        print(f"runtime (Reconstructor on renders as photos), {views} view(s), cameras {g.camera_sources}: "
              f"graphs vs eager max |dv| {dv:.4f} mm, max |dR| {dr:.2e}; median reconstruct() "
              f"{times[False]:.1f} ms eager, {times[True]:.1f} ms with graphs ({times[False] / times[True]:.2f}x)")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--kit", default=None, help="ict_facekit_light.npz (default: $GLVD_KIT or ../shared)")
    ap.add_argument("--faces", type=int, default=12)
    ap.add_argument("--device", default="cuda", help="cpu: a rehearsal of this script (CPU against itself, no graph)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("cuda_check: no CUDA device", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore", UserWarning)
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 with float32
    torch.backends.cudnn.allow_tf32 = False
    ckpt = a.checkpoint or default_checkpoint_path()
    cpu, _ = load_checkpoint(ckpt, torch.device("cpu"))
    gpu, _ = load_checkpoint(ckpt, dev)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU rehearsal"
    print(f"torch {torch.__version__}, {name}, refiner {gpu.camera_refiner is not None}")
    synth = SyntheticFaces(config=SynthConfig(image_size=cpu.cfg.image_size), seed=77_000_001,
                           **({"kit_path": a.kit} if a.kit else {}))
    ok = True
    for views in (1, 3):
        s = synth.sample(a.faces, views)
        imgs, K = s["images"], s["K"]
        on_cpu = eager_reconstruction(cpu, imgs, K)
        on_gpu = eager_reconstruction(gpu, imgs.to(dev), K.to(dev))
        v, r = _diffs(on_cpu, on_gpu)
        ok &= v <= MAX_VERTEX_DIFF_MM and r <= MAX_ROTATION_DIFF_DEG
        with torch.no_grad():
            R_head = gpu.camera_head(gpu.encode(imgs.to(dev)), K.to(dev))[0].cpu()
        head = float(rotation_angle_deg(R_head, s["R"]).median())
        final = float(rotation_angle_deg(on_gpu[2].R.cpu(), s["R"]).median())
        err = float(vertex_error_mm(on_gpu[0][:, -1].cpu(), s["vertices"]).mean())
        print(f"{views} view(s), {a.faces} faces: CPU vs CUDA max |dv| {v:.4f} mm, max rotation diff {r:.4f} deg; "
              f"CUDA median rotation error head {head:.2f} -> refined {final:.2f} deg; v2v {err:.2f} mm")
        for sparse in (True, False) if dev.type == "cuda" else ():
            try:
                g = GraphedPipeline(gpu, a.faces, views, sparse_normals=sparse)
                replay = g.reconstruct(imgs.to(dev), K.to(dev))
                replay2 = g.reconstruct(imgs.to(dev), K.to(dev))
            except Exception as e:  # report and try the other normals
                print(f"  CUDA graph (sparse normals {sparse}): capture failed: {type(e).__name__}: {e}")
                continue
            gv, gr = _diffs(on_gpu, replay)
            rv, _ = _diffs(replay, replay2)
            ok &= gv <= MAX_VERTEX_DIFF_MM and gr <= MAX_ROTATION_DIFF_DEG
            print(f"  CUDA graph (sparse normals {sparse}) vs eager CUDA: max |dv| {gv:.4f} mm, rotation {gr:.4f} deg; "
                  f"replay vs replay {rv:.4f} mm")
    ok &= _runtime_check(synth, a.checkpoint, dev.type, runs=10 if dev.type == "cuda" else 2)
    print("cuda_check:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
