"""Training on a tiny morphable model the test builds itself (no ../shared needed)."""

from __future__ import annotations

import dataclasses
import warnings

import torch
from runtime_fixtures import SMALL, tiny_kit

from glvd.checkpoint import load_checkpoint
from glvd.synth import SynthConfig, SyntheticFaces
from glvd.train import TrainConfig, losses, train

TINY_MODEL = dataclasses.asdict(SMALL) | {"encoder_widths": list(SMALL.encoder_widths)}


def _cfg(tmp_path, kit, out, iterations, lr=3e-3, dataset_size=0, own_start=0.0) -> TrainConfig:
    # true cameras and perturbed starts only, unless asked: the fit test then measures the loss it trains
    return TrainConfig(out=str(tmp_path / out), kit=str(kit), iterations=iterations, batch=4, max_views=2,
                       dataset_size=dataset_size, true_camera_frac=1.0, own_start_frac=own_start,
                       vertex_subset=256, threads=1, loader_workers=0, val_samples=4, val_every_s=1e9,
                       save_every_s=1e9, lr=lr, start_jitter=0.0, model=TINY_MODEL,
                       synth={"natural_backgrounds": False})


def _training_batch(kit):
    """Batch 0 of a run with seed 0: the one that a 1-batch dataset cycles over."""
    gen = SyntheticFaces(kit_path=kit, config=SynthConfig(image_size=SMALL.image_size, natural_backgrounds=False),
                         seed=0)
    return gen.sample(4, 1)


def _total_loss(model, batch) -> float:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(losses(model.train(), batch, g, 10_000, jitter=0.0, true_camera_frac=1.0,
                            absolute_weight=TrainConfig.absolute_weight)["total"])


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
    # with the model's own descent as the start of some batches (its random draws must resume too)
    straight = train(_cfg(tmp_path, kit, "a", 4, own_start=0.5), log=lambda m: None)
    train(_cfg(tmp_path, kit, "b", 2, own_start=0.5), log=lambda m: None)
    resumed = train(_cfg(tmp_path, kit, "b", 4, own_start=0.5), log=lambda m: None)
    a = torch.load(straight, weights_only=True)["state_dict"]
    b = torch.load(resumed, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_continue_from_a_shipped_checkpoint(tmp_path):
    kit = tiny_kit(tmp_path)
    first = train(_cfg(tmp_path, kit, "first", 2), log=lambda m: None)
    cfg = dataclasses.replace(_cfg(tmp_path, kit, "next", 3), init_from=str(first), model={})
    cont = train(cfg, log=lambda m: None)
    model, prov = load_checkpoint(cont)
    assert prov["iterations"] == 3 and prov["init_from"] == str(first)
    assert model.cfg == load_checkpoint(first)[0].cfg  # the config comes from the checkpoint
