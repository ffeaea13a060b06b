"""``glvd`` / ``python -m glvd``: reconstruct, batch, worker, info.

Training and evaluation are not part of the runtime: ``glvd-train train|evaluate`` (the training
package, training/; ``make setup`` installs it into .venv).

Exit codes a script can rely on: 0 success, 1 internal error, 2 usage,
3 unreadable image, 4 no face found, 5 checkpoint problem, 6 torch missing,
7 some inputs of a batch failed (its report says which), 130 interrupted.
Progress goes to stderr; stdout stays clean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXIT_CODES = {"internal": 1, "bad_request": 2, "unreadable_image": 3, "no_face": 4, "checkpoint": 5,
              "torch_missing": 6, "batch_failures": 7, "cancelled": 130}
MESH_SUFFIXES = (".obj", ".ply", ".glb")
#: what `glvd train` / `glvd evaluate` (commands of the runtime until the training package split) say now
TRAINING_MOVED = ("training and evaluation are not part of the runtime: use glvd-train train|evaluate "
                  "(the training package in training/, installed into .venv by make setup)")


def _err(msg: str) -> None:
    print(f"glvd: {msg}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="glvd", description="GLVD Face: 3D faces from photos (no Blender needed).",
                                epilog=TRAINING_MOVED)
    p.add_argument("--version", action="version", version=f"glvd {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("reconstruct", help="reconstruct one face from 1-8 photos of it")
    r.add_argument("images", nargs="+", help="photos of one person (JPEG, PNG, WebP, TIFF)")
    r.add_argument("-o", "--output", required=True,
                   help="output mesh: .obj, .ply or .glb (one morph target per step, and per ARKit key for a head)")
    r.add_argument("--steps", type=int, default=10, help="descent steps, 1-30 (default 10)")
    r.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    r.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped one)")
    r.add_argument("--cameras", default=None, help="JSON file: a list of {K, R, t} per photo (OpenCV, metres)")
    r.add_argument("--lens-35mm", type=float, default=None, metavar="MM",
                   help="lens of photos without an EXIF focal length, 35 mm equivalent (e.g. 26 for a phone); "
                        "default: assume the face 1.2 m from the camera")
    r.add_argument("--mode", choices=("head", "face"), default="head",
                   help="head (default): the whole head with eyes, teeth and lashes around the reconstructed face; "
                        "face: the face area alone")
    r.add_argument("--all-steps", action="store_true", help="also write one file per step (name_step01.obj, ...)")
    r.add_argument("--json", default=None, help="write cameras, their sources, 2D landmarks, each photo's ARKit "
                   "expression weights by name, timings to this JSON")
    r.add_argument("--pose", choices=("neutral", "photo"), default="neutral",
                   help="OBJ/PLY: the neutral face (default) or the face as the first photo shows it (neutral + its "
                   "expression weights); a .glb carries both (the weights are its ARKit targets' defaults)")
    r.add_argument("--texture", default=None, help="bake the photos into this UV texture PNG")
    r.add_argument("--texture-size", type=int, default=1024, help="texture side in pixels (default 1024)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    b = sub.add_parser("batch", help="reconstruct many faces in one process: one per photo, or per folder of "
                                     "photos of one person")
    b.add_argument("inputs", nargs="+", help="photos (one face each) and/or folders (1-8 photos of one person each)")
    b.add_argument("-o", "--out-dir", required=True, help="output folder: NAME.FORMAT per face, batch_report.csv")
    b.add_argument("--format", choices=("glb", "obj", "ply"), default="glb", help="mesh format (default glb)")
    b.add_argument("--steps", type=int, default=10, help="descent steps, 1-30 (default 10)")
    b.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    b.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped one)")
    b.add_argument("--lens-35mm", type=float, default=None, metavar="MM",
                   help="lens of photos without an EXIF focal length, 35 mm equivalent")
    b.add_argument("--mode", choices=("head", "face"), default="head",
                   help="head (default): the whole head around each face; face: the face area alone")
    b.add_argument("--texture", action="store_true", help="also bake NAME.png from the photos")
    b.add_argument("--texture-size", type=int, default=1024, help="texture side in pixels (default 1024)")
    b.add_argument("--json", action="store_true", help="also write NAME.json (cameras, landmarks, timings)")
    b.add_argument("--skip-existing", action="store_true", help="leave faces whose mesh exists (resume a batch)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    w = sub.add_parser("worker", help="serve JSON-line requests on stdin (for Blender; docs/worker_protocol.md)")
    w.add_argument("--device", default="auto")
    w.add_argument("--checkpoint", default=None)

    i = sub.add_parser("info", help="print the runtime and checkpoint details")
    i.add_argument("--checkpoint", default=None)
    i.add_argument("--device", default="auto")
    return p


def _reconstruct(a: argparse.Namespace) -> int:
    from .api import Reconstructor

    out = Path(a.output)
    if out.suffix.lower() not in MESH_SUFFIXES:
        _err(f"unsupported output {out.name}: use .obj, .ply or .glb")
        return 2
    cams = None
    if a.cameras:
        try:
            cams = json.loads(Path(a.cameras).read_text())
        except (OSError, ValueError) as exc:
            _err(f"cannot read cameras {a.cameras}: {exc}")
            return 2
    say = (lambda stage, msg: None) if a.quiet else (lambda stage, msg: _err(msg))
    rec = Reconstructor(checkpoint=a.checkpoint, device=a.device)
    if not rec.trained:
        _err(f"WARNING: {rec.checkpoint_path} is an UNTRAINED checkpoint; the result is meaningless")
    if not _head_fits(rec, a.mode):
        return 2
    res = rec.reconstruct(a.images, cameras=cams, steps=a.steps, on_progress=say, lens_35mm=a.lens_35mm)
    n = _write_outputs(res, a.images, out, a.texture, a.texture_size, a.all_steps, a.json, say, a.mode, a.pose)
    say("done", f"wrote {out} ({n} vertices, {res.steps} steps, {res.timings['total_s']:.2f} s)")
    return 0


def _head_fits(rec, mode: str) -> bool:
    """The whole head is built around the kit's face area: say so (before any work) when the checkpoint's
    template is another mesh."""
    if mode != "head":
        return True
    from .head import load_asset

    n, want = rec.template.num_vertices, load_asset().face_count
    if n != want:
        _err(f"--mode head needs a checkpoint on the kit's face area ({want} vertices); {rec.checkpoint_path} has "
             f"{n}: use --mode face")
    return n == want


def _write_outputs(res, images, out: Path, texture: str | None, texture_size: int, all_steps: bool,
                   json_path: str | None, say, mode: str = "head", pose: str = "neutral") -> int:
    """The mesh (and its per-step files, texture and JSON when asked); returns its vertex count. The mesh is
    written under a temporary name and renamed last, so an existing ``out`` is always a complete result.
    ``mode``: ``head`` (the whole head, :mod:`glvd.head`) or ``face`` (the face area alone); ``pose``: OBJ/PLY
    hold the neutral face or (``photo``) the first photo's expression on it."""
    import numpy as np

    from .errors import BadRequest
    from .export import write_glb, write_obj, write_ply
    from .expression import posed_vertices

    out.parent.mkdir(parents=True, exist_ok=True)
    if mode == "head":
        from .head import build_head, export_materials

        head = build_head(res)
        steps, polys, uvs, puv = head.vertices, head.polygons, head.uvs, head.polygon_uvs
        pmat, mats = head.polygon_material, export_materials()
    elif mode == "face":
        head, steps, polys, uvs, puv, pmat, mats = None, res.vertices, res.quads, res.uvs, res.quad_uvs, None, None
    else:
        raise BadRequest(f"unknown output mode {mode!r}: head or face")
    tex_path = None
    if texture:
        say("texture", f"baking texture {texture}")
        if head is not None:
            from .head_texture import bake_head_texture

            tex_path = bake_head_texture(res, head, images, texture, size=texture_size)
        else:
            from .texture import bake_texture

            tex_path = bake_texture(res, images, texture, size=texture_size)

    def write(path: Path, verts: np.ndarray) -> None:
        if path.suffix.lower() == ".obj":
            write_obj(path, verts, polys, uvs, puv, texture=tex_path, mtl_name=out.with_suffix(".mtl").name,
                      polygon_material=pmat, materials=mats)
        elif path.suffix.lower() == ".ply":
            write_ply(path, verts, polys)

    partial = out.with_name(f"{out.stem}.partial{out.suffix}")
    weights = res.expression_weights
    shape = head if head is not None else res
    try:
        if out.suffix.lower() == ".glb":
            png = Path(tex_path).read_bytes() if tex_path else None
            expr = shape.expressions()  # the ARKit targets, the whole head's or the face area's
            write_glb(partial, steps, polys, uvs, puv, texture_png=png, expressions=expr,
                      expression_names=res.expression_names,
                      polygon_material=pmat, materials=mats,
                      expression_weights=None if weights is None else weights[0])
        elif pose == "photo" and weights is not None:
            write(partial, posed_vertices(steps[-1], weights[0], shape.expressions()))
        else:
            write(partial, steps[-1])
        if all_steps:
            for i in range(1, res.steps + 1):
                suffix = ".obj" if out.suffix.lower() == ".glb" else out.suffix
                write(out.with_name(f"{out.stem}_step{i:02d}{suffix}"), steps[i])
        if json_path:
            Path(json_path).write_text(json.dumps({
                "cameras": {k: v.tolist() for k, v in res.cameras.items()}, "camera_sources": res.camera_sources,
                "focal_sources": res.focal_sources,
                "landmarks2d": res.landmarks2d.tolist(), "image_sizes": res.image_sizes,
                "expression_weights": None if weights is None else [
                    {n: round(float(x), 4) for n, x in zip(res.expression_names, w, strict=True)} for w in weights],
                "timings": res.timings, "checkpoint": res.checkpoint, "trained": res.trained}, indent=1))
        os.replace(partial, out)
    except BaseException:  # a failed write or Ctrl-C: no half-written mesh under either name
        partial.unlink(missing_ok=True)
        raise
    return int(steps.shape[1])


