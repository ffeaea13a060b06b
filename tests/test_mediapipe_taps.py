"""glvd.mediapipe_torch.tflite_graph.TFLiteGraph.forward_taps: intermediate tensors out of the face mesh
network, with forward's outputs bit-identical (research/mediapipe_features reads them)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glvd.mediapipe_torch import WEIGHTS, load_graph

pytestmark = pytest.mark.skipif(not WEIGHTS.exists(), reason="MediaPipe weights missing")


@pytest.fixture(scope="module")
def graph():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_graph("face_landmarker").eval()
    torch.set_num_threads(n)


def _reference(g, x: torch.Tensor) -> list[torch.Tensor]:
    """forward as it was before the taps: the operator loop, written out."""
    env = {g.inputs[0]: x}
    with torch.no_grad():
        for op in g.ops:
            env[op["out"][0]] = g._run(op, lambda i: env[i] if i in env else g.constant(i))
    return [t.permute(0, 2, 3, 1) if t.dim() == 4 else t for t in (env[i] for i in g.outputs)]


def _input() -> torch.Tensor:
    return torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(0))


def test_outputs_unchanged(graph) -> None:
    x = _input()
    ref = _reference(graph, x)
    plain = graph(x)
    tapped, _ = graph.forward_taps(x, taps=[53, 113])
    for r, p, t in zip(ref, plain, tapped, strict=True):
        assert torch.equal(r, p) and torch.equal(r, t)


def test_taps_shapes_and_values(graph) -> None:
    x = _input()
    taps = [23, 53, 83, 113, 141, *graph.outputs]
    outs, got = graph.forward_taps(x, taps=taps)
    assert list(got) == taps
    for t in (23, 53, 83, 113, 141):
        _, h, w, c = graph.shapes[t]
        assert got[t].shape == (2, c, h, w)
    # an output tapped is that output (NCHW there, NHWC from forward)
    for i, o in zip(graph.outputs, outs, strict=True):
        assert torch.equal(got[i].permute(0, 2, 3, 1), o)
    # tensor 113 is the PRELU of tensor 111 (ops 50-51): tap both and redo the operator
    op = next(op for op in graph.ops if op["out"][0] == 113)
    assert op["op"] == "PRELU" and op["in"][0] == 111
    _, two = graph.forward_taps(x, taps=[111, 113])
    assert torch.equal(F.prelu(two[111], graph.constant(op["in"][1]).reshape(-1)), two[113])


def test_unknown_tap(graph) -> None:
    with pytest.raises(KeyError):
        graph.forward_taps(_input(), taps=[1])  # a weight, not an operator's output
    assert graph.intermediate[-1] in graph.outputs
