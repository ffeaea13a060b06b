"""The whole head around GLVD's face (glvd.head, glvd.head_texture) and its files (glvd.export).

Runs on the committed asset (glvd/assets/head.npz), so it needs neither the kit nor a model: a result is
made of the asset's own face area, moved. The conversion tool's test needs the kit (skipped without it).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from glvd.errors import CheckpointError, GLVDError
from glvd.export import write_glb, write_obj
from glvd.head import MATERIALS, build_head, export_materials, fit_step, load_asset
from glvd.head_texture import bake_head
from glvd.texture import hole_share
from glvd.topology import default_kit_path
from glvd.uv_layout import uv_raster

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def asset():
    return load_asset()


def face_topology(A):
    """The face area's quads and UVs, as a checkpoint's template holds them."""
    P, PU = A.polygons, A.polygon_uvs
    keep = np.all((P >= 0) & (P < A.face_count), axis=1)
    quads = P[keep]
    used, inv = np.unique(PU[keep].reshape(-1), return_inverse=True)
    return quads, A.uvs[used], inv.reshape(-1, 4)


def fake_result(A, steps: np.ndarray, expressions: np.ndarray | None = None) -> SimpleNamespace:
    """What build_head reads from a glvd.api.Result."""
    quads, uvs, quad_uvs = face_topology(A)
    nf = A.face_count
    kit = np.zeros((len(A.expression_names), nf, 3), np.float32) if expressions is None else expressions
    return SimpleNamespace(vertices=steps.astype(np.float32), quads=quads, uvs=uvs, quad_uvs=quad_uvs,
                           expression_names=list(A.expression_names), expressions=lambda: kit,
                           _template_expressions=kit.astype(np.float16), _template_vertices=A.mean[:nf])


def rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def test_template_face_gives_the_kit_head(asset):
    v, fit = fit_step(asset.mean[: asset.face_count], asset)
    np.testing.assert_allclose(v, asset.mean, atol=2e-5)
    assert abs(fit.scale - 1.0) < 1e-6 and np.abs(fit.coefficients).max() < 1e-3


def test_every_step_carries_the_head_and_the_face_stays_exact(asset):
    """A face moved by a similarity: the whole head moves with it (no seam), the face area is GLVD's to the bit."""
    nf = asset.face_count
    s, R, t = 1.07, rot_y(12.0), np.array([0.01, -0.02, 0.03])
    moved = s * asset.mean @ R.T + t
    steps = np.stack([asset.mean[:nf], 0.5 * (asset.mean[:nf] + moved[:nf]), moved[:nf]])
    head = build_head(fake_result(asset, steps))
    assert head.vertices.shape == (3, asset.num_vertices, 3) and head.steps == 2
    np.testing.assert_array_equal(head.vertices[:, :nf], steps.astype(np.float32))
    np.testing.assert_allclose(head.final, moved, atol=1e-4)  # the rest of the head followed exactly
    assert len(head.polygons) == len(asset.polygons) and head.material_names == list(MATERIALS)


def test_a_local_change_of_the_face_blends_into_the_head_without_a_step(asset):
    """A bulge on the face's boundary (the temples): the back of the head takes it up smoothly."""
    nf = asset.face_count
    face = asset.mean[:nf].copy()
    bump = np.exp(-((face[:, 1] - 0.05) ** 2) / 0.02 ** 2)[:, None] * np.array([0.0, 0.0, 0.004])
    head = build_head(fake_result(asset, np.stack([asset.mean[:nf], face + bump]))).final
    P = asset.polygons
    e = np.concatenate([np.stack([P[:, i], P[:, (i + 1) % 4]], 1) for i in range(4)])
    e = e[(e >= 0).all(1)]
    cross = e[(e[:, 0] < nf) != (e[:, 1] < nf)]
    back = cross[np.isin(cross, asset.back_ids).any(1)]
    change = np.linalg.norm(head[back[:, 0]] - head[back[:, 1]], axis=1) / np.linalg.norm(
        asset.mean[back[:, 0]] - asset.mean[back[:, 1]], axis=1)
    assert np.abs(change - 1).max() < 0.25  # no crack, no step: every seam edge keeps about its length


