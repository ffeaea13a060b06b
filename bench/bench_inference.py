"""Inference speed and memory of the GLVD runtime (CPU, or CUDA when present).

Prints medians over repeated runs after warm-up, the split between encoder,
keypoint module and vertex module, peak RSS, and every figure as a ratio to a
fixed reference workload (a 512x512 float32 matmul) timed in the same process,
so figures from a busy machine can still be compared.

    python bench/bench_inference.py [--checkpoint PATH] [--runs 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import warnings

import torch

from glvd.cameras import default_intrinsics
from glvd.checkpoint import default_checkpoint_path, load_checkpoint
from glvd.cuda_graph import GraphedPipeline, eager_reconstruction
from glvd.expression import expression_offsets


def _median_ms(fn, runs: int, sync) -> float:
    ts = []
    for _ in range(runs):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=0, help="faces in the batched-throughput row (0: 32 on CUDA, 4 on CPU)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    warnings.simplefilter("ignore", UserWarning)
    model, prov = load_checkpoint(a.checkpoint or default_checkpoint_path(), dev)
    S = model.cfg.image_size
    print(f"checkpoint {prov.get('path')} (trained={prov.get('trained')}), crop {S}px, "
          f"{model.template.num_vertices} vertices, {a.steps} steps, device {dev}, threads {torch.get_num_threads()}")

    ref_a = torch.randn(512, 512, device=dev)
    ref_ms = _median_ms(lambda: ref_a @ ref_a, max(a.runs, 20), sync)
    K_crop = default_intrinsics(S, S, focal_ratio=2.0).to(dev)  # a crop of a telephoto-ish portrait
    rows, graph_rows = [], []
    cuda = dev.type == "cuda"
    with torch.inference_mode():
        for views in (1, 4):
            imgs = torch.rand(1, views, 3, S, S, device=dev)
            K = K_crop.expand(1, views, 3, 3)

            g = synthetic_guidance(model, 1, views, S, dev)

            def full(imgs=imgs, K=K, g=g):  # what the runtime runs on the frozen networks' outputs
                eager_reconstruction(model, imgs, K, a.steps, g)

            for _ in range(3):
                full()
            total = _median_ms(full, a.runs, sync)
            enc = _median_ms(lambda imgs=imgs: model.encode(imgs), a.runs, sync)
            f = model.encode(imgs)
            cams = model.estimate_cameras(f, K)
            prep = model.prepare(f, g)
            x, kp = model.initial_state(1)
            normals = torch.nn.functional.normalize(torch.randn_like(x), dim=-1)
            kp_t = model.template_vertices[model.keypoint_ids][None]

            def kp_step(prep=prep, f=f, cams=cams, kp=kp, kp_t=kp_t, normals=normals):
                model.keypoints(prep["kp"], f, cams, kp, kp_t, normals[:, model.keypoint_ids])

            def v_step(prep=prep, f=f, cams=cams, x=x, kp=kp, normals=normals):
                model.vertices(prep["v"], f, cams, x, kp, normals, None, model.template_vertices)

            kp_ms = _median_ms(kp_step, a.runs, sync) if model.keypoints is not None else 0.0
            v_ms = _median_ms(v_step, a.runs, sync)
            rows.append((views, total, enc, kp_ms, v_ms))
        # batched throughput: many single-view faces at once
        B = a.batch or (32 if cuda else 4)
        imgs = torch.rand(B, 1, 3, S, S, device=dev)
        K = K_crop.expand(B, 1, 3, 3)

        gb = synthetic_guidance(model, B, 1, S, dev)

        def batch():
            eager_reconstruction(model, imgs, K, a.steps, gb)

        batch()
        b_ms = _median_ms(batch, max(5, a.runs // 4), sync)
        # the identity backbone (glvd.identity): the chip from a photo and dlib's ResNet, once per view
        id_rows = identity_rows(dev, a.runs, sync)
        expr_ms = None
        if model.expression is not None:  # each photo's ARKit weights from its 68 landmarks (glvd.expression)
            lm = torch.rand(1, 1, 68, 2, device=dev) * S
            R = torch.eye(3, device=dev).expand(1, 1, 3, 3)
            deltas = torch.as_tensor(model.template.expressions[:, model.template.landmarks68], dtype=torch.float32,
                                     device=dev)
            expr_ms = _median_ms(lambda: expression_offsets(model.expression(lm, R), deltas), a.runs, sync)
    if cuda:  # the same workloads replayed as CUDA graphs (glvd.cuda_graph: front, descent, refine)
        for faces, views in ((1, 1), (1, 4), (B, 1)):
            imgs = torch.rand(faces, views, 3, S, S, device=dev)
            K = K_crop.expand(faces, views, 3, 3)
            try:
                g = GraphedPipeline(model, faces, views, a.steps)
            except Exception as e:  # say why and go on: the eager figures above stand
                graph_rows.append((faces, views, f"capture failed: {type(e).__name__}: {e}"))
                continue
            ms = _median_ms(lambda g=g, imgs=imgs, K=K: g.reconstruct(imgs, K), a.runs, sync)
            graph_rows.append((faces, views, ms))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"reference 512x512 matmul: {ref_ms:.3f} ms (median)")
    print("views  total_ms  x_ref   encoder_ms  keypoint_ms/step  vertex_ms/step")
    for views, total, enc, kp_ms, v_ms in rows:
        print(f"{views:5d}  {total:8.1f}  {total / ref_ms:6.0f}  {enc:10.1f}  {kp_ms:16.2f}  {v_ms:14.2f}")
    print(f"batched: {B} faces (1 view) in {b_ms:.1f} ms = {B / b_ms * 1000:.1f} faces/s")
    chip_ms, net_ms, sp_ms, hog_ms = id_rows
    one_view = rows[0][1]
    print(f"identity descriptor per view: chip {chip_ms:.1f} ms + network {net_ms:.1f} ms = {chip_ms + net_ms:.1f} ms "
          f"({(chip_ms + net_ms) / ref_ms:.0f} x_ref); 1 view with it: {one_view + chip_ms + net_ms:.1f} ms "
          f"({(one_view + chip_ms + net_ms) / ref_ms:.0f} x_ref)")
    print(f"  + dlib's 5-point predictor (alignment='dlib5', numpy): {sp_ms:.1f} ms, in the rectangle dlib's HOG "
          f"detector picks near the mesh's (numpy): {hog_ms:.1f} ms -> descriptor "
          f"{chip_ms + net_ms + sp_ms + hog_ms:.1f} ms per view")
    if expr_ms is not None:
        print(f"expression weights (1 view, + the posed landmarks): {expr_ms:.2f} ms ({expr_ms / ref_ms:.0f} x_ref)")
    for faces, views, ms in graph_rows:
        if isinstance(ms, str):
            print(f"CUDA graph, {faces} x {views} views: {ms}")
        else:
            print(f"CUDA graph, {faces} face(s) x {views} view(s): {ms:.1f} ms ({ms / ref_ms:.0f} x_ref, "
                  f"{faces / ms * 1000:.1f} faces/s)")
    print(f"peak RSS: {peak_mb:.0f} MB")


def synthetic_guidance(model, faces: int, views: int, S: int, dev: torch.device):
    """What a guided model reads (random values of the right shapes: the cost does not depend on them): the
    identity code, 68 landmarks per view inside the crop and, for a chip-features model, the chip maps with a
    crop-to-chip affine of a face crop's scale; None for a model that reads none."""
    if not model.needs_guidance:
        return None
    from glvd.facenet import CHIP_MAP_CHANNELS, CHIP_MAP_SIZE
    from glvd.guidance import Guidance

    lm = torch.rand(faces, views, 68, 2, device=dev) * S * 0.6 + S * 0.2
    maps = affine = None
    if model.cfg.chip_features:
        maps = torch.rand(faces, views, CHIP_MAP_CHANNELS, CHIP_MAP_SIZE, CHIP_MAP_SIZE, device=dev)
        affine = torch.tensor([[1.6, 0.0, -27.0], [0.0, 1.6, -40.0]], device=dev).expand(faces, views, 2, 3)
    return Guidance(torch.randn(faces, model.cfg.identity_dim or 128, device=dev), lm, maps, affine)


