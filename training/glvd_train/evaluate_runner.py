"""The runner of ``glvd-train evaluate``: renders the test sets, runs GLVD and every baseline on each face, scores
them (:class:`~glvd_train.evaluate_scoring.Scorer`) and returns an :class:`~glvd_train.evaluate_results.Evaluation`
for the report."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glvd.cameras import Cameras, rotation_angle_deg

from .evaluate_results import (
    CONSISTENCY_SEED,
    HELD_OUT,
    HELD_OUT_SEED,
    M_3DMM,
    M_3DMM_GT,
    M_ABS,
    M_GLVD_EST,
    M_GLVD_LMK,
    M_GLVD_TRUE,
    M_LVD_EST,
    M_LVD_TRUE,
    M_MP,
    M_RIDGE,
    M_TEMPLATE,
    OUT_OF_PCA,
    OUT_OF_PCA_SEED,
    RENDER_SCALE,
    TIMING_REPEATS,
    Evaluation,
)
from .evaluate_scoring import Scorer, per_step_v2v

REPO = Path(__file__).resolve().parents[2]
#: the 51 inner 68-landmarks: MediaPipe's jaw contour follows the silhouette, the kit's jaw landmarks are fixed vertices
INNER51 = list(range(17, 68))


def say(msg: str) -> None:
    print(f"glvd-train evaluate: {msg}", file=sys.stderr, flush=True)


class EvaluationError(Exception):
    """What stops an evaluation before it measured anything; ``code`` is the exit status that says so."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- data