def test_expressions_move_teeth_lids_and_lashes(asset):
    nf = asset.face_count
    names = asset.expression_names
    rng = np.random.default_rng(0)
    face_d = rng.normal(scale=1e-4, size=(len(names), nf, 3)).astype(np.float32)
    res = fake_result(asset, np.stack([asset.mean[:nf]] * 2), face_d)
    head = build_head(res)
    E = head.expressions()
    assert E.shape == (len(names), asset.num_vertices, 3)
    np.testing.assert_allclose(E[:, :nf], face_d, atol=1e-6)  # the transfer changed nothing: the kit's deltas
    teeth = dict((n, ids) for n, ids, _ in asset.rigid)["mouth"]
    jaw = names.index("jawOpen")
    assert np.linalg.norm(E[jaw, teeth], axis=1).max() > 0.005  # jawOpen moves the teeth and the tongue
    blink = names.index("eyeBlink_L")
    lash = asset.attach_ids[~asset.attach_fit]
    assert np.linalg.norm(E[blink, lash], axis=1).max() > 0.003  # the lashes close with the lid
    skull = asset.back_ids[(asset.mean[asset.back_ids, 2] < -0.03) & (asset.mean[asset.back_ids, 1] > 0.03)]
    assert len(skull) > 100 and np.abs(E[:, skull]).max() < 0.001  # the back of the skull stays put


def _neighbour_jump(d: np.ndarray, quads: np.ndarray) -> float:
    """The largest difference between the deltas ``(N, 3)`` of two vertices that share an edge."""
    e = np.concatenate([quads[:, [i, (i + 1) % 4]] for i in range(4)])
    return float(np.linalg.norm(d[e[:, 0]] - d[e[:, 1]], axis=1).max())


def test_the_transfer_onto_a_rough_face_is_smooth_and_the_head_takes_it(asset):
    """The transfer's local frames sit on a reconstructed surface with noisy normals: what they change about the
    kit's deltas is smoothed over the face (glvd.transfer), so the keys do not tear; on a face that is the
    template moved by a similarity the deltas are the kit's, moved; the head's face area takes the result's
    deltas as they are (one smoothing, the same keys in face and head mode)."""
    from glvd.transfer import transfer_expressions

    nf = asset.face_count
    quads = face_topology(asset)[0]
    tpl = asset.mean[:nf].astype(np.float32)
    y = tpl[:, 1]
    jaw = np.clip((y.max() - y) / np.ptp(y), 0, 1) ** 2  # a smooth jaw-like key: the lower face moves down
    key = np.stack([0 * jaw, -0.01 * jaw, 0.004 * jaw], 1)
    kit = np.stack([key] * 2).astype(np.float32)
    s, R = 1.05, rot_y(8.0)
    moved = (s * tpl @ R.T + 0.01).astype(np.float32)
    np.testing.assert_allclose(transfer_expressions(tpl, moved, quads, kit), kit @ (s * R.T), atol=2e-6)
    rough = moved + np.random.default_rng(1).normal(scale=5e-4, size=moved.shape).astype(np.float32)
    raw = transfer_expressions(tpl, rough, quads, kit, smooth=False)
    E = transfer_expressions(tpl, rough, quads, kit)
    own = _neighbour_jump(kit[0], quads) * s
    assert _neighbour_jump(raw[0], quads) > 3 * own  # the frames' noise tears the key
    assert _neighbour_jump(E[0], quads) < 1.5 * own  # smoothed: about as smooth as the kit's own
    err = [np.linalg.norm(d - kit @ (s * R.T), axis=-1).mean() for d in (E, raw)]
    assert err[0] < 0.4 * err[1]  # and closer to the kit's deltas (0.19 mm against 0.60 mm)
    E = np.repeat(E[:1], len(asset.expression_names), axis=0)
    res = fake_result(asset, np.stack([tpl, rough]), E)
    np.testing.assert_array_equal(build_head(res).expressions()[:, :nf], E)


