"""The whole head's skin texture: the face baked from the photos, the back of the head in the person's tone.

The kit lays the skin out on two UV tiles (the face in u [0, 1], the back of the head in [1, 2]);
:mod:`glvd.head` packs them side by side, so the texture is ``size`` high and ``2 * size`` wide:

- left: the face area baked from the photos (:func:`glvd.texture.bake`: what no photo saw is filled with
  the person's skin tone, :func:`glvd.texture.skin_tone`);
- right: the back of the head. Where it meets the face, each vertex takes the face texture's colour at the
  same vertex; away from the face it fades to the skin tone along the same weights that carry the face's
  shape onto the back of the head (no hair, no seam). Eyes, teeth, mouth and lashes are not baked: they
  have their own materials (:data:`glvd.head.MATERIAL_LOOKS`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GLVDError
from .head import Head, load_asset
from .texture import Bake, _sample, bake, load_photos
from .texture_fill import pull_push
from .uv_layout import symmetry_map, uv_raster


@dataclass
class HeadBake:
    """texture ``(S, 2S, 3)`` uint8; face: the face tile's :class:`glvd.texture.Bake`."""

    texture: np.ndarray
    face: Bake


def _vertex_uv(quads: np.ndarray, quad_uvs: np.ndarray, uvs: np.ndarray, n: int) -> np.ndarray:
    """``(n, 2)`` one UV per vertex (the first corner that holds it)."""
    out = np.zeros((n, 2), np.float32)
    q, qu = np.asarray(quads).reshape(-1), np.asarray(quad_uvs).reshape(-1)
    first = np.unique(q, return_index=True)
    out[first[0]] = uvs[qu[first[1]]]
    return out


