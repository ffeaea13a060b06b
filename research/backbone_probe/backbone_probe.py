"""Would MediaPipe's face-landmark network make a better image backbone than GLVD's own encoder?

MediaPipe 0.10.21's wheel ships a face network trained on real photos (``face_landmark.tflite``,
468 3D points from a 192 px crop): the only pretrained face model available offline here, so the
cheapest "pretrained backbone" to try. This probes what it has learned on our renders the way
research/signal_budget/signal_budget.py probes the encoder: ridge regressions from a layer's activations to the true
ICT identity and expression coefficients, fitted on training renders (ridge strength chosen on a
held-back sixth of them), scored on held-out renders by R^2 and by the aligned vertex error of the
shape the predicted coefficients give. GLVD's encoder features and its own reconstruction (true
cameras) are scored on the same faces.

Needs the LiteRT interpreter in a separate environment (research/backbone_probe/mediapipe_features.py):

    python3.11 -m venv runs/litert && runs/litert/bin/pip install ai-edge-litert==2.3.0
    .venv/bin/python -m research.backbone_probe.backbone_probe --out research/backbone_probe/backbone_probe.md
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from glvd.cameras import Cameras
from glvd.checkpoint import load_checkpoint
from glvd_train.metrics import vertex_error_mm
from glvd_train.synth import SynthConfig, SyntheticFaces
from research.common import encoder_features, finish, generated_by, start

SEED = 30_001_234  # disjoint from training, validation, evaluate and the other tools
LAMBDAS = (1e-1, 1, 10, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7)
HERE = Path(__file__).resolve().parent  # mediapipe_features.py lies beside this script


@torch.no_grad()
def render_set(model, gen: SyntheticFaces, n: int) -> dict[str, np.ndarray]:
    """``n`` one-view renders with their truth, GLVD's encoder features and its reconstruction's error."""
    keep: dict[str, list] = {k: [] for k in ("images", "coeffs", "vertices", "glvd_feat", "glvd_err", "tmpl_err")}
    for _ in range(n // 16):
        s = gen.sample(16, 1)
        f = model.encode(s["images"])
        xs, _ = model.descend(f, Cameras(s["K"], s["R"], s["t"]))
        keep["images"].append((s["images"][:, 0].permute(0, 2, 3, 1) * 255).round().byte().numpy())
        keep["coeffs"].append(torch.cat([s["identity"], s["expression"]], 1).numpy())
        keep["vertices"].append(s["vertices"].numpy())
        keep["glvd_feat"].append(encoder_features(f).numpy())
        keep["glvd_err"].append(vertex_error_mm(xs[:, -1], s["vertices"]).numpy())
        keep["tmpl_err"].append(vertex_error_mm(xs[:, 0], s["vertices"]).numpy())
    return {k: np.concatenate(v) for k, v in keep.items()}


def mediapipe_features(images: np.ndarray, python: str) -> dict[str, np.ndarray]:
    """Run research/backbone_probe/mediapipe_features.py in the LiteRT environment on ``(N, S, S, 3)`` uint8 crops."""
    import mediapipe

    model = Path(mediapipe.__file__).parent / "modules" / "face_landmark" / "face_landmark.tflite"
    with tempfile.TemporaryDirectory() as tmp:
        crops, out = Path(tmp) / "crops.npy", Path(tmp) / "features.npz"
        np.save(crops, images)
        subprocess.run([python, str(HERE / "mediapipe_features.py"), str(model), str(crops), str(out)],
                       check=True, stderr=subprocess.DEVNULL)
        with np.load(out) as f:
            return {k: f[k] for k in f.files}


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, float]:
    """Standardised ridge regression (dual form), strength chosen on the last sixth of the training rows."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    ym = y_train.mean(0)
    y = y_train - ym

    def fit(rows: np.ndarray, k: np.ndarray, lam: float) -> np.ndarray:
        return rows.T @ np.linalg.solve(k + lam * np.eye(len(k)), y[: len(rows)])

    held = len(a) // 6
    fit_rows = a[:-held]
    k_fit = fit_rows @ fit_rows.T  # the Gram matrix once; only the ridge strength varies
    errs = [((a[-held:] @ fit(fit_rows, k_fit, lam) - y[-held:]) ** 2).mean() for lam in LAMBDAS]
    lam = LAMBDAS[int(np.argmin(errs))]
    return b @ fit(a, a @ a.T, lam) + ym, lam