def test_bad_results_and_a_broken_asset(asset, tmp_path):
    with pytest.raises(GLVDError, match="face area"):
        build_head(SimpleNamespace(vertices=np.zeros((2, 500, 3), np.float32)))
    with pytest.raises(GLVDError, match="finite"):
        fit_step(np.full((asset.face_count, 3), np.nan), asset)
    with pytest.raises(CheckpointError, match="missing"):
        load_asset(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_asset(tmp_path / "bad.npz")


def _glb_json(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    n = struct.unpack("<I", data[12:16])[0]
    js = json.loads(data[20:20 + n])
    return js, data[20 + n + 8:]


def _accessor(js: dict, binary: bytes, i: int) -> np.ndarray:
    acc = js["accessors"][i]
    out = np.zeros((acc["count"], 3), np.float32)
    if "bufferView" in acc:
        v = js["bufferViews"][acc["bufferView"]]
        out[:] = np.frombuffer(binary, np.float32, acc["count"] * 3, v["byteOffset"]).reshape(-1, 3)
    if "sparse" in acc:
        sp = acc["sparse"]
        iv, vv = js["bufferViews"][sp["indices"]["bufferView"]], js["bufferViews"][sp["values"]["bufferView"]]
        idx = np.frombuffer(binary, np.uint32, sp["count"], iv["byteOffset"])
        out[idx] = np.frombuffer(binary, np.float32, sp["count"] * 3, vv["byteOffset"]).reshape(-1, 3)
    return out


def test_gltf_and_obj_carry_parts_materials_and_keys(asset, tmp_path):
    nf = asset.face_count
    face_d = np.zeros((len(asset.expression_names), nf, 3), np.float32)
    head = build_head(fake_result(asset, np.stack([asset.mean[:nf], asset.mean[:nf] * 1.02]), face_d))
    E = head.expressions()
    glb = write_glb(tmp_path / "h.glb", head.vertices, head.polygons, head.uvs, head.polygon_uvs, b"\x89PNG fake",
                    E, head.expression_names, head.polygon_material, export_materials())
    js, binary = _glb_json(glb)
    mesh = js["meshes"][0]
    names = mesh["extras"]["targetNames"]
    assert names[0] == "GLVD 01" and names[1:] == list(asset.expression_names) and len(mesh["weights"]) == 54
    assert [m["name"] for m in js["materials"]] == [f"GLVD {n}" for n in MATERIALS]
    assert "baseColorTexture" in js["materials"][0]["pbrMetallicRoughness"]
    assert js["materials"][MATERIALS.index("Eye Wet")]["alphaMode"] == "BLEND"
    teeth_prim = mesh["primitives"][MATERIALS.index("Teeth")]
    jaw = _accessor(js, binary, teeth_prim["targets"][1 + asset.expression_names.index("jawOpen")]["POSITION"])
    assert np.linalg.norm(jaw, axis=1).max() > 0.005  # the sparse ARKit target reads back
    total = sum(js["accessors"][p["attributes"]["POSITION"]]["count"] for p in mesh["primitives"])
    assert total >= asset.num_vertices
    obj = write_obj(tmp_path / "h.obj", head.final, head.polygons, head.uvs, head.polygon_uvs, "h.png", None,
                    head.polygon_material, export_materials())
    text = obj.read_text()
    assert text.count("\nv ") == asset.num_vertices
    assert "usemtl glvd_skin" in text and "usemtl glvd_eyelashes" in text
    assert "map_Kd h.png" in (tmp_path / "h.mtl").read_text()


def test_texture_fills_what_no_photo_saw_with_the_skin_tone(asset):
    """A frontal photo of a skin-coloured face on a dark green background: nothing unseen comes out dark or
    green, and the back of the head continues the face's colours at the seam."""
    nf = asset.face_count
    res = fake_result(asset, np.stack([asset.mean[:nf]] * 2))
    head = build_head(res)
    S, f, d = 480, 1500.0, 0.7
    img = np.zeros((S, S, 3), np.uint8)
    img[:] = (20, 90, 30)
    yy, xx = np.mgrid[:S, :S]
    face = ((xx - S / 2) / 150) ** 2 + ((yy - S / 2 + 20) / 190) ** 2 < 1  # the face, not the ears or neck
    img[face] = (205, 160, 135)
    res.cameras = {"K": np.array([[[f, 0, S / 2], [0, f, S / 2], [0, 0, 1]]], np.float32),
                   "R": np.diag([1.0, -1.0, -1.0])[None].astype(np.float32),
                   "t": np.array([[0.0, 0.03, d]], np.float32)}
    res.final = res.vertices[-1]
    hb = bake_head(res, head, [img], 256)
    assert hb.texture.shape == (256, 512, 3)
    ras = uv_raster(res.quads, res.uvs, res.quad_uvs, 256)
    share, unseen = hole_share(hb.face.texture, hb.face.coverage, ras.chart, hb.face.tone, [(20, 90, 30)])
    assert unseen > 1000 and share <= 0.01
    assert np.linalg.norm(hb.face.tone - (205, 160, 135)) < 30
    back = hb.texture[:, 256:].reshape(-1, 3).astype(np.float32)
    assert np.linalg.norm(np.median(back, 0) - hb.face.tone) < 25  # the back of the head: the skin tone


@pytest.mark.skipif(not default_kit_path().is_file(), reason="needs the ICT FaceKit (../shared/data/ict_facekit)")
def test_the_tool_writes_the_committed_asset(asset):
    sys.path.insert(0, str(REPO / "tools"))
    import convert_head

    from glvd.topology import load_kit

    out = convert_head.convert(load_kit(default_kit_path()))
    with np.load(REPO / "vendor" / "glvd" / "glvd" / "assets" / "head.npz") as z:
        for k in ("polygons", "mean_q", "back_basis", "fit_ids", "attach_face", "expr_delta", "rigid_anchor"):
            np.testing.assert_array_equal(out[k], z[k], err_msg=k)
