"""The real-photo evaluation: NME, the shipped model on real photos, overlays."""

from __future__ import annotations

import numpy as np
import pytest

from glvd_train.evaluate_photos import OUTER_EYE, evaluate_photos, nme, report

pytest.importorskip("skimage.data")


def test_nme_is_normalised_by_the_outer_eye_corners():
    ref = np.zeros((68, 2))
    ref[OUTER_EYE[1]] = [10.0, 0.0]
    assert nme(ref + [1.0, 0.0], ref) == pytest.approx(0.1)
    assert nme(ref, ref) == 0.0


def test_shipped_model_on_real_photos(tmp_path):
    import glvd
    from glvd.pose import FROM_BLENDED, FROM_LANDMARKS

    rec = glvd.Reconstructor(device="cpu")  # the shipped checkpoint (it carries its template)
    scores, _ = evaluate_photos(rec, tmp_path, lfw_faces=2, log=lambda m: None)
    astro = next(s for s in scores if s.name == "astronaut")
    # the camera comes from PnP on MediaPipe's landmarks: the projected landmarks land on the face
    assert astro.nme["glvd|mp"] < 0.15, astro.nme
    assert (tmp_path / "astronaut.png").is_file() and (tmp_path / "lfw_montage.png").is_file()
    text = report(scores, "", tmp_path, tmp_path)
    assert "| astronaut |" in text and "![astronaut](astronaut.png)" in text
    res = rec.reconstruct(np.ascontiguousarray(__import__("skimage.data").data.astronaut()), steps=2)
    # placed by PnP on MediaPipe's landmarks (its rotation blended with the model's estimate where they agree)
    assert res.camera_sources[0] in (FROM_LANDMARKS, FROM_BLENDED) and len(res.camera_sources) == 1


def test_spread_ignores_pose_and_scale_but_not_shape():
    import torch

    from glvd_train.evaluate_consistency import _spread

    x = torch.randn(1, 50, 3) * 0.05
    c, s = torch.cos(torch.tensor(0.3)), torch.sin(torch.tensor(0.3))
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    copies = torch.cat([x, 1.2 * x @ R.T + 0.01, 0.9 * x - 0.02])
    assert _spread(copies)[1] < 1e-3
    other = torch.cat([x, x + torch.randn(1, 50, 3) * 0.004])
    assert _spread(other)[1] > 1.0  # mm


def test_identity_spread_places_photos_by_landmarks_when_a_detector_is_given(tmp_path):
    from runtime_fixtures import small_model, tiny_kit

    from glvd_train.evaluate_consistency import identity_spread

    kit = tiny_kit(tmp_path)
    model = small_model(kit).eval()
    S = model.cfg.image_size
    # a detector that always "sees" the template frontal, 0.5 m away
    lm = model.template.vertices[model.template.landmarks68].astype(np.float64) * [1.0, -1.0, -1.0]
    lm[:, 2] += 0.5
    seen = lm[:, :2] / lm[:, 2:3] * (2.0 * S) + S / 2

    plain = identity_spread(model, str(kit), seed=3, people=2, photos=2, steps=2)
    none = identity_spread(model, str(kit), seed=3, people=2, photos=2, steps=2, detect=lambda img: None)
    found = identity_spread(model, str(kit), seed=3, people=2, photos=2, steps=2, detect=lambda img: seen)
    assert plain["placed_by_landmarks"] is None and none["placed_by_landmarks"] == 0
    assert none["within_mm"] == plain["within_mm"] and none["between_mm"] == plain["between_mm"]
    assert found["placed_by_landmarks"] == 4
    assert found["within_mm"] != plain["within_mm"]
