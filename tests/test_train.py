"""Training on a tiny morphable model the test builds itself (no ../shared needed)."""

from __future__ import annotations

import dataclasses
import warnings

import torch
from runtime_fixtures import SMALL, tiny_kit

from glvd.checkpoint import load_checkpoint
from glvd_train.synth import SynthConfig, SyntheticFaces
from glvd_train.losses import CoefficientProbe, LossConfig, losses, perturbed_start
from glvd_train.train import TrainConfig, curriculum_difficulty, train

TINY_MODEL = dataclasses.asdict(SMALL) | {"encoder_widths": list(SMALL.encoder_widths)}


def _cfg(tmp_path, kit, out, iterations, lr=3e-3, dataset_size=0, own_start=0.0, reuse=1) -> TrainConfig:
    # true cameras and perturbed starts only, unless asked: the fit test then measures the loss it trains
    return TrainConfig(out=str(tmp_path / out), kit=str(kit), iterations=iterations, batch=4, max_views=2,
                       dataset_size=dataset_size, true_camera_frac=1.0, own_start_frac=own_start,
                       vertex_subset=256, threads=1, loader_workers=0, val_samples=4, val_every_s=1e9,
                       save_every_s=1e9, lr=lr, start_jitter=0.0, model=TINY_MODEL,
                       synth={"natural_backgrounds": False}, reuse=reuse)


def _training_batch(kit):
    """Batch 0 of a run with seed 0: the one that a 1-batch dataset cycles over."""
    gen = SyntheticFaces(kit_path=kit, config=SynthConfig(image_size=SMALL.image_size, natural_backgrounds=False),
                         seed=0)
    return gen.sample(4, 1)


def _total_loss(model, batch) -> float:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lc = LossConfig(10_000, jitter=0.0, true_camera_frac=1.0, absolute_weight=TrainConfig.absolute_weight)
        return float(losses(model.train(), batch, g, lc)["total"])


def test_tiny_training_reduces_the_loss(tmp_path):
    kit = tiny_kit(tmp_path)
    batch = _training_batch(kit)
    path0 = train(_cfg(tmp_path, kit, "zero", 1, lr=0.0), log=lambda m: None)
    before = _total_loss(load_checkpoint(path0)[0], batch)
    # the machinery must be able to fit: one batch, seen 80 times
    path = train(_cfg(tmp_path, kit, "run", 80, dataset_size=1), log=lambda m: None)
    model, prov = load_checkpoint(path)
    after = _total_loss(model, batch)
    assert prov["trained"] is True and prov["iterations"] == 80
    assert after < 0.8 * before, (before, after)  # an unchanged model gives 1.0
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,") and len(log) >= 2