def make_test_set(kit: str | None, config, seed: int, samples: int, views: int, chunk: int = 4,
                  render_scale: int = 1) -> dict:
    """``samples`` faces with ``views`` views each (rendered in chunks; deterministic for a seed).

    ``render_scale`` > 1: rendered at that multiple of ``config.image_size`` and area-resized to it;
    ``images_full (B, V, S*r, S*r, 3)`` uint8 keeps the large render (K, landmarks2d: the small one's).
    """
    from .synth import SyntheticFaces

    S = config.image_size
    gen = SyntheticFaces(kit_path=kit, config=config.replace(image_size=S * render_scale), seed=seed)
    parts = []
    left = samples
    while left > 0:
        parts.append(gen.sample(min(chunk, left), views))
        left -= chunk
    keys = ("images", "K", "R", "t", "vertices", "landmarks2d", "deformed", "expression")
    out = {k: torch.cat([p[k] for p in parts]).cpu() for k in keys}
    if render_scale > 1:
        full = out["images"]
        out["images_full"] = (full.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
        B, V = full.shape[:2]
        small = torch.nn.functional.avg_pool2d(full.flatten(0, 1), render_scale)
        out["images"] = small.reshape(B, V, 3, S, S).contiguous()
        out["K"] = out["K"].clone()
        out["K"][..., :2, :] /= render_scale
        out["landmarks2d"] = out["landmarks2d"] / render_scale
    out["head"] = gen.head
    return out


def _load_model(path: Path | None):
    from glvd.checkpoint import load_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_checkpoint(path, "cpu")


def default_checkpoint() -> Path:
    for p in (Path("runs/glvd/model.pt"), REPO / "runs" / "glvd" / "model.pt"):
        if p.is_file():
            return p
    from glvd.checkpoint import default_checkpoint_path

    return default_checkpoint_path()


def _load_ridge(a):
    """Baseline (f)'s map and a note on where it came from (None and why when it cannot be had)."""
    from .descriptor_ridge import DEFAULT_PATH, DescriptorRidge, fit_from_cache

    path = Path(a.ridge) if a.ridge else DEFAULT_PATH
    if path.is_file():
        r = DescriptorRidge.load(path)
        return r, f"map {path} ({r.faces} cached faces, ridge {r.lam:g}, held-out R^2 {r.val_r2:.3f})"
    try:
        r = fit_from_cache(a.cache)
    except FileNotFoundError as exc:
        return None, f"(f) skipped: no map at {path} and no cache ({exc})"
    return r, (f"fitted on the cache {a.cache} in this run ({r.faces} faces, ridge {r.lam:g}, held-out R^2 "
               f"{r.val_r2:.3f})")


def _photo_consistency(a, ckpt: Path, ridge, fm, steps: int) -> dict | None:
    """Real-photo identity consistency of GLVD and (f) (evaluation only), or None without the photos."""
    from .evaluate_expression import M_GLVD_POSED
    from .photo_consistency import default_photos_dir, glvd_method, photo_spread, ridge_method

    if a.photos_identity == "none":
        return None
    folder = Path(a.photos_identity) if a.photos_identity else default_photos_dir()
    if not folder.is_dir():
        say(f"no real photos at {folder}: the real-photo consistency rows are skipped")
        return None
    from glvd.api import Reconstructor

    rec, shared = Reconstructor(ckpt, device="cpu"), {}
    methods = {M_GLVD_LMK: glvd_method(rec, steps, cache=shared)}
    if rec.model.expression is not None:  # the neutral faces above; the faces as the photos show them here
        methods[M_GLVD_POSED] = glvd_method(rec, steps, posed=True, cache=shared)
    if ridge is not None:
        methods[M_RIDGE] = ridge_method(ridge, fm)
    return {"folder": str(folder), "rows": photo_spread(folder, methods, log=say)}


# --------------------------------------------------------------------------- running
@torch.inference_mode()
def run_glvd(model, images: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, steps: int,
             landmarks: list[np.ndarray | None] | None = None, guidance=None) -> dict:
    """One face: ``images (V, 3, S, S)``, cameras ``(V, ...)``.

    Returns ``est``/``true`` descents ``(T+1, N, 3)``, the estimated ``R_est (V, 3, 3)`` (the final
    cameras, as the runtime returns them for photos without landmarks), the time of the
    estimated-camera path (encode + cameras + descent) and of the camera estimate alone. With
    ``landmarks`` (per view ``(68, 2)`` detected crop pixels or None) also the photo path of
    :class:`glvd.Reconstructor`: ``lmk`` (descent from PnP cameras on the template's landmarks),
    ``R_lmk`` (PnP once more on the result, as the runtime returns them), ``lmk_views`` (views placed
    by landmarks) and ``wide_views`` (of those, the ones that kept the camera head's rotation).
    ``guidance``: the identity code and landmarks (:class:`glvd.model.Guidance`) for a model that reads them.
    """
    from glvd.pose import FROM_BLENDED, FROM_HEAD, FROM_HEAD_AND_LANDMARKS, descend_with_landmark_cameras

    t_cams, t_ests = [], []
    no_landmarks = [None] * images.shape[0]
    for _ in range(TIMING_REPEATS):  # deterministic: the same result each time; the median time is kept
        t0 = time.perf_counter()
        feats = model.encode(images[None])
        prep = model.prepare(feats, guidance)
        est = model.estimate_cameras(feats, K[None], prep)
        t_cams.append(time.perf_counter() - t0)
        # what the runtime does without a detector's landmarks (with a refiner: once more on the result)
        xs_est, _, final, _ = descend_with_landmark_cameras(model, feats, est, no_landmarks, steps, prep=prep)
        t_ests.append(time.perf_counter() - t0)
    t_cam, t_est = float(np.median(t_cams)), float(np.median(t_ests))
    xs_true, _ = model.descend(feats, Cameras(K[None], R[None], t[None]), steps, prep=prep)
    out = {"est": xs_est[0], "true": xs_true[0], "R_est": final.R[0], "time": t_est, "time_cam": t_cam}
    if landmarks is not None:
        t1 = time.perf_counter()
        xs_lmk, _, cams, sources = descend_with_landmark_cameras(model, feats, est, landmarks, steps, prep=prep)
        out.update(lmk=xs_lmk[0], R_lmk=cams.R[0], lmk_views=sum(s != FROM_HEAD for s in sources),
                   wide_views=sources.count(FROM_HEAD_AND_LANDMARKS), blended_views=sources.count(FROM_BLENDED),
                   time_lmk=t_cam + time.perf_counter() - t1)
    return out


@dataclass
class _Face:
    """One test face's inputs shared by its view counts: the truth, the landmarks, the identity descriptors."""

    sname: str
    i: int
    gt: torch.Tensor  # (N, 3)
    key: int  # the Scorer's cache key of its GT surface
    gt_noisy: torch.Tensor  # (V, 68, 2) the true landmarks + 2 px noise
    lm_real: torch.Tensor  # (V, 68, 2) MediaPipe's where it found the face, else gt_noisy's
    mp_pts: list  # MediaPipe's 478 points per view (None: not found)
    detected: list  # MediaPipe's 68 per view (None: not found), for the photo path
    desc: np.ndarray | None  # (V, 128) identity descriptors
    lm_full: list | None  # a guided model's landmarks per view
    chip_maps: np.ndarray | None = None  # (V, 128, 8, 8) the backbone's chip maps (a chip-features model)
    chip_affine: np.ndarray | None = None  # (V, 2, 3) crop pixels -> chip pixels

    def guidance(self, V: int, landmarks: torch.Tensor | None = None):
        """A guided model's :class:`glvd.guidance.Guidance` for the first ``V`` views (``landmarks (V, 68, 2)``:
        instead of the detector's)."""
        from glvd.model import Guidance

        chip = (None, None) if self.chip_maps is None else (self.chip_maps[:V], self.chip_affine[:V])
        g = Guidance.of_views(self.desc[:V].mean(0), self.lm_full[:V], *chip)
        return g if landmarks is None else Guidance(g.identity, landmarks[None].float(), g.chip_maps, g.chip_affine)


class _Runner:
    """Runs every method on every face into one :class:`Evaluation` (``run`` is the whole of it)."""

    def __init__(self, a: argparse.Namespace, model, abl, steps: int) -> None:
        from glvd.identity import IdentityEncoder

        from .baselines import FaceModel, MediaPipeMesh, default_canonical_path, mediapipe_correspondence
        from .baselines import read_obj_vertices
        from .synth import SynthConfig

        self.a, self.model, self.abl, self.steps = a, model, abl, steps
        tpl = model.template
        tris = tpl.triangles()
        S = model.cfg.image_size
        self.maxV = max(a.views)
        self.scorer = Scorer(tris, tpl.narrow_count, tpl.landmarks68, a.surface_points or None, seed=a.seed)
        self.sets = {
            HELD_OUT: (SynthConfig(image_size=S), HELD_OUT_SEED + 1000 * a.seed),
            OUT_OF_PCA: (SynthConfig.out_of_pca(image_size=S), OUT_OF_PCA_SEED + 1000 * a.seed),
        }
        self.data = {}
        for name, (cfg, seed) in self.sets.items():
            say(f"rendering {a.samples} {name} faces x {self.maxV} views at {S} px (seed {seed})")
            self.data[name] = make_test_set(a.kit, cfg, seed, a.samples, self.maxV, render_scale=RENDER_SCALE)
        head = self.data[HELD_OUT]["head"]
        if head.face_count != tpl.num_vertices:
            raise EvaluationError(f"the kit's face area ({head.face_count}) does not match the checkpoint "
                                  f"({tpl.num_vertices})", 2)
        self.fm = FaceModel.from_head(head, tris)

        # MediaPipe: the realistic landmark source for (b)/(c), and baseline (e)
        self.mp, self.corr, self.mp_note = None, None, ""
        if not a.no_mediapipe:
            try:
                self.mp = MediaPipeMesh()
            except Exception as exc:  # not installed or broken
                self.mp_note = f"MediaPipe unavailable ({exc}); (b) used GT landmarks + 2 px noise, (e) skipped"
            canon_path = Path(a.canonical) if a.canonical else default_canonical_path()
            if self.mp is not None and canon_path.is_file():
                self.corr = mediapipe_correspondence(tpl.vertices, tris, tpl.landmarks68,
                                                     read_obj_vertices(canon_path))
            elif self.mp is not None:
                self.mp_note = f"MediaPipe canonical mesh not found at {canon_path}: (e) skipped"

        self.ridge, self.ridge_note = _load_ridge(a)
        if self.ridge is not None and self.ridge.W.shape[1] != self.fm.num_identity:  # another kit's (tiny test kit)
            self.ridge, self.ridge_note = None, (f"(f) skipped: its map predicts {self.ridge.W.shape[1]} identity "
                                                 f"coefficients, the kit has {self.fm.num_identity}")
        # the descriptors of (f) and of a model that reads them (loaded only when one of the two needs it)
        self.identity = IdentityEncoder() if self.ridge is not None or model.needs_guidance else None
        self.noise_gen = torch.Generator().manual_seed(1234 + a.seed)
        self.ev = Evaluation(curves=defaultdict(list), rot_err=defaultdict(list))
        self.lm_source: dict[str, int] = defaultdict(int)
        self.lmk_views: dict[tuple[str, int], int] = defaultdict(int)  # views the photo path placed by landmarks
        self.wide_views: dict[tuple[str, int], int] = defaultdict(int)  # of those, kept the head's rotation
        self.blended_views: dict[tuple[str, int], int] = defaultdict(int)  # of those, blended with the head's
        self.lm2d_err: list[float] = []

    def faces(self, t_start: float) -> None:
        """Every face of every set, every view count, every method."""
        for sname, d in self.data.items():
            n = d["images"].shape[0]
            for i in range(n):
                face = self._face(sname, d, i)
                for V in self.a.views:
                    self._views(face, d, V)
                last = [r for r in self.ev.records if r["set"] == sname and r["face"] == i
                        and r["method"] == M_GLVD_EST]
                say(f"{sname} face {i + 1}/{n}: GLVD " + ", ".join(f"{r['views']}v {r['v2v']:.2f} mm" for r in last)
                    + f" ({time.perf_counter() - t_start:.0f} s)")

    def _face(self, sname: str, d: dict, i: int) -> _Face:
        """The landmarks (MediaPipe where it finds the face, else the truth + 2 px noise) and the descriptors."""
        from glvd.landmarks_map import mediapipe_to_68

        mp, maxV = self.mp, self.maxV
        gt_noisy = d["landmarks2d"][i] + torch.randn(maxV, 68, 2, generator=self.noise_gen) * 2.0
        lms, mp_pts, detected = [], [], []
        for v in range(maxV):
            pts = mp(d["images"][i, v]) if mp is not None else None
            mp_pts.append(pts)
            if pts is not None:
                l68 = torch.from_numpy(mediapipe_to_68(pts[:, :2])).float()
                self.lm2d_err.append(float((l68 - d["landmarks2d"][i, v]).norm(dim=-1).mean()))
                lms.append(l68)
                detected.append(l68.numpy())
                self.lm_source["mediapipe"] += 1
            else:
                lms.append(gt_noisy[v])
                detected.append(None)
                self.lm_source["GT + 2 px noise"] += 1
        # the identity descriptors: MediaPipe on the large render (the truth where it finds nothing)
        desc, lm_full, chip = None, None, (None, None)
        if self.identity is not None:
            full = d["images_full"][i]
            found_full = [mp(full[v]) if mp is not None else None for v in range(maxV)]
            pts_full = [p_[:, :2] if p_ is not None else d["landmarks2d"][i, v].numpy() * RENDER_SCALE
                        for v, p_ in enumerate(found_full)]
            desc, maps, affine = self.identity.describe_with_maps(list(full), pts_full)
            if self.model.cfg.chip_features:
                affine[..., :2] *= RENDER_SCALE  # crop pixels -> the large render's -> the chip's
                chip = (maps, affine)
            # a guided model's landmarks: MediaPipe on the large render (as the cache's), at the crop's scale
            lm_full = [mediapipe_to_68(p_[:, :2]).astype(np.float32) / RENDER_SCALE if p_ is not None
                       else None for p_ in found_full]
        return _Face(sname, i, d["vertices"][i], hash((sname, i)), gt_noisy, torch.stack(lms), mp_pts, detected,
                     desc, lm_full, *chip)

    def _add(self, f: _Face, V: int, method: str, pred: torch.Tensor, secs: float | None) -> None:
        self.ev.records.append({"set": f.sname, "views": V, "face": f.i, "method": method, "time": secs,
                                **self.scorer.score(pred, f.gt, f.key)})

    def _views(self, f: _Face, d: dict, V: int) -> None:
        """One face seen in its first ``V`` views: GLVD (and the ablation), then the baselines."""
        glvd_final = self._glvd(f, d, V)
        self._baselines(f, d, V, glvd_final)

    def _glvd(self, f: _Face, d: dict, V: int) -> torch.Tensor:
        """GLVD (estimated, true and landmark cameras; the template) and the LVD ablation; GLVD's final shape."""
        sl = slice(0, V)
        imgs, K, R, t = d["images"][f.i, sl], d["K"][f.i, sl], d["R"][f.i, sl], d["t"][f.i, sl]
        guidance = f.guidance(V) if self.model.needs_guidance else None
        curves, rot_err, key = self.ev.curves, self.ev.rot_err, (f.sname, V)
        glvd_final = None
        for label, mdl, m_true, m_est in (("glvd", self.model, M_GLVD_TRUE, M_GLVD_EST),
                                           ("lvd", self.abl, M_LVD_TRUE, M_LVD_EST)):
            if mdl is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                out = run_glvd(mdl, imgs, K, R, t, self.steps,
                               f.detected[:V] if self.mp is not None and label == "glvd" else None,
                               guidance if label == "glvd" else None)
            # a neutral model is scored on the face the photo shows: its neutral face + the read expression
            shown = self._expression(f, d, V, out, (imgs, K, R, t)) if label == "glvd" and mdl.expression is not None \
                else {}
            final = {k: shown.get(k, out[k][-1]) for k in ("est", "true", "lmk") if k in out}
            self._add(f, V, m_est, final["est"], out["time"])
            if "lmk" in out:
                self._add(f, V, M_GLVD_LMK, final["lmk"], out["time_lmk"])
                curves[(*key, M_GLVD_LMK)].append(per_step_v2v(out["lmk"], f.gt))
                rot_err[(*key, M_GLVD_LMK)].append(float(rotation_angle_deg(out["R_lmk"], R).mean()))
                self.lmk_views[key] += out["lmk_views"]
                self.wide_views[key] += out["wide_views"]
                self.blended_views[key] += out["blended_views"]
            self._add(f, V, m_true, final["true"], None)
            curves[(*key, m_est)].append(per_step_v2v(out["est"], f.gt))
            curves[(*key, m_true)].append(per_step_v2v(out["true"], f.gt))
            rot_err[(*key, m_est)].append(float(rotation_angle_deg(out["R_est"], R).mean()))
            if label == "glvd":
                self._add(f, V, M_TEMPLATE, out["est"][0], out["time_cam"])
                glvd_final = final["est"]
        return glvd_final

    def _expression(self, f: _Face, d: dict, V: int, out: dict, view: tuple) -> dict:
        """The neutral face's rows, the weights' rows (1 view) and, per camera path, the face the photos show;
        ``view``: the face's ``images, K, R, t`` in its first ``V`` views."""
        from .evaluate_expression import (M_GLVD_NEUTRAL, M_GLVD_NEUTRAL_TRUE_CAMS, M_GLVD_NEUTRAL_TRUE_LMS,
                                          M_TEMPLATE_NEUTRAL, SRC_MEDIAPIPE, SRC_TRUTH, descend_on_true_landmarks,
                                          neutral_truth, posed, weights)

        m, e_true, R = self.model, d["expression"][f.i], view[2]
        gt_n, key = neutral_truth(m, f.gt, e_true), hash((f.sname, f.i, "neutral"))
        rows = [(M_GLVD_NEUTRAL, out["est"][-1]), (M_TEMPLATE_NEUTRAL, out["est"][0]),
                (M_GLVD_NEUTRAL_TRUE_CAMS, out["true"][-1])]
        if m.cfg.landmark_guidance and f.desc is not None:
            rows.append((M_GLVD_NEUTRAL_TRUE_LMS, descend_on_true_landmarks(
                m, *view, self.steps, f.guidance(V, f.gt_noisy[:V]))))
        for method, pred in rows:
            self.ev.records.append({"set": f.sname, "views": V, "face": f.i, "method": method, "time": None,
                                    **self.scorer.score(pred, gt_n, key)})
        lms = (f.lm_full if f.lm_full is not None else f.detected)[:V]
        rows = {"est": out["R_est"], "true": R, "lmk": out.get("R_lmk")}
        shown = {k: posed(m, out[k][-1], weights(m, lms, Rk)) for k, Rk in rows.items() if k in out}
        if V == 1:
            for src, pred in ((SRC_MEDIAPIPE, weights(m, lms, out["R_est"])),
                              (SRC_TRUTH, weights(m, [f.gt_noisy[0].numpy()], R))):
                self.ev.expr_rows.append({"set": f.sname, "views": V, "face": f.i, "source": src,
                                          "pred": pred.numpy(), "true": e_true.numpy()})
        return shown

    def _baselines(self, f: _Face, d: dict, V: int, glvd_final: torch.Tensor) -> None:
        """(b), (b'), (c) on its first faces, (f), and (e) at MediaPipe's points (1 view)."""
        from .baselines import aligned_point_error_mm, fit_analysis_by_synthesis, fit_landmarks_3dmm

        a, fm, sl = self.a, self.fm, slice(0, V)
        imgs, K, R = d["images"][f.i, sl], d["K"][f.i, sl], d["R"][f.i, sl]
        lm_sub = INNER51 if self.mp is not None else None
        rot_err = self.ev.rot_err
        t0 = time.perf_counter()
        fit = fit_landmarks_3dmm(fm, f.lm_real[sl], K, subset=lm_sub, sigma_px=3.0 if lm_sub else 2.0)
        t_fit = time.perf_counter() - t0
        self._add(f, V, M_3DMM, fit["vertices"], t_fit)
        rot_err[(f.sname, V, M_3DMM)].append(float(rotation_angle_deg(fit["R"], R).mean()))
        t0 = time.perf_counter()
        fit_gt = fit_landmarks_3dmm(fm, f.gt_noisy[sl], K)
        self._add(f, V, M_3DMM_GT, fit_gt["vertices"], time.perf_counter() - t0)
        if not a.skip_slow and f.sname == HELD_OUT and f.i < a.abs_samples:
            t0 = time.perf_counter()
            ab = fit_analysis_by_synthesis(fm, imgs, K, f.lm_real[sl], fit, steps=a.abs_steps, subset=lm_sub,
                                           sigma_px=3.0 if lm_sub else 2.0)
            self._add(f, V, M_ABS, ab["vertices"], t_fit + time.perf_counter() - t0)
            rot_err[(f.sname, V, M_ABS)].append(float(rotation_angle_deg(ab["R"], R).mean()))
        if self.ridge is not None:
            t0 = time.perf_counter()
            alpha = torch.from_numpy(self.ridge.coefficients(f.desc[:V])).float()
            self._add(f, V, M_RIDGE, fm.vertices(alpha, torch.zeros(fm.num_expression)), time.perf_counter() - t0)
        corr = self.corr
        if V == 1 and corr is not None and f.mp_pts[0] is not None:
            gtp = corr.points(f.gt)
            self.ev.mp_rows.append({
                "set": f.sname, "face": f.i, M_MP: aligned_point_error_mm(f.mp_pts[0][corr.keep], gtp),
                M_GLVD_EST: aligned_point_error_mm(corr.points(glvd_final), gtp),
                M_TEMPLATE: aligned_point_error_mm(corr.points(self.model.template.vertices), gtp),
                M_3DMM: aligned_point_error_mm(corr.points(fit["vertices"]), gtp)})


def run(a: argparse.Namespace, command: str, t_start: float) -> Evaluation:
    """The whole evaluation the options ``a`` ask for (``glvd-train evaluate``'s; ``command`` is its line)."""
    from glvd.landmarks_map import mediapipe_to_68

    from .evaluate_consistency import identity_spread

    ckpt = Path(a.checkpoint) if a.checkpoint else default_checkpoint()
    try:
        model, prov = _load_model(ckpt)
    except Exception as exc:  # CheckpointError and friends: say which file
        raise EvaluationError(f"cannot load the checkpoint {ckpt}: {exc}", 5) from exc
    abl, abl_prov = None, None
    if a.ablation and Path(a.ablation).is_file():
        try:
            abl, abl_prov = _load_model(Path(a.ablation))
        except Exception as exc:
            say(f"ablation {a.ablation} unreadable ({exc}); reported as missing")
    steps = a.steps or model.cfg.steps
    r = _Runner(a, model, abl, steps)
    r.faces(t_start)
    total_s = time.perf_counter() - t_start
    ev = r.ev
    ev.info = {
        "command": command, "checkpoint": str(ckpt), "provenance": prov, "ablation": a.ablation,
        "ablation_provenance": abl_prov, "samples": a.samples, "views": a.views, "steps": steps,
        "image_size": model.cfg.image_size, "sets": {k: v[1] for k, v in r.sets.items()},
        "lm_source": dict(r.lm_source), "lmk_views": dict(r.lmk_views), "wide_views": dict(r.wide_views),
        "blended_views": dict(r.blended_views),
        "lm2d_err_px": float(np.mean(r.lm2d_err)) if r.lm2d_err else None, "mp_note": r.mp_note,
        "corr": r.corr, "abs": None if a.skip_slow else (a.abs_samples, a.abs_steps), "total_s": total_s,
        "threads": a.threads, "surface_points": a.surface_points or None,
        "refiner": model.camera_refiner is not None,
    }
    detect68 = None
    if r.mp is not None:

        def detect68(image: torch.Tensor) -> np.ndarray | None:
            pts = r.mp(image)
            return None if pts is None else mediapipe_to_68(pts[:, :2])

    ev.info["consistency"] = identity_spread(model, a.kit, CONSISTENCY_SEED, steps=steps, detect=detect68)
    ev.info["ridge_note"] = r.ridge_note
    if model.expression is not None:
        from .expression_training import most_visible

        names = list(model.template.expression_names)
        ev.info["expression"] = {"names": names, "top": most_visible(model.template.expressions, names)}
    ev.info["photo_consistency"] = _photo_consistency(a, ckpt, r.ridge, r.fm, steps)
    if r.mp is not None:
        r.mp.close()
    ev.info["total_s"] = time.perf_counter() - t_start
    ev.info["load_avg"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return ev
