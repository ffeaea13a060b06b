"""The worker's answers to malformed requests: ``bad_request`` naming the field, ``internal`` for real bugs.

Served in process (``glvd.worker.serve`` on a list of lines): the fields are checked before the
model is touched, so no checkpoint is loaded here.
"""

from __future__ import annotations

import io
import json

import pytest

from glvd import worker as worker_mod
from glvd.preprocess import FOCAL_ASSUMED, FOCAL_CODES, FOCAL_EXIF, FOCAL_GIVEN, focal_code

EYE = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
CAM = {"K": [[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]], "R": EYE, "t": [0.0, 0.0, 1.0]}


def serve_lines(lines: list[str | dict]) -> list[dict]:
    """Every event the worker writes for these request lines (then end of input), ``ready`` dropped."""
    inp = io.StringIO("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    out = io.StringIO()
    assert worker_mod.serve(inp, out, device="cpu", checkpoint="/no/such/checkpoint.pt", warm=False) == 0
    events = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert events[0]["event"] == "ready"
    return events[1:]


def rec(**fields) -> dict:
    return {"id": "r", "cmd": "reconstruct", "images": ["/a.jpg"], **fields}


# (request, the field the message must name)
MALFORMED = [
    (rec(images=[]), "images"),
    (rec(images="a.jpg"), "images"),
    (rec(images=[1, 2]), "images"),
    (rec(images=[""]), "images"),
    (rec(images=[f"/p{i}.jpg" for i in range(9)]), "images"),
    ({"id": "r", "cmd": "reconstruct"}, "images"),
    (rec(steps=0), "steps"),
    (rec(steps=31), "steps"),
    (rec(steps="10"), "steps"),
    (rec(steps=2.5), "steps"),
    (rec(steps=True), "steps"),
    (rec(cameras={"K": EYE}), "cameras"),
    (rec(cameras=[]), "cameras"),
    (rec(cameras=[CAM, CAM]), "cameras"),
    (rec(cameras=["camera"]), "cameras[0]"),
    (rec(cameras=[{"K": EYE, "R": EYE}]), "cameras[0].t"),
    (rec(cameras=[{**CAM, "K": [[1.0, 0.0], [0.0, 1.0]]}]), "cameras[0].K"),
    (rec(cameras=[{**CAM, "R": [[1.0, 0.0, 0.0], [0.0, 1.0], [0.0, 0.0, 1.0]]}]), "cameras[0].R[1]"),
    (rec(cameras=[{**CAM, "t": [0.0, "x", 1.0]}]), "cameras[0].t[1]"),
    (rec(cameras=[{**CAM, "t": [0.0, float("nan"), 1.0]}]), "cameras[0].t[1]"),
    (rec(texture=300), "texture"),
    (rec(texture="1024"), "texture"),
    (rec(lens_35mm=0), "lens_35mm"),
    (rec(lens_35mm=5000), "lens_35mm"),
    (rec(lens_35mm="26"), "lens_35mm"),
    (rec(expressions="yes"), "expressions"),
    (rec(device="tpu"), "device"),
    (rec(device=3), "device"),
    (rec(checkpoint=5), "checkpoint"),
    (rec(texture_path=["a"]), "texture_path"),
    ({"id": "r", "cmd": "info", "device": "gpu"}, "device"),
]


@pytest.mark.parametrize(("req", "field"), MALFORMED, ids=[f"{i}-{f}" for i, (_, f) in enumerate(MALFORMED)])
def test_argument_errors_are_bad_requests_naming_the_field(req: dict, field: str) -> None:
    events = serve_lines([req])
    assert len(events) == 1, events
    ev = events[0]
    assert (ev["event"], ev["id"], ev["code"]) == ("error", "r", "bad_request"), ev
    assert f"'{field}" in ev["message"], ev["message"]


def test_the_worker_answers_every_malformed_line_and_keeps_serving() -> None:
    lines = ["this is not json", "[1, 2]", '{"id": "x", "cmd": "frobnicate"}', *[r for r, _ in MALFORMED],
             {"id": "bye", "cmd": "shutdown"}]
    events = serve_lines(lines)
    assert [e["event"] for e in events] == ["error"] * (len(lines) - 1) + ["bye"]
    assert {e["code"] for e in events[:-1]} == {"bad_request"}


def test_a_valid_request_passes_the_checks_and_fails_later_for_what_it_is() -> None:
    # the checks pass, the model is loaded: a missing checkpoint is its own code, not bad_request
    events = serve_lines([rec(steps=3, cameras=[CAM], texture=512, lens_35mm=26, expressions=False)])
    assert events[0]["event"] == "progress" and events[-1]["code"] == "checkpoint", events


def test_a_real_bug_stays_internal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def broken(self, device, checkpoint):
        return {}["oops"]  # a KeyError from inside the runtime is a bug, not the caller's fault

    monkeypatch.setattr(worker_mod.Worker, "_reconstructor", broken)
    ev = serve_lines([rec(), {"id": "i", "cmd": "info"}])
    assert [(e["id"], e["code"]) for e in ev if e["event"] == "error"] == [("r", "internal"), ("i", "internal")]
    assert "KeyError" in capsys.readouterr().err  # with its traceback on stderr


def test_parse_reconstruct_normalises() -> None:
    req = worker_mod.parse_reconstruct(rec(cameras=[{"K": [[500, 0, 320], [0, 500, 240], [0, 0, 1]], "R": EYE,
                                                     "t": [0, 0, 1]}], checkpoint=""))
    assert req["steps"] == 10 and req["expressions"] is True and req["texture"] is None
    assert req["checkpoint"] is None and req["device"] is None
    assert req["cameras"][0]["t"] == [0.0, 0.0, 1.0] and isinstance(req["cameras"][0]["K"][0][0], float)


def test_focal_codes() -> None:
    assert [focal_code(s) for s in (FOCAL_GIVEN, FOCAL_EXIF, "lens 26 mm", "camera", FOCAL_ASSUMED)] == list(
        FOCAL_CODES)
