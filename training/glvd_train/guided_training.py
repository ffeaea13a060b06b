"""``glvd-train guided``: teach GLVD's fields to read the frozen real-face networks, on the feature cache.

The model is widened with the identity code and the landmark offsets (``ModelConfig.identity_dim``,
``landmark_guidance``; zero-initialised, so it starts as exactly the model it comes from) and its
keypoint and vertex modules are trained on whole unrolled descents from the template
(:func:`glvd_train.train.unrolled_field_losses`) over the cache's renders: the encoder, the camera
head and the feature projections stay frozen, and the frozen networks' outputs come from the cache,
so an iteration costs one encoder pass and the descent. Each batch takes one of a face's views (two
in ``--multi-view-frac`` of them); the identity code is the mean of those views' descriptors, the
landmarks MediaPipe's (mapped to the 68) where it found the face. The cache's first ``--val-shards``
shards are held out for validation. Resumes from ``OUT/state.pt`` (saved at every validation);
writes ``OUT/model.pt`` at every validation that beats the best so far.

    glvd-train guided --cache runs/cache --init-from vendor/glvd/glvd/weights/glvd_face.pt \\
        --out runs/guided --minutes 60
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from glvd.cameras import Cameras
from glvd.checkpoint import load_checkpoint, save_checkpoint
from glvd.expression import expression_offsets
from glvd.facenet import DESCRIPTOR_DIM
from glvd.landmarks_map import mediapipe_to_68
from glvd.model import GLVD, Guidance, ModelConfig

from .feature_cache import FeatureCache
from .losses import jitter_cameras, unrolled_field_losses
from .photometric import augment
from .train import git_commit

CHIP_LAYERS = ("keypoints.chip_proj.weight", "vertices.chip_proj.weight")
NEW_LAYERS = ("keypoints.guide.weight", "vertices.identity_proj.weight", *CHIP_LAYERS)


def widen(model: GLVD, identity_dim: int = DESCRIPTOR_DIM, landmarks: bool = True) -> GLVD:
    """The same model with the guidance inputs (zero weights: its output is unchanged)."""
    cfg = ModelConfig.from_dict({**model.cfg.to_dict(), "identity_dim": identity_dim,
                                 "landmark_guidance": landmarks})
    wide = GLVD(cfg, model.template)
    missing, unexpected = wide.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(k not in NEW_LAYERS for k in missing):
        raise ValueError(f"cannot widen: missing {missing}, unexpected {unexpected}")
    return wide


def with_chip_features(model: GLVD) -> GLVD:
    """The same model whose fields also read the identity backbone's chip maps (ModelConfig.chip_features;
    zero-initialised projections: its output is unchanged until training uses them)."""
    out = GLVD(ModelConfig.from_dict({**model.cfg.to_dict(), "chip_features": True}), model.template)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    if unexpected or set(missing) - set(CHIP_LAYERS):
        raise ValueError(f"cannot add chip features: missing {missing}, unexpected {unexpected}")
    return out


def with_landmark_scale(model: GLVD, scale: float) -> GLVD:
    """The same model with its landmark offsets input at ``scale`` (ModelConfig.landmark_input_scale); the guide
    layer's offset columns divided to match, so that it computes exactly what it did."""
    old = model.cfg.landmark_input_scale
    out = GLVD(ModelConfig.from_dict({**model.cfg.to_dict(), "landmark_input_scale": float(scale)}), model.template)
    out.load_state_dict(model.state_dict())
    if model.cfg.landmark_guidance:
        d = model.cfg.identity_dim
        with torch.no_grad():
            out.keypoints.guide.weight[:, d:d + 2] *= old / scale  # the 2 offset channels, not the found flag
    return out


