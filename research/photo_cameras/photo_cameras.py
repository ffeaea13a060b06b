"""Which cameras place the reconstruction best on real photos: landmark PnP, the camera head, its refiner.

The camera refiner (glvd.camera_refine) is trained on renders only. This report scores, on the real
photos of docs/RESULTS.md (astronaut, grace_hopper, LFW faces), the 68-landmark NME of the
reconstruction projected with the cameras of each placement:

- the runtime's photo path (landmark PnP on MediaPipe's landmarks, before and after the descent);
- the same, then the refiner on the result (``refine_placed``);
- the camera head alone, as if no landmarks had been found;
- the camera head and the refiner (``estimate_cameras``, then the refiner on the result), likewise.

Usage: .venv/bin/python -m research.photo_cameras.photo_cameras [CKPT] [--lfw 20]
       [--out research/photo_cameras/photo_cameras.md]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from glvd.cameras import Cameras
from glvd.checkpoint import load_checkpoint
from glvd.pose import descend_with_landmark_cameras
from glvd.preprocess import prepare_view
from glvd_train.evaluate_photos import DlibReference, nme, sample_photos
from research.common import finish, generated_by, start


PLACEMENTS = (
    ("pnp", "landmark PnP (the photo path)"),
    ("pnp_refined", "landmark PnP, then the refiner on the result"),
    ("head", "camera head alone (no landmarks)"),
    ("head_refined", "camera head + refiner (no landmarks)"),
)


@torch.inference_mode()
def placements(model, view) -> dict[str, np.ndarray]:
    """The reconstruction's 68 landmarks ``(68, 2)`` in the photo's pixels, per placement."""
    feats = model.encode(view.crop[None, None])
    prep = model.prepare(feats)
    K = view.K_crop[None, None]
    R_h, t_h, _ = model.camera_head(feats, K)
    head = Cameras(K, R_h, t_h)
    est = model.estimate_cameras(feats, K, prep)
    lm = [view.landmarks68_crop]
    runs = {
        "pnp": descend_with_landmark_cameras(model, feats, est, lm, prep=prep),
        "pnp_refined": descend_with_landmark_cameras(model, feats, est, lm, refine_placed=True, prep=prep),
        "head": descend_with_landmark_cameras(model, feats, head, [None], refine=False, prep=prep),
        "head_refined": descend_with_landmark_cameras(model, feats, est, [None], prep=prep),
    }
    out = {}
    ids = torch.as_tensor(model.template.landmarks68)
    for key, (xs, _, cams, _) in runs.items():
        uv, _ = Cameras(view.K_image[None, None], cams.R, cams.t).project(xs[:, -1][:, ids])
        out[key] = uv[0, 0].numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default=None, help="default: the shipped one")
    p.add_argument("--lfw", type=int, default=20, help="LFW faces (the first N of lfw_subset)")
    a, t0 = start(p, argv)
    warnings.simplefilter("ignore")
    model, prov = load_checkpoint(a.checkpoint)
    dl = DlibReference()
    scores: dict[str, dict[str, list[float]]] = {}
    for name, img in sample_photos(a.lfw):
        group = "lfw" if name.startswith("lfw") else name
        try:
            view = prepare_view(img, size=model.cfg.image_size, name=name, detector="mediapipe")
        except Exception as exc:  # no face: the report lists it
            print(f"{name}: {exc}")
            continue
        if view.landmarks68 is None:
            continue
        refs = {"mp": view.landmarks68}
        if dl.available:
            refs["dlib"] = dl.landmarks(img, view.box)[0]
        for key, lm in placements(model, view).items():
            for r, ref in refs.items():
                scores.setdefault(group, {}).setdefault(f"{key}|{r}", []).append(nme(lm, ref))
    refs = ["mp", "dlib"] if dl.available else ["mp"]
    groups = [g for g in ("astronaut", "grace_hopper", "lfw") if g in scores]
    lines = ["# Cameras on real photos", "", generated_by("research.photo_cameras.photo_cameras", argv), "",
             f"Checkpoint `{a.checkpoint or 'shipped'}` (camera refiner: "
             f"{'yes' if model.camera_refiner is not None else 'none'}). Median 68-landmark NME (% of the "
             "reference's outer-eye-corner distance) of the reconstruction projected with each placement's "
             f"final cameras; LFW: the first {a.lfw} faces of lfw_subset. The crop comes from MediaPipe's "
             "landmarks in every row, so the MediaPipe columns favour PnP on them; dlib is independent"
             + ("" if dl.available else f" (not here: {dl.why})") + ".", "",
             "| placement | " + " | ".join(f"{g} vs {r}" for g in groups for r in refs) + " |",
             "|---|" + "---|" * (len(groups) * len(refs))]
    for key, label in PLACEMENTS:
        cells = [f"{np.median(scores[g][f'{key}|{r}']) * 100:.1f}% (n={len(scores[g][f'{key}|{r}'])})"
                 for g in groups for r in refs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
