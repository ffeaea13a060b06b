"""The ICT FaceKit whole head as a morphable model, and shape sampling.

Loads the kit (centimetres -> metres here), keeps the vertices of the materials
that are rendered (the transparent overlays of the original kit are dropped),
and samples identities, sparse expressions and smooth deformations outside the
PCA space. The face area (kit vertices ``[0, face_count)``) stays a prefix of
the kept vertices, so ``vertices[:, :face_count]`` is the ground truth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# the kit's location: $GLVD_KIT, else ../shared beside the repo (one definition, the runtime's)
from glvd.topology import default_kit_path

CM_TO_M = 0.01

#: Materials drawn by the renderer (the kit's lacrimal fluid, eye blend and eye
#: occlusion are transparent overlays; eyelashes are thin cards: drawn as a darker lid line instead).
RENDER_MATERIALS = (
    "M_Face",
    "M_BackHead",
    "M_GumsTongue",
    "M_Teeth",
    "M_ScleraLeft",
    "M_IrisLeft",
    "M_ScleraRight",
    "M_IrisRight",
)


def _load_npz(path: str | os.PathLike | None) -> dict[str, np.ndarray]:
    p = Path(path) if path is not None else default_kit_path()
    if not p.is_file():
        raise FileNotFoundError(f"ICT FaceKit not found at {p}; set GLVD_KIT or pass kit_path")
    with np.load(p) as d:
        return {k: d[k] for k in d.files}


def triangulate(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quads (with -1 padding for triangles) -> ``(T, 3)`` triangles and their source polygon index."""
    polys = np.asarray(polys, np.int64)
    is_quad = polys[:, 3] >= 0
    t1 = polys[:, [0, 1, 2]]
    t2 = polys[is_quad][:, [0, 2, 3]]
    src = np.concatenate([np.arange(len(polys)), np.nonzero(is_quad)[0]])
    return np.concatenate([t1, t2]), src