def fit_prior(cache: Path, model: GLVD, rank: int, kit: str | None = None,
              skip_faces: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The identity prior: baseline (f)'s ridge (descriptor -> the kit's identity) times the kit's identity
    basis over the face area, as a linear field of vertex offsets, truncated to ``rank`` by an SVD.
    Returns ``prior_map (D + 1, r)`` and ``prior_basis (r, N, 3)`` (metres)."""
    from .baselines import FaceModel
    from .descriptor_ridge import fit_from_cache
    from .synth.morphable import HeadModel

    ridge = fit_from_cache(cache, skip_faces, kit)
    face = FaceModel.from_head(HeadModel.load(kit), model.template.triangles())
    n = face.mean.shape[0]
    M = ridge.W @ face.identity.double().numpy().reshape(face.num_identity, n * 3)  # [code, 1] -> offsets
    U, S, Vt = np.linalg.svd(M, full_matrices=False)
    r = min(rank, len(S))
    prior_map = torch.from_numpy(U[:, :r] * S[:r]).float()
    prior_basis = torch.from_numpy(Vt[:r].reshape(r, n, 3)).float()
    return prior_map, prior_basis


def with_prior(model: GLVD, prior_map: torch.Tensor, prior_basis: torch.Tensor) -> GLVD:
    """The same model starting from (and measuring its offsets against) the identity prior's face."""
    cfg = ModelConfig.from_dict({**model.cfg.to_dict(), "identity_prior_rank": int(prior_map.shape[1])})
    out = GLVD(cfg, model.template)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    if unexpected or set(missing) - {"prior_map", "prior_basis"}:
        raise ValueError(f"cannot add the prior: missing {missing}, unexpected {unexpected}")
    out.prior_map.copy_(prior_map)
    out.prior_basis.copy_(prior_basis)
    return out


#: what the descent is trained to land on: the rendered face, or the person's neutral face (the rendered
#: face without its ARKit expression; the expression is read apart, glvd.expression)
TARGETS = ("expressive", "neutral")


