"""Real photos: 68-landmark error (NME) of the reconstruction against MediaPipe and dlib, and overlays.

The photos are the ones that ship in installed packages (scikit-image's astronaut and
lfw_subset, matplotlib's grace_hopper), so the evaluation runs offline. References:
MediaPipe Face Mesh 0.10.21 (468 points mapped to the 68) and, when installed
(``pip install -r requirements-eval.txt``), dlib's 68-point shape predictor from the
face-recognition-models package (its licence allows evaluation only: it is never shipped).

NME = mean point distance / distance between the outer eye corners (points 36 and 45) of
the reference. Caveat: GLVD's crop is placed from MediaPipe's landmarks, so the MediaPipe
column favours every method that uses the crop (the template too); dlib is independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glvd.pose import INNER, project_points

OUTER_EYE = (36, 45)


@dataclass
class PhotoScore:
    name: str
    nme: dict[str, float] = field(default_factory=dict)  # "glvd|mp", "template|dlib", "mp|dlib", ...
    note: str = ""


def package_photos() -> dict[str, np.ndarray]:
    """The real face photos that ship in scikit-image and matplotlib: name -> RGB uint8 (those installed)."""
    from glvd.preprocess import load_image

    photos: dict[str, np.ndarray] = {}
    try:
        from skimage import data

        photos["astronaut"] = np.ascontiguousarray(data.astronaut())
    except ImportError:
        pass
    try:
        from matplotlib import cbook

        photos["grace_hopper"] = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except ImportError:
        pass
    return photos


def sample_photos(lfw_faces: int = 20) -> list[tuple[str, np.ndarray]]:
    """``(name, (H, W, 3) uint8 RGB)`` photos from installed packages; lfw faces upscaled 8x from 25 px."""
    return list(package_photos().items()) + lfw_photos(0, lfw_faces)


def lfw_photos(first: int, last: int) -> list[tuple[str, np.ndarray]]:
    """scikit-image's LFW faces ``first`` .. ``last - 1`` (of 100), 25 px grey upscaled 8x to RGB."""
    from PIL import Image
    from skimage import data

    lfw = data.lfw_subset()[first:last]  # the first 100 of 200 are faces, 25 x 25 grey in [0, 1]
    out = []
    for i, im in enumerate(lfw, start=first):
        g = Image.fromarray((im * 255).astype(np.uint8)).resize((200, 200), Image.BICUBIC)
        out.append((f"lfw_{i:03d}", np.asarray(g.convert("RGB"))))
    return out


def nme(pred: np.ndarray, ref: np.ndarray, points: slice = slice(None)) -> float:
    """Mean distance of ``(68, 2)`` points (or a subset), normalised by the reference's outer-eye-corner distance."""
    d = np.linalg.norm(ref[OUTER_EYE[0]] - ref[OUTER_EYE[1]])
    return float(np.linalg.norm(pred[points] - ref[points], axis=1).mean() / max(d, 1e-6))


class DlibReference:
    """dlib's 68-point predictor; ``available`` is False when dlib or its model is not installed."""

    def __init__(self) -> None:
        self.available = False
        self.why = "dlib not installed (pip install -r requirements-eval.txt)"
        import importlib.util

        try:
            import dlib
        except ImportError:
            return
        # located without importing face_recognition_models (it needs pkg_resources, gone from new setuptools)
        spec = importlib.util.find_spec("face_recognition_models")
        model = (Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
                 if spec is not None and spec.submodule_search_locations else None)
        if model is None or not model.is_file():
            self.why = "the face-recognition-models package is not installed (pip install -r requirements-eval.txt)"
            return
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model))
        self.available, self.why = True, ""

    def landmarks(self, img: np.ndarray, box: tuple[float, float, float]) -> tuple[np.ndarray, str]:
        """68 points; dlib's own detection nearest to ``box`` (cx, cy, side), else a box derived from it."""
        dets = self._detector(img, 1)
        cx, cy, side = box
        if len(dets):
            r = min(dets, key=lambda d: (d.center().x - cx) ** 2 + (d.center().y - cy) ** 2)
            how = "dlib detector"
        else:
            # dlib's boxes are about the inner face: ~0.45 of our 1.6-margin crop, centred a little lower
            h = 0.5 * 0.45 * side
            r = self._dlib.rectangle(int(cx - h), int(cy - h + 0.05 * side), int(cx + h), int(cy + h + 0.05 * side))
            how = "box from the crop"
        s = self._predictor(img, r)
        return np.array([[p.x, p.y] for p in s.parts()], np.float32), how


def _project(verts: np.ndarray, cams: dict[str, np.ndarray], view: int) -> np.ndarray:
    """``(P, 3)`` head-frame points -> ``(P, 2)`` pixels of the photo."""
    return project_points(verts, cams["K"][view], cams["R"][view], cams["t"][view])


