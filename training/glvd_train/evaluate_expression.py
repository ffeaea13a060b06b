"""The evaluation of a model that lands on the neutral face and reads the expression apart (glvd.expression).

For such a model the main rows score the face the photo shows, ``neutral + sum_e w_e * delta_e`` with the
predicted weights (the kit's deltas: the data engine's own linear model of an expression), against the
rendered face, as every other method is scored; these rows add the neutral face against the true neutral
(the render's shape without its expression) and the weights against the true ones, per source of landmarks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from glvd.expression import expression_offsets
from glvd.guidance import landmark_stack

from .evaluate_results import HELD_OUT, Evaluation, fmt
from .expression_training import r_squared

M_GLVD_NEUTRAL = "GLVD neutral face vs the true neutral, estimated cameras"
M_TEMPLATE_NEUTRAL = "(a) template vs the true neutral"
#: the same with the true cameras, the landmarks MediaPipe's on the render / the truth + 2 px noise: how much the
#: descent takes from precise 2D evidence (MediaPipe reads our renders far worse than photos)
M_GLVD_NEUTRAL_TRUE_CAMS = "GLVD neutral face vs the true neutral, true cameras"
M_GLVD_NEUTRAL_TRUE_LMS = "GLVD neutral face vs the true neutral, true cameras, true landmarks + 2 px"
#: the real-photo consistency of the faces as the photos show them (neutral + the read expression)
M_GLVD_POSED = "GLVD as in the photo (neutral + read expression), photo path"
#: where the expression head's landmarks came from in the weight rows
SRC_MEDIAPIPE = "MediaPipe on the render"
SRC_TRUTH = "true landmarks + 2 px noise, true rotation"
#: the 10 expressions the R^2 target is measured on (the 10 that move the face most, mouthClose left out:
#: glvd_train.expression_training.most_visible) and the eyes and brows the issue names
NAMED = ("eyeBlink_L", "eyeBlink_R", "browInnerUp_L", "browInnerUp_R")
#: session 14's shipped model (docs/RESULTS.md at 5f6eecc): its expressive error against the expressive truth,
#: held-out renders, estimated cameras, per view count: what the neutral face may not be worse than
EXPRESSIVE_BEFORE_MM = {1: 3.41, 3: 3.23}


@torch.no_grad()
def weights(model, landmarks: list[np.ndarray | None], R: torch.Tensor) -> torch.Tensor:
    """``(E,)`` the face's weights: the mean over the views with landmarks (``(68, 2)`` crop pixels or None)
    of the head's per-view weights, camera rotations ``R (V, 3, 3)``; zeros where no view has landmarks."""
    lm = landmark_stack(landmarks)
    w = model.expression(lm[None], R[None].float())[0]  # (V, E)
    found = torch.isfinite(lm).all(-1).all(-1)
    return w[found].mean(0) if bool(found.any()) else w[0]


