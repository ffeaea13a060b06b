"""Baselines that `glvd-train evaluate` measures GLVD against.

- :func:`fit_landmarks_3dmm`: the classical fit of ICT identity + expression coefficients and the
  cameras to 2D 68-landmarks (Levenberg-Marquardt with a Gaussian prior, cameras started by PnP).
- :func:`fit_analysis_by_synthesis`: coefficients, cameras, albedo and lights fitted by gradient
  descent on a photometric + landmark loss through the differentiable renderer (``glvd_train.synth``).
- :class:`MediaPipeMesh` + :func:`mediapipe_correspondence`: MediaPipe Face Mesh 0.10.21 run on a
  view, and where its 468 points lie on the ICT template surface, so it can be scored there.

Everything is in metres and the OpenCV camera convention of :mod:`glvd.cameras`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glvd.cameras import axis_angle_to_matrix
from glvd.landmarks_map import mediapipe_to_68
from glvd.pose import pnp_cameras

from .metrics import similarity_align, similarity_transform
from .surface import Surface


# --------------------------------------------------------------------------- morphable face
@dataclass
class FaceModel:
    """The ICT morphable model restricted to the face area (the vertices GLVD reconstructs).

    mean ``(N, 3)``, identity ``(I, N, 3)``, expression ``(E, N, 3)`` in metres; landmarks68 ``(68,)``;
    triangles ``(F, 3)`` of the face area.
    """

    mean: torch.Tensor
    identity: torch.Tensor
    expression: torch.Tensor
    landmarks68: torch.Tensor
    triangles: torch.Tensor

    @classmethod
    def from_head(cls, head, triangles: np.ndarray | torch.Tensor) -> FaceModel:
        """From a :class:`glvd_train.synth.HeadModel` (whose face area is its vertex prefix)."""
        n = head.face_count
        N = head.num_vertices
        return cls(
            mean=head.mean[:n].cpu().float(),
            identity=head.id_basis.view(-1, N, 3)[:, :n].cpu().float().contiguous(),
            expression=head.ex_basis.view(-1, N, 3)[:, :n].cpu().float().contiguous(),
            landmarks68=head.landmarks68.cpu().long(),
            triangles=torch.as_tensor(np.asarray(triangles), dtype=torch.long),
        )

    @property
    def num_identity(self) -> int:
        return int(self.identity.shape[0])

    @property
    def num_expression(self) -> int:
        return int(self.expression.shape[0])

    def vertices(self, alpha: torch.Tensor, beta: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 3)`` (or ``(len(ids), 3)``) vertices of coefficients ``alpha (I,)``, ``beta (E,)``."""
        if ids is None:
            return self.mean + torch.einsum("i,inc->nc", alpha, self.identity) + torch.einsum(
                "e,enc->nc", beta, self.expression)
        return (self.mean[ids] + torch.einsum("i,inc->nc", alpha, self.identity[:, ids])
                + torch.einsum("e,enc->nc", beta, self.expression[:, ids]))


