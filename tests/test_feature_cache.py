"""The feature cache (glvd-train cache), baseline (f)'s ridge, and the real-photo spread score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glvd_train.descriptor_ridge import DescriptorRidge
from glvd_train.feature_cache import FeatureCache, build, existing_shards, shard_path
from glvd_train.metrics import similarity_align
from glvd_train.photo_consistency import spread


@pytest.fixture(scope="module")
def tiny_kit(tmp_path_factory):
    from glvd_train.tinykit import make_tiny_kit

    return str(make_tiny_kit(tmp_path_factory.mktemp("kit") / "tiny_kit.npz"))


def _build(out, kit, faces):
    return build(out, faces=faces, faces_per_shard=2, views=2, seed=3, kit=kit, render_size=64, image_size=32,
                 log=lambda m: None)


def test_cache_resumes_to_what_one_run_writes(tmp_path, tiny_kit):
    whole = tmp_path / "whole"
    _build(whole, tiny_kit, 6)
    part = tmp_path / "part"
    _build(part, tiny_kit, 2)  # one shard, then "killed"
    (part / "shard_00001.w0.tmp.npz").write_bytes(b"half a shard")  # what a kill mid-write leaves
    assert existing_shards(part) == 1
    _build(part, tiny_kit, 6)  # resumed
    assert existing_shards(part) == 3 and not list(part.glob("*.tmp.npz"))
    for i in range(3):
        a, b = np.load(shard_path(whole, i)), np.load(shard_path(part, i))
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c = FeatureCache(part)
    assert len(c) == 6
    arr = c.arrays
    assert arr["images"].shape == (6, 2, 32, 32, 3) and arr["images"].dtype == np.uint8
    assert arr["descriptor"].shape == (6, 2, 128) and np.isfinite(arr["descriptor"].astype(np.float32)).all()
    assert arr["mesh2d"].shape == (6, 2, 468, 2) and arr["landmarks2d"].shape == (6, 2, 68, 2)
    # where MediaPipe found nothing the descriptor comes from the true landmarks, flagged
    assert np.array_equal(arr["descriptor_from_truth"], ~arr["mesh_found"])
    assert np.isnan(arr["mesh2d"][~arr["mesh_found"]]).all()
    # crop intrinsics for the stored size: the true landmarks project inside the 32 px crop
    assert (arr["landmarks2d"] > -8).all() and (arr["landmarks2d"] < 40).all()
    # the backbone's chip maps, and where the crop's pixels land on each view's chip: where MediaPipe found
    # nothing the chip is cut on the true landmarks' five points (in the 64 px render: crop pixels x 2)
    from glvd.face_chip import five_points_from_68, image_to_chip

    assert arr["chip_maps"].shape == (6, 2, 128, 8, 8) and arr["chip_maps"].dtype == np.float16
    assert np.abs(arr["chip_maps"].astype(np.float32)).sum(axis=(2, 3, 4)).min() > 0
    truth = np.argwhere(~arr["mesh_found"])
    assert len(truth)  # MediaPipe finds no face in a 64 px render of the tiny kit
    for f, v in truth:
        A = image_to_chip(five_points_from_68(arr["landmarks2d"][f, v] * 2))
        np.testing.assert_allclose(arr["chip_affine"][f, v], np.c_[A[:, :2] * 2, A[:, 2]], rtol=1e-4, atol=1e-3)


def test_cache_workers_share_the_shards_of_one_run(tmp_path, tiny_kit):
    whole = tmp_path / "whole"
    _build(whole, tiny_kit, 6)
    split = tmp_path / "split"
    for w in (1, 0):  # worker 1 first: shards 1 only, the reader sees none complete from 0
        build(split, faces=6, faces_per_shard=2, views=2, seed=3, kit=tiny_kit, render_size=64, image_size=32,
              log=lambda m: None, worker=(w, 2))
        if w == 1:
            assert existing_shards(split) == 0 and shard_path(split, 1).is_file()
    assert existing_shards(split) == 3
    for i in range(3):
        a, b = np.load(shard_path(whole, i)), np.load(shard_path(split, i))
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_cache_refuses_other_settings(tmp_path, tiny_kit):
    _build(tmp_path, tiny_kit, 2)
    with pytest.raises(ValueError, match="built with"):
        build(tmp_path, faces=4, faces_per_shard=2, views=3, seed=3, kit=tiny_kit, render_size=64, image_size=32,
              log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="not a feature cache"):
        FeatureCache(tmp_path / "nothing")


def test_ridge_recovers_a_linear_map_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    M = rng.normal(size=(128, 10))
    face = rng.normal(size=(400, 1, 128))
    desc = face + rng.normal(size=(400, 3, 128)) * 0.05  # the views of a face agree, nearly
    ident = face[:, 0] @ M * 0.1 + rng.normal(size=(400, 10)) * 0.01
    r = DescriptorRidge.fit(desc, ident)
    assert r.val_r2 > 0.9
    pred = np.stack([r.coefficients(d) for d in desc[:20]])
    assert np.abs(pred - ident[:20]).mean() < 0.1 * np.abs(ident).mean()
    r.save(tmp_path / "r.npz")
    r2 = DescriptorRidge.load(tmp_path / "r.npz")
    np.testing.assert_allclose(r2.coefficients(desc[0]), r.coefficients(desc[0]))


def test_ridge_is_scale_free_and_weights_the_modes_that_move_the_face():
    rng = np.random.default_rng(2)
    face = rng.normal(size=(300, 1, 128)) * 0.05  # descriptors are small numbers: the strength must not care
    desc = face + rng.normal(size=(300, 3, 128)) * 0.01
    ident = np.concatenate([face[:, 0, :5] * 20, rng.normal(size=(300, 20))], 1)  # 5 readable modes, 20 noise
    r = DescriptorRidge.fit(desc, ident)
    r10 = DescriptorRidge.fit(desc * 10, ident)
    assert r10.lam == r.lam
    np.testing.assert_allclose(r10.coefficients(desc[0] * 10), r.coefficients(desc[0]), atol=1e-6)
    # weighting the readable modes (as the kit's large modes) makes the held-out R^2 about them
    w = np.r_[np.ones(5), np.full(20, 1e-3)]
    assert DescriptorRidge.fit(desc, ident, mode_weights=w).val_r2 > 0.8 > r.val_r2


def test_spread_separates_people_and_ignores_similarity():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(200, 3)) * 50
    people = {p: base + rng.normal(size=(200, 3)) * 3 for p in "abc"}
    names, shapes = [], []
    for p, shape in people.items():
        for _ in range(3):
            c, s = np.cos(0.3), np.sin(0.3)
            R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
            noisy = shape + rng.normal(size=shape.shape) * 0.3
            shapes.append(1.7 * noisy @ R.T + 5)  # a similarity changes nothing
            names.append(p)
    out = spread(names, shapes)
    assert out["ratio"] < 0.2 and out["people"] == 3 and out["pairs"] == 9
    moved = similarity_align(torch.from_numpy(shapes[0])[None], torch.from_numpy(shapes[1])[None])[0].numpy()
    assert np.linalg.norm(moved - shapes[1], axis=1).mean() < np.linalg.norm(shapes[0] - shapes[1], axis=1).mean()