@torch.no_grad()
def posed(model, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x (N, 3)`` neutral + ``w (E,)`` times the kit's deltas."""
    deltas = torch.as_tensor(model.template.expressions, dtype=torch.float32)
    return x + expression_offsets(w, deltas)


@torch.no_grad()
def descend_on_true_landmarks(model, images: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                              steps: int, guidance) -> torch.Tensor:
    """The final face ``(N, 3)`` of a guided model's descent from ``images (V, 3, S, S)`` with the true cameras
    and ``guidance`` (batch 1) whose landmarks are the truth's (crop pixels) in place of the detector's."""
    from glvd.cameras import Cameras

    feats = model.encode(images[None])
    prep = model.prepare(feats, guidance)
    xs, _ = model.descend(feats, Cameras(K[None], R[None], t[None]), steps, prep=prep)
    return xs[0, -1]


def neutral_truth(model, vertices: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
    """The render's shape ``(N, 3)`` without its expression ``(E,)``."""
    return posed(model, vertices, -expression)


def weight_table(ev: Evaluation, names: list[str], top: list[str]) -> dict[str, dict]:
    """Per landmark source (held-out, 1 view): ``mae`` over all weights, ``r2`` by name, ``n`` faces."""
    out = {}
    for src in (SRC_MEDIAPIPE, SRC_TRUTH):
        rows = [r for r in ev.expr_rows if r["source"] == src and r["set"] == HELD_OUT and r["views"] == 1]
        if not rows:
            continue
        P, T = np.stack([r["pred"] for r in rows]), np.stack([r["true"] for r in rows])
        r2 = r_squared(torch.from_numpy(P), torch.from_numpy(T)).numpy()
        out[src] = {"mae": float(np.abs(P - T).mean()), "n": len(rows),
                    "r2": {n: float(r2[names.index(n)]) for n in [*top, *NAMED] if n in names}}
    return out


def neutral_rows(ev: Evaluation) -> Iterator[tuple[str, str, bool | None]]:
    """(target, measured, ok): the neutral face against the true neutral, per view count."""
    for V in ev.views if ev.expr_rows else ():
        n, tp = ev.v2v(HELD_OUT, V, M_GLVD_NEUTRAL), ev.v2v(HELD_OUT, V, M_TEMPLATE_NEUTRAL)
        before = EXPRESSIVE_BEFORE_MM.get(V)
        if n is not None and before is not None:
            yield (f"neutral face vs true neutral no worse than session 14's expressive error ({V} view"
                   f"{'s' if V > 1 else ''}, estimated cameras)",
                   f"{fmt(n)} mm (template {fmt(tp)} mm) vs {before:.2f} mm", n <= before)


def weight_rows(ev: Evaluation, limit_r2: float) -> Iterator[tuple[str, str, bool | None]]:
    """(target, measured, ok): the weights' R^2 on the 10 most visible expressions, per landmark source."""
    info = ev.info.get("expression") or {}
    top = info.get("top", [])
    for src, t in weight_table(ev, info.get("names", []), top).items():
        top_r2 = {k: v for k, v in t["r2"].items() if k in top}
        worst = min(top_r2, key=top_r2.get) if top_r2 else None
        yield (f"expression weights: R^2 >= {limit_r2:g} for each of the 10 most visible (1 view, {src})",
               f"min {fmt(top_r2.get(worst))} ({worst}), MAE over all 53 {t['mae']:.3f}, {t['n']} faces",
               None if worst is None else top_r2[worst] >= limit_r2)


def section(ev: Evaluation, w) -> None:
    """The report's expression section (nothing for a model without an expression head)."""
    if not ev.expr_rows:
        return
    info = ev.info.get("expression") or {}
    table = weight_table(ev, info.get("names", []), info.get("top", []))
    w("## Expression: the neutral face and the ARKit weights")
    w("")
    w("The model lands on the neutral face; the main tables score `neutral + sum_e w_e * delta_e` (the predicted "
      "weights times the kit's deltas) against the rendered face. Here: the neutral face against the true neutral, "
      "and the weights (1 view, held-out) against the true ones.")
    w("")
    w("| set | views | GLVD neutral vs true neutral (mm) | true cameras | true cameras, true landmarks + 2 px "
      "| template vs true neutral (mm) |")
    w("|---|---|---|---|---|---|")
    for s in ev.sets:
        for V in ev.views:
            w(f"| {s} | {V} | {fmt(ev.v2v(s, V, M_GLVD_NEUTRAL))} | {fmt(ev.v2v(s, V, M_GLVD_NEUTRAL_TRUE_CAMS))} "
              f"| {fmt(ev.v2v(s, V, M_GLVD_NEUTRAL_TRUE_LMS))} | {fmt(ev.v2v(s, V, M_TEMPLATE_NEUTRAL))} |")
    w("")
    w("The last GLVD column feeds the fields the true landmarks + 2 px noise (crop pixels) instead of MediaPipe's on "
      "the render: what the descent makes of 2D evidence as precise as a detector's on a photo.")
    w("")
    if table:
        srcs = list(table)
        w("| expression | " + " | ".join(f"R^2, {s}" for s in srcs) + " |")
        w("|---|" + "---|" * len(srcs))
        for name in table[srcs[0]]["r2"]:
            w(f"| {name} | " + " | ".join(fmt(table[s]["r2"].get(name)) for s in srcs) + " |")
        w("| MAE over all 53 | " + " | ".join(f"{table[s]['mae']:.3f}" for s in srcs) + " |")
        w("")