def project(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``points (P, 3)`` head frame -> ``(V, P, 2)`` pixels for cameras ``K, R (V, 3, 3)``, ``t (V, 3)``."""
    pc = torch.einsum("vij,pj->vpi", R, points) + t[:, None]
    z = pc[..., 2:3].clamp(min=1e-4)
    uv1 = torch.einsum("vij,vpj->vpi", K, pc / z)
    return uv1[..., :2]


def _skew(y: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` -> ``(..., 3, 3)`` cross-product matrices."""
    x_, y_, z_ = y.unbind(-1)
    o = torch.zeros_like(x_)
    return torch.stack([o, -z_, y_, z_, o, -x_, -y_, x_, o], -1).reshape(*y.shape[:-1], 3, 3)


def fit_landmarks_3dmm(model: FaceModel, landmarks2d: torch.Tensor, K: torch.Tensor,
                       R: torch.Tensor | None = None, t: torch.Tensor | None = None, fit_camera: bool = True,
                       fit_expression: bool = True, sigma_px: float = 2.0, expression_std: float = 0.5,
                       iters: int = 30, subset: np.ndarray | list[int] | None = None) -> dict[str, torch.Tensor]:
    """Fit identity + expression coefficients and the cameras to 2D landmarks (MAP, Levenberg-Marquardt).

    Energy: ``sum |proj(X_lm) - l|^2 / sigma_px^2 + |alpha|^2 + |beta / expression_std|^2`` (identity
    weights are N(0, 1) in the kit; expressions are clamped to [0, 1] after each step). Analytic
    Jacobian; rotations are updated multiplicatively (``R <- exp(w) R``, re-linearised at w = 0).

    Args:
        landmarks2d: ``(V, 68, 2)`` pixels; K: ``(V, 3, 3)``.
        R, t: ``(V, 3, 3)``, ``(V, 3)`` starting (or, with ``fit_camera=False``, fixed) cameras; PnP on the
            mean face when None.
        subset: which of the 68 landmarks to fit (e.g. the 51 inner ones when the jaw contour of the
            detector is defined differently from the model's landmark vertices); all when None.
    Returns:
        ``vertices (N, 3)``, ``identity (I,)``, ``expression (E,)``, ``R (V, 3, 3)``, ``t (V, 3)``.
    """
    dt = torch.float64
    sub = torch.arange(68) if subset is None else torch.as_tensor(np.asarray(subset), dtype=torch.long)
    lm2d = landmarks2d.to(dt)[:, sub]
    K = K.to(dt)
    V = lm2d.shape[0]
    ids = model.landmarks68[sub]
    L = len(ids)
    mean_lm = model.mean[ids].to(dt)
    if R is None or t is None:
        Rn, tn = pnp_cameras(mean_lm.numpy(), lm2d.numpy(), K.numpy())
        Rc, tc = torch.from_numpy(Rn), torch.from_numpy(tn)
    else:
        Rc, tc = R.to(dt).clone(), t.to(dt).clone()
    I_, E_ = model.num_identity, model.num_expression
    nE = E_ if fit_expression else 0
    basis = torch.cat([model.identity[:, ids], model.expression[:, ids][:nE]], 0).to(dt)  # (P, L, 3)
    P = I_ + nE
    prior_w = torch.cat([torch.ones(I_, dtype=dt), torch.full((nE,), 1.0 / expression_std, dtype=dt)])
    fx, fy = K[:, 0, 0][:, None], K[:, 1, 1][:, None]
    nc = 6 * V if fit_camera else 0

    def residual(theta: torch.Tensor, Rv: torch.Tensor, tv: torch.Tensor):
        X = mean_lm + torch.einsum("p,pnc->nc", theta, basis)
        pc = torch.einsum("vij,nj->vni", Rv, X) + tv[:, None]
        uv = project(X, K, Rv, tv)
        return torch.cat([((uv - lm2d) / sigma_px).reshape(-1), theta * prior_w]), pc

    def jacobian(Rv: torch.Tensor, pc: torch.Tensor) -> torch.Tensor:
        x, y, z = pc.unbind(-1)  # (V, L)
        D = torch.zeros(V, L, 2, 3, dtype=dt)
        D[..., 0, 0] = fx / z
        D[..., 0, 2] = -fx * x / z ** 2
        D[..., 1, 1] = fy / z
        D[..., 1, 2] = -fy * y / z ** 2
        J = torch.zeros(V * L * 2 + P, P + nc, dtype=dt)
        dpc = torch.einsum("vij,pnj->vnip", Rv, basis)  # (V, L, 3, P)
        J[: V * L * 2, :P] = torch.einsum("vnki,vnip->vnkp", D, dpc).reshape(V * L * 2, P) / sigma_px
        J[V * L * 2:, :P] = torch.diag(prior_w)
        if fit_camera:
            y_rot = pc - tc_now[:, None]  # R X
            dw = -_skew(y_rot)  # (V, L, 3, 3): d(exp(w) R X)/dw at w = 0
            for v in range(V):
                rows = slice(v * L * 2, (v + 1) * L * 2)
                jw = torch.einsum("nki,nij->nkj", D[v], dw[v]).reshape(L * 2, 3)
                J[rows, P + 6 * v: P + 6 * v + 3] = jw / sigma_px
                J[rows, P + 6 * v + 3: P + 6 * v + 6] = D[v].reshape(L * 2, 3) / sigma_px
        return J

    theta = torch.zeros(P, dtype=dt)
    tc_now = tc
    r, pc = residual(theta, Rc, tc)
    cost = float((r * r).sum())
    lam = 1e-3
    for _ in range(iters):
        tc_now = tc
        J = jacobian(Rc, pc)
        H = J.T @ J
        g = J.T @ r
        improved = False
        for _ in range(10):
            dx = torch.linalg.solve(H + lam * torch.diag(torch.diag(H) + 1e-9), -g)
            th_n = theta + dx[:P]
            if nE:
                th_n[I_:] = th_n[I_:].clamp(0.0, 1.0)
            if fit_camera:
                c = dx[P:].reshape(V, 6)
                R_n, t_n = axis_angle_to_matrix(c[:, :3]) @ Rc, tc + c[:, 3:]
            else:
                R_n, t_n = Rc, tc
            rn, pcn = residual(th_n, R_n, t_n)
            cn = float((rn * rn).sum())
            if cn < cost:
                theta, Rc, tc, r, pc, cost = th_n, R_n, t_n, rn, pcn, cn
                lam = max(lam / 3, 1e-9)
                improved = True
                break
            lam *= 4
        if not improved or float(dx.abs().max()) < 1e-9:
            break
    alpha = theta[:I_].float()
    beta = theta[I_:].float() if nE else torch.zeros(E_)
    verts = model.vertices(alpha, beta)
    return {"vertices": verts, "identity": alpha, "expression": beta, "R": Rc.float(), "t": tc.float()}


# --------------------------------------------------------------------------- analysis by synthesis
def fit_analysis_by_synthesis(model: FaceModel, images: torch.Tensor, K: torch.Tensor, landmarks2d: torch.Tensor,
                              init: dict[str, torch.Tensor], steps: int = 150, landmark_weight: float = 0.02,
                              sigma_px: float = 2.0, expression_std: float = 0.5, lr: float = 0.02,
                              subset: np.ndarray | list[int] | None = None) -> dict[str, torch.Tensor]:
    """Refine a landmark fit by gradient descent through the differentiable renderer.

    Unknowns: identity, expression, per-view camera (axis-angle increment, translation), one shared
    RGB albedo, per-view ambient + one directional light. The face area is rendered (Gouraud shading,
    gamma 2 like the sampler) and compared (L1) with the photo on the pixels it covers.

    Args:
        images: ``(V, 3, S, S)`` sRGB in [0, 1]; K: ``(V, 3, 3)``; landmarks2d: ``(V, 68, 2)``.
        init: a :func:`fit_landmarks_3dmm` result (coefficients and cameras to start from).
        subset: the landmarks (of the 68) in the landmark term; all when None.
    Returns:
        the same keys as :func:`fit_landmarks_3dmm`, plus ``photo_loss`` (final, scalar).
    """
    from glvd.raster import interpolate, rasterize, transform
    from .synth.shading import Lights, shade_vertices, vertex_normals

    V, _, S, _ = images.shape
    tris = model.triangles
    target = images.permute(0, 2, 3, 1)  # (V, S, S, 3)
    alpha = init["identity"].clone().requires_grad_(True)
    beta = init["expression"].clone().requires_grad_(True)
    R0, t0 = init["R"].detach(), init["t"].detach()
    w = torch.zeros(V, 3, requires_grad=True)
    dt = torch.zeros(V, 3, requires_grad=True)
    # appearance starts from the photo's mean colour over the first render
    alb = torch.full((3,), 0.5).requires_grad_(True)
    amb = torch.full((V, 3), 0.4).requires_grad_(True)
    ldir = torch.tensor([[0.0, -0.3, -1.0]]).repeat(V, 1).requires_grad_(True)
    lcol = torch.full((V, 3), 0.6).requires_grad_(True)
    opt = torch.optim.Adam([
        {"params": [alpha], "lr": lr * 2.5},
        {"params": [beta], "lr": lr},
        {"params": [w], "lr": lr * 0.1},
        {"params": [dt], "lr": lr * 0.05},
        {"params": [alb, amb, ldir, lcol], "lr": lr},
    ])
    sub = torch.arange(68) if subset is None else torch.as_tensor(np.asarray(subset), dtype=torch.long)
    lm_ids = model.landmarks68[sub]
    landmarks2d = landmarks2d[:, sub]
    photo = torch.zeros(())
    for _ in range(steps):
        verts = model.vertices(alpha, beta)
        Rv = axis_angle_to_matrix(w) @ R0
        tv = t0 + dt * 0.1
        vc = transform(verts[None].expand(V, -1, -1), Rv, tv)
        frags = rasterize(vc, tris, K, S)
        n = torch.einsum("vij,nj->vni", Rv, vertex_normals(verts[None], tris)[0])
        lights = Lights(amb.clamp(min=0), torch.nn.functional.normalize(ldir, dim=-1)[:, None],
                        lcol.clamp(min=0)[:, None], torch.zeros(V), torch.full((V,), 10.0))
        col = shade_vertices(alb.clamp(0, 1)[None, None].expand(V, verts.shape[0], 3), n, lights, verts_cam=vc)
        img = interpolate(frags, tris, col).clamp(min=1e-6).sqrt()  # (V, S, S, 3) display
        m = frags.mask
        photo = (img - target).abs().sum(-1)[m].mean() if bool(m.any()) else img.sum() * 0
        uv = project(verts[lm_ids], K, Rv, tv)
        lm = (((uv - landmarks2d) / sigma_px) ** 2).sum(-1).mean()
        prior = (alpha ** 2).sum() + ((beta / expression_std) ** 2).sum()
        loss = photo + landmark_weight * lm + 1e-3 * prior
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            beta.clamp_(0.0, 1.0)
    with torch.no_grad():
        verts = model.vertices(alpha, beta)
        Rv = axis_angle_to_matrix(w) @ R0
        tv = t0 + dt * 0.1
    return {"vertices": verts.detach(), "identity": alpha.detach(), "expression": beta.detach(),
            "R": Rv.detach(), "t": tv.detach(), "photo_loss": photo.detach()}


# --------------------------------------------------------------------------- MediaPipe Face Mesh
def default_canonical_path() -> Path:
    """``$GLVD_MEDIAPIPE_CANONICAL``, else ``../shared/data/mediapipe/canonical_face_model.obj`` beside the repo."""
    env = os.environ.get("GLVD_MEDIAPIPE_CANONICAL")
    if env:
        return Path(env)
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mediapipe"
            / "canonical_face_model.obj").resolve()