def draw_overlay(img: np.ndarray, result: Any, refs: dict[str, np.ndarray], path: Path, max_side: int = 512) -> None:
    """The result's wireframe and 68 landmarks on the photo, with the reference landmarks."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(img).convert("RGB")
    # big photos shrink to max_side; tiny ones (LFW's 25 px faces) grow to it, with visible pixels
    side = max(im.size)
    s = max_side / side if side > max_side or side < 256 else 1.0
    if s != 1.0:
        im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC if s < 1 else Image.NEAREST)
    d = ImageDraw.Draw(im, "RGBA")
    uv = _project(result.final, result.cameras, 0) * s
    for q in result.quads[::3]:  # every third quad keeps the wire readable
        pts = [tuple(uv[i]) for i in q] + [tuple(uv[q[0]])]
        d.line(pts, fill=(255, 255, 255, 70), width=1)
    colours = {"mp": (40, 220, 60, 255), "dlib": (60, 140, 255, 255)}
    for name, pts in refs.items():
        for x, y in pts * s:
            d.ellipse([x - 2, y - 2, x + 2, y + 2], outline=colours[name])
    for x, y in result.landmarks2d[0] * s:
        d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(255, 50, 50, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def evaluate_photos(rec: Any, overlays: Path | None, lfw_faces: int = 20, log=print) -> tuple[list[PhotoScore], str]:
    """Reconstruct every sample photo; NME of GLVD (last step) and of the template (step 0) per reference."""
    from glvd.detect import detect_faces
    from glvd.errors import GLVDError

    dl = DlibReference()
    scores: list[PhotoScore] = []
    lfw_montage: list[Path] = []
    for name, img in sample_photos(lfw_faces):
        sc = PhotoScore(name)
        scores.append(sc)
        faces = [f for f in detect_faces(img, backend="mediapipe") if f.landmarks68 is not None]
        if not faces:
            sc.note = "MediaPipe found no face"
            continue
        face = faces[0]  # the largest
        try:
            res = rec.reconstruct(img)
        except GLVDError as e:
            sc.note = f"GLVD: {e}"
            continue
        refs = {"mp": face.landmarks68}
        if dl.available:
            refs["dlib"], how = dl.landmarks(img, face.crop_box)
            sc.note = how
        lm = res.landmark_ids
        tpl2d = _project(res.vertices[0][lm], res.cameras, 0)
        for rname, ref in refs.items():
            sc.nme[f"glvd|{rname}"] = nme(res.landmarks2d[0], ref)
            sc.nme[f"glvd51|{rname}"] = nme(res.landmarks2d[0], ref, INNER)
            sc.nme[f"template|{rname}"] = nme(tpl2d, ref)
        if "dlib" in refs:
            sc.nme["mp|dlib"] = nme(refs["mp"], refs["dlib"])
        if overlays is not None:
            p = overlays / f"{name}.png"
            draw_overlay(img, res, refs, p, max_side=512 if not name.startswith("lfw") else 200)
            if name.startswith("lfw"):
                lfw_montage.append(p)
        log(f"{name}: " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in sc.nme.items()))
    if overlays is not None and lfw_montage:
        _montage(lfw_montage, overlays / "lfw_montage.png")
        for p in lfw_montage:
            p.unlink()
    return scores, dl.why


def _montage(paths: list[Path], out: Path, cols: int = 5) -> None:
    from PIL import Image

    ims = [Image.open(p) for p in paths]
    w, h = ims[0].size
    rows = -(-len(ims) // cols)
    m = Image.new("RGB", (cols * w, rows * h))
    for i, im in enumerate(ims):
        m.paste(im, ((i % cols) * w, (i // cols) * h))
    m.save(out)


def report(scores: list[PhotoScore], dlib_why: str, overlays: Path | None, rel_to: Path) -> str:
    """Markdown section for docs/RESULTS.md."""
    def med(key: str, group: list[PhotoScore]) -> str:
        v = [s.nme[key] for s in group if key in s.nme]
        return f"{np.median(v) * 100:.1f}% (n={len(v)})" if v else "-"

    groups = {"astronaut": [s for s in scores if s.name == "astronaut"],
              "grace_hopper": [s for s in scores if s.name == "grace_hopper"],
              "lfw_subset (25 px faces, upscaled)": [s for s in scores if s.name.startswith("lfw")]}
    lines = ["## Real photos: 68-landmark NME", "",
             "Median NME (mean landmark distance / outer-eye-corner distance of the reference) of the reconstruction's",
             "68 landmarks projected with its estimated camera, and of the template placed by the same camera "
             "(step 0); 'inner 51' leaves out the 17 jaw points (where the reconstruction is furthest from the",
             "photo: research/jaw_offsets/jaw_offsets.md). The camera is PnP of the face's landmarks on "
             "MediaPipe's, so the",
             "MediaPipe columns favour GLVD and the template alike; dlib is independent. Target: GLVD NME <= 6%.", ""]
    refs = ["mp", "dlib"] if not dlib_why else ["mp"]
    head = "| photos | " + " | ".join(f"GLVD vs {r} | GLVD inner 51 vs {r} | template vs {r}" for r in refs)
    head += " | MediaPipe vs dlib |" if not dlib_why else " |"
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for gname, g in groups.items():
        if not g:
            continue
        row = f"| {gname} | " + " | ".join(f"{med('glvd|' + r, g)} | {med('glvd51|' + r, g)} | "
                                           f"{med('template|' + r, g)}" for r in refs)
        row += f" | {med('mp|dlib', g)} |" if not dlib_why else " |"
        lines.append(row)
    missed = [f"{s.name} ({s.note})" for s in scores if not s.nme]
    if missed:
        lines += ["", f"Not scored: {', '.join(missed)}."]
    if dlib_why:
        lines += ["", f"dlib column: {dlib_why}."]
    if overlays is not None:
        rel = lambda p: Path(p).resolve().relative_to(rel_to.resolve()) if Path(p).resolve().is_relative_to(  # noqa: E731
            rel_to.resolve()) else Path(p)
        lines += ["", "Overlays (white: the reconstruction's wireframe; red: its 68 landmarks; green: MediaPipe; "
                  "blue: dlib):", ""]
        for n in ("astronaut", "grace_hopper", "lfw_montage"):
            p = overlays / f"{n}.png"
            if p.is_file():
                lines.append(f"![{n}]({rel(p)})")
    return "\n".join(lines) + "\n"