def identity_rows(dev: torch.device, runs: int, sync) -> tuple[float, float, float, float]:
    """Median ms of the aligned chip (a 1024 px photo, the face ~300 px wide), of the descriptor
    network, of dlib's 5-point predictor (glvd.shape_predictor, the ``"dlib5"`` alignment) and of
    choosing its rectangle with dlib's HOG filters (glvd.hog_detector)."""
    import numpy as np

    from glvd.face_chip import face_chip
    from glvd.facenet import describe, load_facenet
    from glvd.hog_detector import default_detector
    from glvd.shape_predictor import ShapePredictor, snap_to_detector

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    five = np.array([[620, 420], [560, 425], [400, 420], [460, 425], [510, 540]], np.float64)
    chip_ms = _median_ms(lambda: face_chip(photo, five), runs, lambda: None)
    net = load_facenet(device=dev)
    chip = torch.from_numpy(face_chip(photo, five))[None]
    for _ in range(3):
        describe(net, chip)
    net_ms = _median_ms(lambda: describe(net, chip), runs, sync)
    predictor = ShapePredictor()
    sp_ms = _median_ms(lambda: predictor.predict(photo, snap_to_detector((360, 330, 660, 630))), runs, lambda: None)
    hog = default_detector()
    hog_ms = _median_ms(lambda: hog.best_rectangle(photo, (360.0, 330.0, 660.0, 630.0)), runs, lambda: None)
    return chip_ms, net_ms, sp_ms, hog_ms


if __name__ == "__main__":
    main()
