"""How much of the shape do the guiding keypoints carry, and does a checkpoint's descent use them?

GLVD's premise is that a few predicted 3D keypoints guide the per-vertex descent. This report
separates the two halves on held-out renders (1 view, true cameras, face-area error in mm after a
similarity alignment, as everywhere):

- the keypoint half: the error of the K keypoints the model predicts (after its last step) against
  the template's keypoints, and what *exact* keypoints would give: the template bent onto the true
  keypoints by a thin-plate spline (no network), an upper bound for a perfect keypoint predictor;
- the vertex half: the checkpoint's mesh against the same spline through its *own* predicted
  keypoints (equal = the mesh follows its keypoints), and its descent with the keypoint module
  replaced by the true keypoints (better than its own = its vertex module uses the guidance).

Usage: .venv/bin/python -m research.keypoint_budget.keypoint_budget CKPT [CKPT ...] [--difficulties 0 1] [--faces 16]
       [--out research/keypoint_budget/keypoint_budget.md]
"""

from __future__ import annotations

import argparse

import torch

from glvd.cameras import Cameras
from glvd.checkpoint import load_checkpoint
from glvd_train.metrics import vertex_error_mm
from glvd_train.synth import SynthConfig, SyntheticFaces
from research.common import finish, generated_by, start


SEED = 30_000_555  # disjoint from training, validation, evaluate and the other tools


def thin_plate_operator(controls: torch.Tensor, points: torch.Tensor, reg: float = 1e-6) -> torch.Tensor:
    """Linear map from control-point displacements to point displacements (3D thin-plate spline).

    Args:
        controls: ``(K, 3)``; points: ``(N, 3)`` (float64).
    Returns:
        ``(N, K)``: ``points + W @ (moved_controls - controls)`` bends ``points`` with the controls,
        reproducing any affine motion exactly.
    """
    k = controls.shape[0]
    A = torch.zeros(k + 4, k + 4, dtype=torch.float64)
    A[:k, :k] = torch.cdist(controls, controls) + reg * torch.eye(k, dtype=torch.float64)
    P = torch.cat([torch.ones(k, 1, dtype=torch.float64), controls], 1)
    A[:k, k:], A[k:, :k] = P, P.T
    basis = torch.cat([torch.cdist(points, controls), torch.ones(points.shape[0], 1, dtype=torch.float64), points], 1)
    return basis @ torch.linalg.inv(A)[:, :k]


@torch.no_grad()
def measure(model, s: dict) -> dict[str, float]:
    """Mean errors (mm) over the faces of one rendered set ``s`` (1 view)."""
    tpl = torch.as_tensor(model.template.vertices, dtype=torch.float64)
    ids = model.keypoint_ids
    gt = s["vertices"]
    cams = Cameras(s["K"], s["R"], s["t"])
    feats = model.encode(s["images"])
    xs, kps = model.descend(feats, cams)

    def bend(controls: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        """The template bent by its ``controls`` vertex ids moving to ``moved (B, C, 3)``: ``(B, N, 3)``."""
        W = thin_plate_operator(tpl[controls], tpl)
        return (tpl + torch.einsum("nc,bcd->bnd", W, moved.double() - tpl[controls])).float()

    mm = lambda pred, truth: vertex_error_mm(pred, truth).mean().item()  # noqa: E731

    # the same descent with the keypoint module answering the true keypoints at every step
    guided = model.keypoints is not None
    if guided:
        model.keypoints.forward = lambda *a, **k: gt[:, ids].clone()
        try:
            xs_gt_kp, _ = model.descend(feats, cams)
        finally:
            del model.keypoints.forward  # the class's forward again
    return {
        "template": mm(xs[:, 0], gt),
        "model": mm(xs[:, -1], gt),
        "spline_own": mm(bend(ids, kps[:, -1]), gt),
        "model_true_kp": mm(xs_gt_kp[:, -1], gt) if guided else float("nan"),
        "kp_template": mm(kps[:, 0], gt[:, ids]),
        "kp_model": mm(kps[:, -1], gt[:, ids]),
        "spline_true": mm(bend(ids, gt[:, ids]), gt),
        "spline_true68": mm(bend(ids[:68], gt[:, ids[:68]]), gt),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--difficulties", type=float, nargs="+", default=[0.0, 1.0])
    p.add_argument("--faces", type=int, default=16)
    a, t0 = start(p, argv)
    models = [(c, *load_checkpoint(c)) for c in a.checkpoints]
    size = models[0][1].cfg.image_size
    K = int(models[0][1].keypoint_ids.numel())
    lines = ["# Keypoint budget", "", generated_by("research.keypoint_budget.keypoint_budget", argv), "",
             f"{a.faces} held-out faces (seed {SEED}) per difficulty, 1 view, {size} px, true cameras; mm after "
             "similarity alignment. Keypoints: the K guiding points (the 68 landmarks and farthest-point "
             f"samples, K = {K}). 'Spline' bends the template onto keypoints with a thin-plate spline "
             "(no network).", "",
             "| difficulty | checkpoint (iterations) | template | model | spline through its own keypoints "
             "| model fed the true keypoints | keypoints: template | keypoints: model "
             "| spline through the true keypoints | spline through the true 68 landmarks |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for d in a.difficulties:
        s = SyntheticFaces(kit_path=a.kit, config=SynthConfig(image_size=size).at_difficulty(d),
                           seed=SEED).sample(a.faces, 1)
        for path, model, prov in models:
            r = measure(model, s)
            lines.append(f"| {d:g} | `{path}` ({prov.get('iterations', '?')}) | " + " | ".join(
                f"{r[k]:.2f}" for k in ("template", "model", "spline_own", "model_true_kp", "kp_template",
                                        "kp_model", "spline_true", "spline_true68")) + " |")
    lines += ["", "Read: 'spline through the true keypoints' is what a perfect keypoint predictor gives without "
              "any vertex network; 'spline through its own keypoints' close to 'model' means the mesh follows "
              "its keypoints; 'model fed the true keypoints' close to 'model' means the vertex module ignores "
              "the guidance.", ""]
    finish(lines, t0, a.threads, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
