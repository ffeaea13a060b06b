"""glvd.cuda_graph: the runtime's GPU work replayed as CUDA graphs.

Without a GPU the wiring is checked with an eager stand-in that has GraphedPipeline's interface (the
Reconstructor and the photo path must give exactly the eager result through it); with one, the graphs
themselves against eager (tools/cuda_check.py does more on a lent GPU machine).
"""

import numpy as np
import pytest
import torch
from runtime_fixtures import small_model, tiny_kit

import glvd
from glvd.cameras import default_intrinsics
from glvd.checkpoint import load_checkpoint
from glvd.cuda_graph import GraphedPipeline, eager_reconstruction
from glvd.pose import POST_DESCENT_ROUNDS, descend_with_landmark_cameras


class EagerPipeline:
    """GraphedPipeline's interface run eagerly, recording its calls."""

    def __init__(self, model, steps: int) -> None:
        self.model, self.steps, self.calls = model, steps, []

    def front(self, images, K):
        self.calls.append("front")
        self.feats = self.model.encode(images)
        self.prep = self.model.prepare(self.feats)
        return self.feats, self.prep, self.model.estimate_cameras(self.feats, K, self.prep)

    def descend(self, cams, on_step=None, cancel=None):
        self.calls.append("descend")
        xs, kps = self.model.descend(self.feats, cams, self.steps, prep=self.prep)
        for i in range(1, xs.shape[1]):
            if on_step is not None:
                on_step(i, xs[:, i])
        return xs, kps

    def refine_cameras(self, cams, x):
        self.calls.append("refine")
        return self.model.refine_cameras(self.prep, self.feats, cams, x, rounds=POST_DESCENT_ROUNDS)


def _crops(model, views: int, seed: int = 0):
    S = model.cfg.image_size
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, views, 3, S, S, generator=g)
    return images, default_intrinsics(S, S, focal_ratio=2.0).expand(1, views, 3, 3)


def test_a_graph_needs_cuda_and_the_cpu_runtime_never_captures(tmp_path, checkpoint):
    with pytest.raises(ValueError, match="CUDA"):
        GraphedPipeline(small_model(tiny_kit(tmp_path)), 1, 1)
    rec = glvd.Reconstructor(checkpoint, device="cpu", cuda_graphs=True)
    assert rec.cuda_graphs is False and rec._pipeline(1, 10) is None


@torch.no_grad()
def test_eager_reconstruction_is_the_runtime_path_without_landmarks(checkpoint):
    """What the graphs replay is what the photo path computes for views without a detector's landmarks."""
    model, _ = load_checkpoint(checkpoint)
    images, K = _crops(model, 2)
    xs, kps, cams = eager_reconstruction(model, images, K)
    feats = model.encode(images)
    prep = model.prepare(feats)
    est = model.estimate_cameras(feats, K, prep)
    xs2, kps2, cams2, _ = descend_with_landmark_cameras(model, feats, est, [None, None], prep=prep)
    assert torch.equal(xs, xs2) and torch.equal(kps, kps2)
    assert torch.equal(cams.R, cams2.R) and torch.equal(cams.t, cams2.t)


@torch.no_grad()
def test_the_photo_path_through_a_pipeline_equals_eager(checkpoint):
    model, _ = load_checkpoint(checkpoint)
    images, K = _crops(model, 2, seed=1)
    pipe = EagerPipeline(model, model.cfg.steps)
    feats, prep, est = pipe.front(images, K)
    steps_seen = []
    got = descend_with_landmark_cameras(model, feats, est, [None, None], graphs=pipe,
                                        on_step=lambda i, x: steps_seen.append(i))
    want = descend_with_landmark_cameras(model, feats, est, [None, None], prep=prep)
    assert pipe.calls == ["front", "descend"] + (["refine"] if model.camera_refiner is not None else [])
    assert steps_seen == list(range(1, model.cfg.steps + 1))
    for a, b in zip(got[:2], want[:2]):
        assert torch.equal(a, b)
    assert torch.equal(got[2].R, want[2].R) and got[3] == want[3]


def _unguided(checkpoint, tmp_path):
    """The checkpoint without the guidance inputs (the graphs take images only), or itself."""
    from glvd.checkpoint import load_checkpoint, save_checkpoint
    from glvd.model import GLVD, ModelConfig

    model, _ = load_checkpoint(checkpoint, "cpu")
    if not model.needs_guidance:
        return checkpoint
    cfg = ModelConfig.from_dict({**model.cfg.to_dict(), "identity_dim": 0, "landmark_guidance": False,
                                 "identity_prior_rank": 0})
    plain = GLVD(cfg, model.template)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    return save_checkpoint(tmp_path / "unguided.pt", plain.eval(), {"trained": False, "note": "test"})


def test_a_guided_model_never_takes_the_graph_route(checkpoint, face_photo, tmp_path):
    rec = glvd.Reconstructor(checkpoint, device="cpu")
    if not rec.model.needs_guidance:
        pytest.skip("the shipped checkpoint reads no guidance")
    rec._pipeline = lambda views, steps: pytest.fail("a guided model went through the graph pipeline")
    assert np.isfinite(rec.reconstruct(face_photo, steps=2).vertices).all()


def test_the_reconstructor_through_a_pipeline_gives_the_eager_result(checkpoint, face_photo, tmp_path):
    """The Reconstructor's graph route (front, then the photo path or the given cameras' descent through the
    pipeline) returns exactly what its eager route does."""
    rec = glvd.Reconstructor(_unguided(checkpoint, tmp_path), device="cpu")
    plain = rec.reconstruct(face_photo, steps=3)
    pipes = []

    def pipeline(views, steps):
        pipes.append(EagerPipeline(rec.model, steps))
        return pipes[-1]

    rec._pipeline = pipeline
    seen = []
    piped = rec.reconstruct(face_photo, steps=3, on_step=lambda i, v: seen.append(i))
    assert seen == [1, 2, 3] and pipes[0].calls[:2] == ["front", "descend"]
    np.testing.assert_array_equal(piped.vertices, plain.vertices)
    np.testing.assert_array_equal(piped.cameras["R"], plain.cameras["R"])
    assert piped.camera_sources == plain.camera_sources
    given = [{k: plain.cameras[k][0] for k in ("K", "R", "t")}]
    with_cams = rec.reconstruct(face_photo, cameras=given, steps=3)
    assert pipes[1].calls == ["front", "descend"]
    rec._pipeline = lambda views, steps: None
    np.testing.assert_array_equal(with_cams.vertices, rec.reconstruct(face_photo, cameras=given, steps=3).vertices)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graph_replays_match_eager_on_cuda(tmp_path):
    model = small_model(tiny_kit(tmp_path)).cuda().eval()
    images, K = (x.cuda() for x in _crops(model, 2))
    want = eager_reconstruction(model, images, K)
    pipe = GraphedPipeline(model, 1, 2)
    for _ in range(2):  # a second replay on the same buffers gives the same
        got = pipe.reconstruct(images, K)
        assert torch.allclose(got[0], want[0], atol=1e-5) and torch.allclose(got[2].R, want[2].R, atol=1e-5)