def read_obj_vertices(path: str | os.PathLike) -> np.ndarray:
    """``(P, 3)`` the ``v`` lines of an OBJ file."""
    rows = [line.split()[1:4] for line in Path(path).read_text().splitlines() if line.startswith("v ")]
    return np.asarray(rows, np.float64)


@dataclass
class MediaPipeCorrespondence:
    """Where MediaPipe's 468 canonical vertices lie on the ICT template surface.

    tri ``(468,)`` triangle ids, bary ``(468, 3)``; keep ``(468,)`` bool (within ``max_dist`` of the
    surface); dist_mm ``(468,)``; landmark_rms_mm: residual of the 51 inner-landmark alignment.
    """

    tri: np.ndarray
    bary: np.ndarray
    keep: np.ndarray
    dist_mm: np.ndarray
    landmark_rms_mm: float
    triangles: np.ndarray

    def points(self, vertices: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(..., N, 3)`` vertices -> ``(..., K, 3)`` surface points at the kept correspondences."""
        v = vertices.detach().cpu().numpy() if isinstance(vertices, torch.Tensor) else np.asarray(vertices)
        tri, bary = self.tri[self.keep], self.bary[self.keep]
        corners = v[..., self.triangles[tri], :]
        return (corners * bary[..., None]).sum(-2)


def mediapipe_correspondence(template_vertices: np.ndarray, triangles: np.ndarray, landmarks68: np.ndarray,
                             canonical: np.ndarray, max_dist: float = 0.01) -> MediaPipeCorrespondence:
    """Align MediaPipe's canonical mesh (cm) to the template (m) and project it onto the template surface.

    The similarity uses the 51 inner 68-landmarks (brows, nose, eyes, mouth; the jaw contour is
    defined differently by the two landmark schemes).
    """
    canon68 = mediapipe_to_68(canonical)
    tl = template_vertices[landmarks68].astype(np.float64)
    scale, rot, mp, mg = similarity_transform(torch.from_numpy(canon68[17:]).double()[None],
                                              torch.from_numpy(tl[17:]).double()[None])
    s, R = float(scale), rot[0].numpy()
    t = (mg[0, 0] - scale[0, 0, 0] * rot[0] @ mp[0, 0]).numpy()
    aligned = (s * (R @ canonical.T)).T + t
    res = (s * (R @ canon68[17:].T)).T + t - tl[17:]
    surf = Surface(template_vertices, triangles)
    dist, tri, bary = surf.closest(aligned)
    return MediaPipeCorrespondence(tri=tri, bary=bary, keep=dist <= max_dist, dist_mm=dist * 1000,
                                   landmark_rms_mm=float(np.sqrt((res ** 2).sum(1).mean()) * 1000),
                                   triangles=np.asarray(triangles, np.int64))


class MediaPipeMesh:
    """MediaPipe Face Mesh 0.10.21 (the torch port) on one image: 468 points ``(x, y)`` pixels, relative depth ``z``.

    ``z`` is MediaPipe's relative depth, scaled like x (image width units), growing away from the
    camera: with x right and y down the points form a right-handed, weak-perspective 3D shape.
    """

    def __init__(self, upscale: int = 384) -> None:
        # the runtime's torch port of MediaPipe's networks (glvd.mediapipe_torch), as glvd.detect runs them
        from glvd.detect import _mp
        from glvd.mediapipe_torch.pipeline import FaceMesh

        _mp()  # a clear error when the port's weights are missing
        self.upscale = upscale
        self._mesh = FaceMesh(refine_landmarks=False, min_detection_confidence=0.3)

    def __call__(self, image: np.ndarray | torch.Tensor) -> np.ndarray | None:
        """``image`` ``(S, S, 3)`` uint8 RGB or ``(3, S, S)`` float in [0, 1] -> ``(468, 3)`` pixels, or None."""
        import cv2

        if isinstance(image, torch.Tensor):
            image = (image.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()
        h, w = image.shape[:2]
        scale = self.upscale / max(h, w) if self.upscale else 1.0
        img = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC) \
            if scale != 1.0 else image
        faces = self._mesh.process(np.ascontiguousarray(img), max_num_faces=1)
        if not faces:
            return None
        H, W = img.shape[:2]
        lm = np.asarray(faces[0].landmarks[:468], np.float64)
        pts = np.stack([lm[:, 0] * W, lm[:, 1] * H, lm[:, 2] * W], 1)
        return pts / scale

    def close(self) -> None:
        pass  # the port holds no native resources


def aligned_point_error_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean distance (mm) after a similarity alignment of ``pred (P, 3)`` onto ``gt (P, 3)``."""
    p = torch.as_tensor(pred, dtype=torch.float64)[None]
    g = torch.as_tensor(gt, dtype=torch.float64)[None]
    return float((similarity_align(p, g) - g).norm(dim=-1).mean() * 1000)