def _sample_tile(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear colours ``(n, 3)`` float32 of a square tile at UVs ``(n, 2)``."""
    S = tex.shape[0]
    return _sample(tex.astype(np.float32), (uv[:, 0] * S - 0.5).astype(np.float32),
                   ((1.0 - uv[:, 1]) * S - 0.5).astype(np.float32))


def back_tile(head: Head, face_tex: np.ndarray, tone: np.ndarray, result: Any) -> np.ndarray:
    """The back of the head's tile ``(S, S, 3)`` uint8 (see the module's text)."""
    A = head._asset or load_asset()
    S = face_tex.shape[0]
    nf = A.face_count
    face_uv = _vertex_uv(result.quads, result.quad_uvs, result.uvs, nf)
    face_col = _sample_tile(face_tex, face_uv)  # (nf, 3)
    tone = np.asarray(tone, np.float32)
    col = np.tile(tone, (A.num_vertices, 1))
    col[:nf] = face_col
    back = A.attach_fit
    ids, nb, w = A.attach_ids[back], A.attach_face[back], A.attach_w[back].astype(np.float32)
    col[ids] = tone + np.einsum("ak,akd->ad", w, face_col[nb] - tone)
    polys = A.polygons[A.polygon_part == A.part_names.index("M_BackHead")]
    puv = A.polygon_uvs[A.polygon_part == A.part_names.index("M_BackHead")]
    if (polys < 0).any():
        raise GLVDError("the head asset's back of the head has triangles; the texture expects quads")
    uv = A.uvs.copy()
    uv[:, 0] -= 1.0  # the back's tile
    ras = uv_raster(polys, uv, puv, S)
    img = np.zeros((S * S, 3), np.float32)
    for k in range(3):
        img[ras.texel, k] = ras.interp(np.ascontiguousarray(col[:, k]))
    wgt = np.zeros(S * S, np.float32)
    wgt[ras.texel] = 1.0
    out = pull_push(img.reshape(S, S, 3), wgt.reshape(S, S))  # pads the islands over the whole tile
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


#: below the chin, the face area's lower neck is often covered (collars, scarves, shirts): from NECK_BELOW_M
#: under the chin landmark on, fading in over NECK_FADE_M, only skin-like photo colours are taken there
NECK_BELOW_M = 0.015
NECK_FADE_M = 0.015


#: the ears (beyond EAR_FROM_M from the middle, fading in over EAR_FADE_M) have no features of another colour
#: than the skin, and a reconstructed ear that stands out further than the person's shows the background
EAR_FROM_M = 0.062
EAR_TOP_M = 0.055  # the ear's top, head frame y (the template's eye corners are at 0.034)
EAR_FRONT_M = 0.03  # the ear's front, head frame z (the template's jaw landmark 0 is at 0.037)
EAR_FADE_M = 0.008


def _ramp(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def skin_only_weights(template: np.ndarray, chin: int) -> np.ndarray:
    """``(N,)`` in [0, 1]: where only skin-like photo colours are taken (the ``skin_only`` of
    :func:`glvd.texture.bake`): the lower neck (1 from a little below the chin) and the ears."""
    drop = template[chin, 1] - NECK_BELOW_M - template[:, 1]
    behind_jaw = template[:, 2] < template[chin, 2] - 0.02  # the neck, not the chin's own underside
    neck = np.where(behind_jaw, _ramp(drop / NECK_FADE_M), 0.0)
    ears = (_ramp((np.abs(template[:, 0]) - EAR_FROM_M) / EAR_FADE_M) * _ramp((EAR_TOP_M - template[:, 1]) / EAR_FADE_M)
            * _ramp((EAR_FRONT_M - template[:, 2]) / EAR_FADE_M))  # not the temples' hair, not the cheeks
    return np.maximum(neck, ears).astype(np.float32)


def face_bake_options(result: Any, head: Head, posed: np.ndarray | None = None) -> dict[str, Any]:
    """What :func:`glvd.texture.bake` takes for the face tile of a head: the template's mirror map, where only
    skin-like colours count (:func:`skin_only_weights`), and the head's skin as the occluder (visibility and
    outlines of the whole head: the skull hides the far ear): the final step's, or with ``posed`` ``(V, Nh, 3)``
    (:meth:`glvd.head.Head.posed_views`) each photo's."""
    tpl = getattr(result, "_template_vertices", None)
    tpl = np.asarray(tpl if tpl is not None else result.vertices[0], np.float32)
    lm = getattr(result, "landmark_ids", None)
    A = head._asset or load_asset()
    skin = A.polygons[np.isin(A.polygon_part, [A.part_names.index("M_Face"), A.part_names.index("M_BackHead")])]
    tris = np.concatenate([skin[:, [0, 1, 2]], skin[:, [0, 2, 3]]])  # the skin has quads only
    return {"symmetry": symmetry_map(tpl), "occluder": (head.final if posed is None else posed, tris),
            "skin_only": skin_only_weights(tpl, int(lm[8])) if lm is not None else None}  # landmark 8: chin


def bake_head(result: Any, head: Head, images: Sequence[np.ndarray], size: int = 1024) -> HeadBake:
    """The whole head's texture from the photos given to ``reconstruct`` (``(H, W, 3)`` uint8 each), baked
    through the head as each photo shows it (its expression on the neutral head: so the photo's lips land on
    the lips, and visibility is the posed head's); the texture is the neutral head's."""
    posed = head.posed_views()  # None without expression weights: the final step is as the photos show it
    face = result.final if posed is None else posed[:, :head.face_count]
    b = bake(face, result.quads, result.uvs, result.quad_uvs, images, result.cameras, size,
             **face_bake_options(result, head, posed))
    back = back_tile(head, b.texture, b.tone, result)
    return HeadBake(np.concatenate([b.texture, back], axis=1), b)


def bake_head_texture(result: Any, head: Head, images: Sequence[Any], out_png: str | os.PathLike,
                      size: int = 1024) -> str:
    """Bake the whole head's texture (``size`` high, ``2 * size`` wide) into a PNG; returns the path."""
    from PIL import Image

    imgs = load_photos(result, images)
    hb = bake_head(result, head, imgs, size)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(hb.texture).save(out, format="PNG")
    return str(out)