def score(head, face_count: int, n_id: int, pred: np.ndarray, truth: np.ndarray, vertices: np.ndarray
          ) -> tuple[float, float, float, float]:
    """Held-out R^2 (identity modes 1-5, 1-20, the varying expression weights) and the aligned v2v (mm)."""
    var = ((truth - truth.mean(0)) ** 2).sum(0)
    r2 = 1 - ((pred - truth) ** 2).sum(0) / np.maximum(var, 1e-9)
    varying = var[n_id:] > 1e-6
    p = torch.from_numpy(pred).float()
    with torch.no_grad():
        v = head.vertices(p[:, :n_id], p[:, n_id:])[:, :face_count]
        err = vertex_error_mm(v, torch.from_numpy(vertices)).mean().item()
    return r2[:5].mean(), r2[:20].mean(), r2[n_id:][varying].mean(), err


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the shipped one)")
    p.add_argument("--train", type=int, default=3200, help="training renders for the probes")
    p.add_argument("--test", type=int, default=640, help="held-out renders")
    p.add_argument("--litert-python", default="runs/litert/bin/python",
                   help="a Python with ai-edge-litert installed (see the module docstring)")
    a, t0 = start(p, argv)
    model, prov = load_checkpoint(a.checkpoint)
    model.eval()
    gen = SyntheticFaces(kit_path=a.kit, config=SynthConfig(image_size=model.cfg.image_size), seed=SEED)
    data = render_set(model, gen, a.train + a.test)
    mp = mediapipe_features(data["images"], a.litert_python)
    # only faces MediaPipe's own score accepts: elsewhere its features describe no face at all
    found = mp["score"][:, 0] > 0
    tr = np.zeros(len(found), bool)
    tr[: a.train] = True
    train, test = tr & found, ~tr & found
    n_id = gen.head.num_identity
    y_tr, y_te, v_te = data["coeffs"][train], data["coeffs"][test], data["vertices"][test]

    def row(name: str, pred: np.ndarray, note: str = "") -> str:
        r = score(gen.head, gen.face_count, n_id, pred, y_te, v_te)
        return f"| {name}{note} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.2f} |"

    layers = {"GLVD's encoder (global feature + map means)": data["glvd_feat"]}
    layers.update({f"MediaPipe `{k}`": v for k, v in mp.items() if k != "score"})
    layers["MediaPipe, the three last stages together"] = np.concatenate(
        [mp[k] for k in ("p_re_lu_15", "p_re_lu_18", "p_re_lu_20")], 1)
    layers["GLVD's encoder + MediaPipe's three last stages"] = np.concatenate(
        [data["glvd_feat"], layers["MediaPipe, the three last stages together"]], 1)
    lines = ["# A pretrained backbone? MediaPipe's face network probed on renders", "",
             generated_by("research.backbone_probe.backbone_probe", argv), "",
             f"Checkpoint: {a.checkpoint or 'shipped'} ({prov.get('iterations', '?')} iterations). "
             f"{a.train} training and {a.test} held-out renders (`SynthConfig()`, the training distribution, "
             f"seed {SEED}, {model.cfg.image_size} px crops, 1 view, resized to 192 px for MediaPipe); "
             f"MediaPipe's face score accepted {int(train.sum())} and {int(test.sum())} of them, and every row "
             "uses only those. A ridge regression from each layer's activations to the true 100 identity and "
             "53 expression coefficients (standardised features; strength chosen on the last sixth of the "
             "training rows); R^2 on the held-out renders (0 = predicting the mean), and the aligned vertex "
             "error (mm, face area) of the shape its predicted coefficients give.", "",
             "| features (dimension, ridge strength) | R^2 identity 1-5 | R^2 identity 1-20 | R^2 expression | "
             "v2v (mm) |", "|---|---|---|---|---|",
             f"| the template (no image) | - | - | - | {data['tmpl_err'][test].mean():.2f} |",
             f"| GLVD's reconstruction, true cameras (not a probe) | - | - | - | {data['glvd_err'][test].mean():.2f} |"]
    for name, x in layers.items():
        pred, lam = ridge_predict(x[train].astype(np.float64), y_tr, x[test].astype(np.float64))
        lines.append(row(name, pred, f" ({x.shape[1]}, {lam:g})"))
    lines += ["", "Read: a layer that carries the face's identity in a form a linear map can read has R^2 well "
              "above 0 (GLVD's own encoder is the reference). MediaPipe's network was trained to place 468 "
              "points on real photos, not to tell identities apart, and the renders are not its domain.", ""]
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