def neutral_faces(vertices: torch.Tensor, expression: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """``vertices (F, N, 3)`` minus their expressions ``(F, E)`` times the kit's deltas ``(E, N, 3)``: the
    identity shape with its out-of-PCA field (as the data engine builds the face, linearly)."""
    return vertices - expression_offsets(expression, deltas).to(vertices.dtype)


class CachedFaces:
    """The cache as tensors, with MediaPipe's 68 per view (NaN where not found); ``target="neutral"``:
    the truth is each face without its expression (``deltas (E, N, 3)``, the template's)."""

    def __init__(self, path: Path, val_shards: int, target: str = "expressive",
                 deltas: torch.Tensor | None = None):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        c = FeatureCache(path)
        a = c.arrays
        per = c.meta["faces_per_shard"]
        self.n_val = val_shards * per
        self.images = torch.from_numpy(a["images"])  # (F, V, S, S, 3) uint8
        self.K, self.R, self.t = (torch.from_numpy(a[k]).float() for k in ("K", "R", "t"))
        self.expression = torch.from_numpy(a["expression"]).float()  # (F, E)
        self.vertices = torch.from_numpy(a["vertices"])  # fp16
        if target == "neutral":
            self.vertices = neutral_faces(self.vertices.float(), self.expression, deltas).half()
        self.descriptor = torch.from_numpy(a["descriptor"].astype(np.float32))
        mesh = a["mesh2d"]
        lm = np.full(mesh.shape[:2] + (68, 2), np.nan, np.float32)
        for f, v in zip(*np.nonzero(a["mesh_found"]), strict=True):
            lm[f, v] = mediapipe_to_68(mesh[f, v])
        self.landmarks = torch.from_numpy(lm)
        self.true_landmarks = torch.from_numpy(a["landmarks2d"]).float()  # (F, V, 68, 2) the truth projected
        # (F, V, 128, 8, 8) fp16 and (F, V, 2, 3): the backbone's chip maps and crop -> chip pixels (cache v2)
        self.chip_maps = torch.from_numpy(a["chip_maps"]) if "chip_maps" in a else None
        self.chip_affine = torch.from_numpy(a["chip_affine"]).float() if "chip_affine" in a else None
        self.faces, self.views = self.images.shape[:2]
        self.shards = c.shards

    def batch(self, faces: torch.Tensor, views: int, landmarks: torch.Tensor | None = None) -> dict:
        """``faces (B,)`` with their first ``views`` views: images (B,V,3,S,S) float, cameras, truth, guidance
        (``landmarks (B, V, 68, 2)``: instead of MediaPipe's, e.g. :func:`noisy_true_landmarks`)."""
        sl = slice(0, views)
        imgs = self.images[faces, sl].permute(0, 1, 4, 2, 3).float() / 255.0
        lm = self.landmarks[faces, sl] if landmarks is None else landmarks
        maps = None if self.chip_maps is None else self.chip_maps[faces, sl].float()
        aff = None if self.chip_affine is None else self.chip_affine[faces, sl]
        return {"images": imgs, "K": self.K[faces, sl], "R": self.R[faces, sl], "t": self.t[faces, sl],
                "gt": self.vertices[faces].float(),
                "guidance": Guidance(self.descriptor[faces, sl].mean(1), lm, maps, aff)}


#: which 2D landmarks the fields read in training: MediaPipe's on the render, the truth projected with noise
#: (MediaPipe on our renders is far rougher than on photos, and a model trained on it learns to ignore its
#: landmarks: research/photo_consistency_sources), or a mix
LANDMARK_SOURCES = ("mediapipe", "true", "mixed")


def noisy_true_landmarks(data: CachedFaces, faces: torch.Tensor, views: int, gen: torch.Generator,
                         max_px: float) -> torch.Tensor:
    """``(B, V, 68, 2)`` the true projections plus Gaussian noise, its sigma drawn per face in [0, max_px] crop
    pixels (some faces nearly exact, some as rough as a detector on a hard photo)."""
    lm = data.true_landmarks[faces, :views]
    sigma = torch.rand(lm.shape[0], 1, 1, 1, generator=gen) * max_px
    return lm + torch.randn(lm.shape, generator=gen) * sigma


def training_landmarks(source: str, data: CachedFaces, faces: torch.Tensor, views: int, gen: torch.Generator,
                       max_px: float, mediapipe_frac: float) -> torch.Tensor | None:
    """The landmarks of one training batch (None: MediaPipe's)."""
    if source == "mediapipe" or (source == "mixed" and float(torch.rand((), generator=gen)) < mediapipe_frac):
        return None
    return noisy_true_landmarks(data, faces, views, gen, max_px)


def prepared(model: GLVD, b: dict):
    """Frozen encoder features (no gradient) and the fields' prepared inputs (gradients reach the new layers)."""
    with torch.no_grad():
        feats = model.encode(b["images"])
        R_p, t_p, _ = model.camera_head(feats, b["K"])
    return feats, model.prepare(feats, b["guidance"]), (R_p, t_p)


#: validation with the true landmarks: this fixed noise (crop pixels, about a detector's on a good photo)
VAL_NOISE_PX = 1.5


@torch.no_grad()
def validate(model: GLVD, data: CachedFaces, views: int, steps: int = 10, landmarks: str = "mediapipe") -> float:
    """Mean aligned final error (mm) over the held-out faces, true cameras; ``landmarks``: MediaPipe's, or
    ``"true"`` (the truth projected + :data:`VAL_NOISE_PX` noise, the same draw every time)."""
    from .metrics import vertex_error_mm

    model.eval()
    errs = []
    gen = torch.Generator().manual_seed(0)
    for start in range(0, data.n_val, 16):
        faces = torch.arange(start, min(start + 16, data.n_val))
        lm = None
        if landmarks == "true":
            lm = data.true_landmarks[faces, :views]
            lm = lm + torch.randn(lm.shape, generator=gen) * VAL_NOISE_PX
        b = data.batch(faces, views, lm)
        feats, prep, _ = prepared(model, b)
        xs, _ = model.descend(feats, Cameras(b["K"], b["R"], b["t"]), steps, prep=prep)
        errs.append(vertex_error_mm(xs[:, -1], b["gt"]))
    return float(torch.cat(errs).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="glvd-train guided", description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path("runs/cache"))
    p.add_argument("--init-from", default=None, help="checkpoint to widen (default: the shipped one)")
    p.add_argument("--out", type=Path, default=Path("runs/guided"))
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--subset", type=int, default=2048)
    p.add_argument("--unroll", type=int, default=10)
    p.add_argument("--rise-weight", type=float, default=10.0)
    p.add_argument("--lr", type=float, default=1e-4, help="the fields' existing weights")
    p.add_argument("--lr-new", type=float, default=1e-3, help="the new guidance layers")
    p.add_argument("--lr-chip", type=float, default=3e-4, help="the chip maps' projections (--chip-features)")
    p.add_argument("--true-camera-frac", type=float, default=0.7)
    p.add_argument("--multi-view-frac", type=float, default=0.15, help="share of batches with two views (else one)")
    p.add_argument("--val-shards", type=int, default=2)
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--reload-every", type=int, default=500, help="iterations between re-reading the growing cache")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prior-rank", type=int, default=32, help="rank of the identity prior (0: start from the "
                   "template); fitted on the cache when the model has none")
    p.add_argument("--kit", default=None, help="ict_facekit_light.npz for the prior (default: $GLVD_KIT or ../shared)")
    p.add_argument("--target", choices=TARGETS, default="neutral",
                   help="land on the rendered face or on its neutral (expression removed) face")
    p.add_argument("--landmarks", choices=LANDMARK_SOURCES, default="mediapipe",
                   help="the 2D landmarks the fields read in training")
    p.add_argument("--landmark-noise-px", type=float, default=2.5,
                   help="with true landmarks: the largest per-face noise sigma (crop pixels)")
    p.add_argument("--mediapipe-frac", type=float, default=0.3, help="--landmarks mixed: share of MediaPipe's")
    p.add_argument("--val-landmarks", choices=("mediapipe", "true"), default=None,
                   help="which landmarks the kept model is chosen on (default: true unless training on "
                        "MediaPipe's); both are logged")
    p.add_argument("--landmark-input-scale", type=float, default=None,
                   help="rescale the landmark offsets input (ModelConfig.landmark_input_scale; 1000: mm)")
    p.add_argument("--photometric", type=float, default=0.0,
                   help="strength of the photometric augmentation of the renders (glvd_train.photometric; 0: none)")
    p.add_argument("--no-field-image", action="store_true",
                   help="the fields read no image features (ModelConfig.field_image False)")
    p.add_argument("--chip-features", action="store_true",
                   help="the fields also read the identity backbone's chip maps (ModelConfig.chip_features; "
                        "needs a cache with chip_maps)")
    a = p.parse_args(argv)
    val_lm = a.val_landmarks or ("mediapipe" if a.landmarks == "mediapipe" else "true")
    torch.set_num_threads(a.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    a.out.mkdir(parents=True, exist_ok=True)
    state_path = a.out / "state.pt"
    base, prov = load_checkpoint(a.init_from, torch.device("cpu"))
    model = widen(base) if not base.needs_guidance else base
    if a.no_field_image and model.cfg.field_image:
        blind = GLVD(ModelConfig.from_dict({**model.cfg.to_dict(), "field_image": False}), model.template)
        blind.load_state_dict(model.state_dict())
        model = blind
    if a.chip_features and not model.cfg.chip_features:
        model = with_chip_features(model)
    if a.landmark_input_scale and a.landmark_input_scale != model.cfg.landmark_input_scale:
        model = with_landmark_scale(model, a.landmark_input_scale)
    if a.prior_rank and not model.cfg.identity_prior_rank:
        held_out = a.val_shards * json.loads((a.cache / "cache.json").read_text())["faces_per_shard"]
        model = with_prior(model, *fit_prior(a.cache, model, a.prior_rank, a.kit, skip_faces=held_out))
        log(f"identity prior: rank {model.cfg.identity_prior_rank}, fitted on {a.cache}")
    trainable_names = [n for n, q in model.named_parameters()
                       if n.startswith(("keypoints.mlp", "keypoints.embed", "keypoints.guide", "vertices.rel",
                                        "vertices.l2", "vertices.l3", "vertices.vertex_embed",
                                        "vertices.identity_proj", "keypoints.chip_proj", "vertices.chip_proj"))]
    params = dict(model.named_parameters())
    for q in model.parameters():
        q.requires_grad_(False)
    chip = [params[n] for n in trainable_names if n in CHIP_LAYERS]
    new = [params[n] for n in trainable_names if n in NEW_LAYERS and n not in CHIP_LAYERS]
    old = [params[n] for n in trainable_names if n not in NEW_LAYERS]
    for q in new + old + chip:
        q.requires_grad_(True)
    groups = [{"params": old, "lr": a.lr}, {"params": new, "lr": a.lr_new}]
    if chip:  # its own group: 128 inputs of order 1 each (an older state without it keeps its two groups)
        groups.append({"params": chip, "lr": a.lr_chip})
    opt = torch.optim.Adam(groups)
    new = new + chip  # clipped together
    gen = torch.Generator().manual_seed(7)
    it, minutes_done, best = 0, 0.0, None
    if state_path.is_file():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        it, minutes_done, best = st["it"], st["minutes"], st["best"]
        log(f"resumed at iteration {it} ({minutes_done:.1f} min, best {best})")
    deltas = torch.from_numpy(model.template.expressions.astype(np.float32))
    load = lambda: CachedFaces(a.cache, a.val_shards, a.target, deltas)  # noqa: E731
    data = load()
    if model.cfg.chip_features and data.chip_maps is None:  # checked before any iteration
        log(f"{a.cache} has no chip maps (a version-1 cache): rebuild it with glvd-train cache")
        return 2
    if data.faces <= data.n_val:
        log(f"the cache has {data.faces} faces: not more than the {data.n_val} held out")
        return 2
    if best is None:
        best = {v: validate(model, data, v, landmarks=val_lm) for v in (1, 3)}
        other = validate(model, data, 1, landmarks="true" if val_lm == "mediapipe" else "mediapipe")
        log(f"start: held-out {data.n_val} faces ({a.target}, {val_lm} landmarks), true cameras: 1 view "
            f"{best[1]:.3f} mm, 3 views {best[3]:.3f}; 1 view with the other landmarks {other:.3f}")
        best["start"] = dict(best)
    model.train()
    logf = open(a.out / "log.csv", "a", newline="")
    writer = csv.writer(logf)
    t0 = time.monotonic()
    run = []
    while minutes_done + (time.monotonic() - t0) / 60 < a.minutes:
        if it and it % a.reload_every == 0:
            data = load()
        # a 3-view unrolled descent costs ~7x a 1-view one on this CPU: mostly single views, some pairs
        views = 1 if float(torch.rand((), generator=gen)) >= a.multi_view_frac else min(2, data.views)
        faces = torch.randint(data.n_val, data.faces, (a.batch,), generator=gen)
        lm = training_landmarks(a.landmarks, data, faces, views, gen, a.landmark_noise_px, a.mediapipe_frac)
        b = data.batch(faces, views, lm)
        if a.photometric:
            b["images"] = augment(b["images"], gen, a.photometric)
        feats, prep, (R_p, t_p) = prepared(model, b)
        cams = Cameras(b["K"], b["R"], b["t"])
        use_true = bool(torch.rand((), generator=gen) < a.true_camera_frac)
        cams = jitter_cameras(cams, gen) if use_true else Cameras(b["K"], R_p, t_p)
        idx = torch.randperm(b["gt"].shape[1], generator=gen)[: a.subset]
        out = unrolled_field_losses(model, prep, feats, cams, b["gt"], idx, a.unroll, 0.1, a.rise_weight)
        opt.zero_grad(set_to_none=True)
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(new + old, 5.0)
        opt.step()
        it += 1
        run.append(float(out["vert"].detach()))
        if it % a.val_every == 0:
            v1, v3 = validate(model, data, 1, landmarks=val_lm), validate(model, data, 3, landmarks=val_lm)
            other = validate(model, data, 1, landmarks="true" if val_lm == "mediapipe" else "mediapipe")
            model.train()
            mins = minutes_done + (time.monotonic() - t0) / 60
            log(f"it {it}: loss {np.mean(run):.4f} cm; held-out ({val_lm} landmarks) 1 view {v1:.3f} mm, 3 views "
                f"{v3:.3f} (start {best['start'][1]:.3f} / {best['start'][3]:.3f}), 1 view with the other "
                f"landmarks {other:.3f}; {data.faces} cached faces; {mins:.1f} min, "
                f"{it / max(mins * 60, 1e-9):.2f} it/s overall")
            writer.writerow([it, round(mins, 2), np.mean(run), v1, v3, data.faces, other])
            logf.flush()
            run = []
            if v1 < best[1]:
                best[1], best[3] = v1, v3
                provenance = {k: val for k, val in prov.items() if k not in ("path", "saved")}
                earlier = prov.get("guided_stages", [])  # each stage appends its record
                provenance["guided_stages"] = [*earlier, {
                    "from": a.init_from or "shipped", "commit": git_commit(), "target": a.target, "iterations": it,
                    "cache_faces": data.faces, "cache_shards": data.shards, "batch": a.batch, "unroll": a.unroll,
                    "rise_weight": a.rise_weight, "lr": a.lr, "lr_new": a.lr_new, "lr_chip": a.lr_chip,
                    "true_camera_frac": a.true_camera_frac, "minutes": round(mins, 1),
                    "landmarks": a.landmarks, "landmark_noise_px": a.landmark_noise_px,
                    "mediapipe_frac": a.mediapipe_frac, "val_landmarks": val_lm,
                    "field_image": model.cfg.field_image, "chip_features": model.cfg.chip_features,
                    "landmark_input_scale": model.cfg.landmark_input_scale, "photometric": a.photometric,
                    "val_1v_mm": round(v1, 4), "val_3v_mm": round(v3, 4),
                    "val_start_1v_mm": round(best["start"][1], 4), "val_start_3v_mm": round(best["start"][3], 4),
                    "identity_prior_rank": model.cfg.identity_prior_rank}]
                save_checkpoint(a.out / "model.pt", model.eval(), provenance)
                model.train()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "it": it,
                        "minutes": mins, "best": best}, state_path.with_suffix(".tmp"))
            state_path.with_suffix(".tmp").replace(state_path)
    log(f"done: {it} iterations, best held-out 1 view {best[1]:.3f} mm (start {best['start'][1]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