def test_resume_equals_uninterrupted(tmp_path):
    kit = tiny_kit(tmp_path)
    # with the model's own descent as the start of some batches (its random draws must resume too),
    # and every rendered batch serving two iterations (the stop falls between batches)
    straight = train(_cfg(tmp_path, kit, "a", 6, own_start=0.5, reuse=2), log=lambda m: None)
    train(_cfg(tmp_path, kit, "b", 2, own_start=0.5, reuse=2), log=lambda m: None)
    resumed = train(_cfg(tmp_path, kit, "b", 6, own_start=0.5, reuse=2), log=lambda m: None)
    a = torch.load(straight, weights_only=True)["state_dict"]
    b = torch.load(resumed, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(tmp_path / "a" / "state.pt", weights_only=False)
    sb = torch.load(tmp_path / "b" / "state.pt", weights_only=False)
    assert sa["iteration"] == sb["iteration"] == 6 and sa["batch"] == sb["batch"] == 3
    for k in sa["probe"]:  # the training-only coefficient probe resumes too
        assert torch.equal(sa["probe"][k], sb["probe"][k]), k


def test_continue_from_a_shipped_checkpoint(tmp_path):
    kit = tiny_kit(tmp_path)
    first = train(_cfg(tmp_path, kit, "first", 2), log=lambda m: None)
    cfg = dataclasses.replace(_cfg(tmp_path, kit, "next", 3), init_from=str(first), model={})
    cont = train(cfg, log=lambda m: None)
    model, prov = load_checkpoint(cont)
    assert prov["iterations"] == 3 and prov["init_from"] == str(first)
    assert model.cfg == load_checkpoint(first)[0].cfg  # the config comes from the checkpoint


def test_loss_config_takes_the_training_recipe():
    cfg = TrainConfig(vertex_subset=100, start_jitter=0.2, path_start_prob=0.3, unroll=4, aux_weight=0.5)
    lc = LossConfig.of(cfg)
    assert (lc.subset, lc.jitter, lc.path_prob, lc.unroll, lc.aux_weight) == (100, 0.2, 0.3, 4, 0.5)
    assert (lc.true_camera_frac, lc.absolute_weight, lc.own_start_frac, lc.rise_weight) == (
        cfg.true_camera_frac, cfg.absolute_weight, cfg.own_start_frac, cfg.rise_weight)


def test_starts_carry_no_part_of_the_answer_by_default():
    template = torch.zeros(5, 3)
    gt = torch.randn(3, 5, 3)
    start = perturbed_start(template, gt, torch.Generator().manual_seed(0), jitter=0.0)
    assert torch.equal(start, template.expand(3, -1, -1))
    on_path = perturbed_start(template, gt, torch.Generator().manual_seed(0), jitter=0.0, path_prob=1.0)
    assert not torch.equal(on_path, start)


def test_coefficient_probe_scores_in_vertex_space(tmp_path):
    basis = torch.zeros(2, 4, 3)
    basis[0, :, 0] = 1.0  # mode 0 moves every vertex 1 cm along x
    basis[1, 0, 1] = 2.0  # mode 1 moves one vertex 2 cm along y
    probe = CoefficientProbe(global_channels=3, basis=basis)
    g = torch.zeros(2, 3)  # an untrained probe predicts zeros for two views of one face
    idx = torch.arange(4)
    assert torch.isclose(probe.loss(g, 2, torch.tensor([[1.0, 0.0]]), idx), torch.tensor(1.0))
    assert torch.isclose(probe.loss(g, 2, torch.tensor([[0.0, 1.0]]), idx), torch.tensor(0.5))
    assert probe.loss(g, 2, torch.zeros(1, 2), idx) == 0


def test_curriculum_starts_easy_and_widens():
    cfg = TrainConfig(curriculum=(10, 20), curriculum_from=100)
    assert curriculum_difficulty(105, cfg) == 0.0  # still holding
    assert curriculum_difficulty(120, cfg) == 0.5
    assert curriculum_difficulty(1000, cfg) == 1.0
    assert curriculum_difficulty(0, TrainConfig()) == 1.0  # off by default
    full = SynthConfig()
    assert full.at_difficulty(1.0) == full
    easy = full.at_difficulty(0.0)
    assert easy.yaw_max == 3.0 and easy.roll_max == 0.0 and easy.expression_neutral_prob == 1.0
    assert easy.augment_config.noise_prob == 0.0 and easy.lights_max == 1
    half = full.at_difficulty(0.5)
    assert easy.yaw_max < half.yaw_max < full.yaw_max


def test_curriculum_renders_easy_batches_and_resumes(tmp_path):
    kit = tiny_kit(tmp_path)
    cfg = dataclasses.replace(_cfg(tmp_path, kit, "a", 4, reuse=2), curriculum=(2, 4), val_every_s=0.0)
    straight = train(cfg, log=lambda m: None)
    train(dataclasses.replace(cfg, out=str(tmp_path / "b"), iterations=2), log=lambda m: None)
    resumed = train(dataclasses.replace(cfg, out=str(tmp_path / "b")), log=lambda m: None)
    a = torch.load(straight, weights_only=True)["state_dict"]
    b = torch.load(resumed, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "a" / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    last = dict(zip(header, log[-1].split(","), strict=True))
    assert float(last["difficulty"]) == 0.5 and float(last["val_easy_mm"]) > 0
    # a model continued with the same curriculum carries on with its schedule instead of starting easy again
    cont = train(dataclasses.replace(cfg, out=str(tmp_path / "c"), iterations=6, init_from=str(straight), model={}),
                 log=lambda m: None)
    assert load_checkpoint(cont)[1]["curriculum_from"] == 0
    # the batches a resumed run renders at difficulty 0 are near-frontal, neutral faces
    gen = SyntheticFaces(kit_path=kit, config=SynthConfig(image_size=32, natural_backgrounds=False).at_difficulty(0),
                         seed=1)
    s = gen.sample(4, 1)
    assert (s["expression"] == 0).all()
    yaw = torch.rad2deg(torch.atan2(s["R"][:, 0, 0, 2], s["R"][:, 0, 0, 0])).abs()
    assert (yaw <= 3.0 + 1e-4).all(), yaw


def test_training_on_a_missing_gpu_or_rendering_there_from_workers_is_refused(tmp_path):
    import pytest

    kit = tiny_kit(tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            train(dataclasses.replace(_cfg(tmp_path, kit, "g", 1), device="cuda"), log=lambda m: None)
    with pytest.raises(ValueError, match="loader_workers=0"):
        train(dataclasses.replace(_cfg(tmp_path, kit, "w", 1), render_device="meta", loader_workers=1),
              log=lambda m: None)
    assert not (tmp_path / "g").exists() and not (tmp_path / "w").exists()  # nothing written


def test_unrolled_descents_train_the_encoder_too(tmp_path):
    """--unroll: the loss of whole descents from the template reaches the encoder, and training lowers it."""
    kit = tiny_kit(tmp_path)
    batch = _training_batch(kit)

    def unrolled(model) -> dict:
        g = torch.Generator().manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lc = LossConfig(10_000, jitter=0.0, true_camera_frac=1.0, absolute_weight=TrainConfig.absolute_weight,
                            unroll=3)
            return losses(model.train(), batch, g, lc)

    model0, _ = load_checkpoint(train(_cfg(tmp_path, kit, "zero", 1, lr=0.0), log=lambda m: None))
    out = unrolled(model0)
    assert len([k for k in ("vert", "kp", "rise", "cam") if k in out]) == 4
    out["total"].backward()
    grads = [p.grad for p in model0.encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)  # through prepare() into the encoder
    before = float(unrolled(model0)["total"].detach())
    path = train(dataclasses.replace(_cfg(tmp_path, kit, "unrolled", 60, dataset_size=1), unroll=3),
                 log=lambda m: None)
    model, prov = load_checkpoint(path)
    assert prov["unroll"] == 3 and prov["rise_weight"] == TrainConfig.rise_weight
    assert float(unrolled(model)["total"].detach()) < 0.8 * before


def test_unrolled_training_of_the_lvd_ablation_is_refused(tmp_path):
    import pytest

    from glvd_train.train import UNROLL_NEEDS_GUIDANCE

    kit = tiny_kit(tmp_path)
    cfg = dataclasses.replace(_cfg(tmp_path, kit, "lvd", 1), unroll=3, model=TINY_MODEL | {"guidance": False})
    with pytest.raises(ValueError, match="keypoint-guided"):
        train(cfg, log=lambda m: None)
    assert not (tmp_path / "lvd").exists() and "LVD" in UNROLL_NEEDS_GUIDANCE