def _batch(a: argparse.Namespace) -> int:
    from .api import Reconstructor
    from .batch import REPORT_NAME, collect_items, run_batch

    suffix = "." + a.format
    out_dir = Path(a.out_dir)
    items = collect_items(a.inputs)
    log = (lambda msg: None) if a.quiet else _err
    rec = Reconstructor(checkpoint=a.checkpoint, device=a.device)
    if not rec.trained:
        _err(f"WARNING: {rec.checkpoint_path} is an UNTRAINED checkpoint; the results are meaningless")
    if not _head_fits(rec, a.mode):
        return 2

    def write(res, photos, out: Path) -> None:
        _write_outputs(res, [str(p) for p in photos], out, str(out.with_suffix(".png")) if a.texture else None,
                       a.texture_size, False, str(out.with_suffix(".json")) if a.json else None, lambda *_: None,
                       a.mode)

    t0 = time.perf_counter()
    outcomes = run_batch(lambda photos: rec.reconstruct(photos, steps=a.steps, lens_35mm=a.lens_35mm), write,
                         items, out_dir, suffix, a.skip_existing, log)
    failed = [o for o in outcomes if o.status == "failed"]
    done = sum(o.status == "done" for o in outcomes)
    log(f"{done} done, {len(outcomes) - done - len(failed)} skipped, {len(failed)} failed in "
        f"{time.perf_counter() - t0:.1f} s; report: {out_dir / REPORT_NAME}")
    return EXIT_CODES["batch_failures"] if failed else 0