@dataclass
class HeadModel:
    """The renderable head, torch tensors on one device, metres.

    mean: ``(N, 3)``; id_basis: ``(I, N*3)``; ex_basis: ``(E, N*3)``;
    tris: ``(F, 3)`` long; tri_material: ``(F,)`` long into ``material_names``;
    vert_material: ``(N,)`` long (a vertex shared by two materials gets the lower id);
    landmarks68: ``(68,)`` long; face_count: vertices ``[0, face_count)`` are the face area.
    """

    mean: torch.Tensor
    id_basis: torch.Tensor
    ex_basis: torch.Tensor
    tris: torch.Tensor
    tri_material: torch.Tensor
    vert_material: torch.Tensor
    material_names: list[str]
    expression_names: list[str]
    landmarks68: torch.Tensor
    face_count: int
    narrow_count: int
    basis: torch.Tensor = field(init=False, repr=False)  # (I + E, N*3); the two bases are views of it

    def __post_init__(self) -> None:
        # one matmul per batch against one stored basis (concatenating per call copied 45 MB)
        self.basis = torch.cat([self.id_basis, self.ex_basis], 0)
        self.id_basis, self.ex_basis = self.basis[: self.id_basis.shape[0]], self.basis[self.id_basis.shape[0]:]

    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_identity(self) -> int:
        return int(self.id_basis.shape[0])

    @property
    def num_expression(self) -> int:
        return int(self.ex_basis.shape[0])

    def material_id(self, name: str) -> int:
        """Index of a material, -1 if the kit has none of that name."""
        return self.material_names.index(name) if name in self.material_names else -1

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> HeadModel:
        """Load the kit npz (or a tiny kit with the same keys); ``None`` = :func:`default_kit_path`."""
        kit = _load_npz(path)
        names = [str(s) for s in kit["material_names"]]
        pmat = np.asarray(kit["polygon_material"], np.int64)
        keep_mat = np.array([n in RENDER_MATERIALS for n in names])
        polys = np.asarray(kit["polygons"], np.int64)
        pkeep = keep_mat[pmat]
        tris, src = triangulate(polys[pkeep])
        tmat = pmat[pkeep][src]
        face_count = int(kit["face_area"][1])
        n_all = kit["mean"].shape[0]
        used = np.zeros(n_all, bool)
        used[:face_count] = True  # the ground-truth face area is always kept, as a prefix
        used[tris.reshape(-1)] = True
        old = np.nonzero(used)[0]
        remap = np.full(n_all, -1, np.int64)
        remap[old] = np.arange(len(old))
        tris = remap[tris]
        vmat = np.full(len(old), len(names), np.int64)
        np.minimum.at(vmat, tris.reshape(-1), np.repeat(tmat, 3))
        vmat[vmat == len(names)] = 0
        mean = np.asarray(kit["mean"], np.float32)[old] * CM_TO_M
        idb = (np.asarray(kit["identity"])[:, old].astype(np.float32) * CM_TO_M).reshape(-1, len(old) * 3)
        exb = (np.asarray(kit["expression"])[:, old].astype(np.float32) * CM_TO_M).reshape(-1, len(old) * 3)
        lm = remap[np.asarray(kit["landmarks68"], np.int64)]
        narrow = int(kit["narrow_face_area"][1]) if "narrow_face_area" in kit else face_count
        # C order: fancy-indexed numpy arrays can come out column-major, and gathers along dim 0 of a
        # column-major (F, 3) tensor run 15x slower (the rasteriser gathers triangles per pixel)
        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
        return cls(
            mean=t(mean),
            id_basis=t(idb),
            ex_basis=t(exb),
            tris=t(tris, torch.long),
            tri_material=t(tmat, torch.long),
            vert_material=t(vmat, torch.long),
            material_names=names,
            expression_names=[str(s) for s in kit["expression_names"]],
            landmarks68=t(lm, torch.long),
            face_count=face_count,
            narrow_count=narrow,
        )

    def vertices(
        self, identity: torch.Tensor, expression: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Whole-head vertices ``(B, N, 3)``.

        Args:
            identity: ``(B, I)``; expression: ``(B, E)``; offsets: optional ``(B, N, 3)`` (m).
        """
        coeffs = torch.cat([identity, expression], 1)
        v = self.mean + (coeffs @ self.basis).view(-1, self.num_vertices, 3)
        if offsets is not None:
            v = v + offsets
        return v


def _pairs(names: list[str]) -> dict[int, int]:
    """``_L`` / ``_R`` (and Left/Right) blendshape partners by index."""
    idx = {n: i for i, n in enumerate(names)}
    out: dict[int, int] = {}
    for n, i in idx.items():
        for a, b in (("_L", "_R"), ("_R", "_L"), ("Left", "Right"), ("Right", "Left")):
            if n.endswith(a) and n[: -len(a)] + b in idx:
                out[i] = idx[n[: -len(a)] + b]
    return out


def sample_identity(batch: int, count: int, std: float, gen: torch.Generator) -> torch.Tensor:
    """``(B, count)`` PCA weights ~ N(0, std^2)."""
    return torch.randn(batch, count, generator=gen) * std


def sample_expression(
    batch: int,
    names: list[str],
    gen: torch.Generator,
    neutral_prob: float = 0.2,
    max_active: int = 5,
    symmetric_prob: float = 0.6,
) -> torch.Tensor:
    """Sparse blendshape weights ``(B, E)`` in [0, 1].

    Most weights are zero; 1..max_active shapes are on (their _L/_R partner
    often follows, as faces are roughly symmetric). ``mouthClose`` alone pushes
    the lips through each other, so it is capped by ``jawOpen``.
    """
    E = len(names)
    out = torch.zeros(batch, E)
    pairs = _pairs(names)
    k = torch.randint(1, max_active + 1, (batch,), generator=gen)
    neutral = torch.rand(batch, generator=gen) < neutral_prob
    scores = torch.rand(batch, E, generator=gen)
    order = scores.argsort(dim=1)
    w = torch.rand(batch, E, generator=gen) ** 0.7  # favour visible weights
    sym = torch.rand(batch, E, generator=gen) < symmetric_prob
    jitter = 0.7 + 0.3 * torch.rand(batch, E, generator=gen)
    for b in range(batch):
        if neutral[b]:
            continue
        for j in order[b, : int(k[b])].tolist():
            out[b, j] = w[b, j]
            p = pairs.get(j)
            if p is not None and sym[b, j]:
                out[b, p] = w[b, j] * jitter[b, j]
    if "mouthClose" in names and "jawOpen" in names:
        c, o = names.index("mouthClose"), names.index("jawOpen")
        out[:, c] = torch.minimum(out[:, c], out[:, o])
    return out


def sample_deformation(
    rest: torch.Tensor,
    anchors: torch.Tensor,
    batch: int,
    gen: torch.Generator,
    amplitude: float,
    max_bumps: int,
    sigma_range: tuple[float, float],
    prob: float,
    wave_amplitude: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth displacement fields outside the PCA space, for the whole head.

    Gaussian RBF bumps ``sum_k a_k exp(-|x - c_k|^2 / 2 s_k^2)`` centred on
    face-area points, plus one low-frequency sinusoidal field; evaluated at the
    rest (mean) positions so the whole head moves consistently.

    Args:
        rest: ``(N, 3)`` mean vertices (m); anchors: ``(A, 3)`` candidate centres.
        amplitude: peak bump displacement (m); wave_amplitude: sinusoid amplitude (m).
        prob: probability that a sample is deformed at all.
    Returns:
        offsets ``(B, N, 3)`` and a ``(B,)`` bool of which samples are deformed.
    """
    N = rest.shape[0]
    on = torch.rand(batch, generator=gen) < prob
    nb = torch.randint(1, max_bumps + 1, (batch,), generator=gen)
    ci = torch.randint(0, anchors.shape[0], (batch, max_bumps), generator=gen)
    sig = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * torch.rand(batch, max_bumps, generator=gen)
    dirs = torch.nn.functional.normalize(torch.randn(batch, max_bumps, 3, generator=gen), dim=-1)
    amp = amplitude * torch.rand(batch, max_bumps, generator=gen).sqrt()
    live = torch.arange(max_bumps)[None, :] < nb[:, None]
    a = dirs * (amp * live)[..., None]  # (B, K, 3)
    freq = torch.nn.functional.normalize(torch.randn(batch, 3, generator=gen), dim=-1)
    freq = freq * (2 * np.pi / (0.12 + 0.2 * torch.rand(batch, 1, generator=gen)))
    phase = 2 * np.pi * torch.rand(batch, 1, generator=gen)
    wdir = torch.nn.functional.normalize(torch.randn(batch, 3, generator=gen), dim=-1)
    wamp = wave_amplitude * torch.rand(batch, 1, generator=gen)
    dev = rest.device
    c = anchors.to(dev)[ci.to(dev)]  # (B, K, 3)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2 as one batched matmul: no (B, N, K, 3) difference tensor
    d2 = ((rest * rest).sum(-1)[None, :, None] - 2 * torch.einsum("nc,bkc->bnk", rest, c)
          + (c * c).sum(-1)[:, None, :]).clamp(min=0.0)  # (B, N, K)
    g = torch.exp(-d2 / (2 * sig.to(dev)[:, None, :] ** 2))
    off = torch.einsum("bnk,bkc->bnc", g, a.to(dev))
    wave = torch.sin(rest @ freq.to(dev).T + phase.to(dev).T).T  # (B, N)
    off = off + (wamp.to(dev) * wave)[..., None] * wdir.to(dev)[:, None, :]
    off = off * on.to(dev)[:, None, None]
    assert off.shape == (batch, N, 3)
    return off, on