def _info(a: argparse.Namespace) -> int:
    import torch

    from .api import Reconstructor

    rec = Reconstructor(checkpoint=a.checkpoint, device=a.device)
    print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(), "device": str(rec.device),
                      "cuda_graphs": rec.cuda_graphs,
                      "checkpoint": rec.checkpoint_path, "trained": rec.trained,
                      "provenance": rec.provenance, "vertices": rec.template.num_vertices}, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] in (["train"], ["evaluate"]):
        _err(f"`glvd {args[0]}` moved: {TRAINING_MOVED}")
        return EXIT_CODES["bad_request"]
    a = _parser().parse_args(args)
    import importlib.util

    # found, not imported: the worker imports torch in the background after saying "ready"
    if importlib.util.find_spec("torch") is None:
        _err("PyTorch is not installed: pip install torch==2.13.0 (or install the extension's bundled wheels)")
        return EXIT_CODES["torch_missing"]
    from .errors import GLVDError

    try:
        if a.cmd == "reconstruct":
            return _reconstruct(a)
        if a.cmd == "batch":
            return _batch(a)
        if a.cmd == "worker":
            from .worker import serve

            code = serve(device=a.device, checkpoint=a.checkpoint)
            # leave at once: native threads of the face detector can keep a normal exit waiting
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        if a.cmd == "info":
            return _info(a)
    except GLVDError as exc:
        _err(str(exc))
        return EXIT_CODES.get(exc.code, 1)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    return 2
