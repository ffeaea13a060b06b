"""Checkpoints, the API, the CLI and the worker protocol, end to end on a real photo.

Uses an explicitly untrained checkpoint built on the tiny kit, so these run on a
fresh clone without ../shared; what they check is the plumbing, not accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runtime_fixtures import SMALL, tiny_kit

import glvd
from glvd.checkpoint import load_checkpoint, save_checkpoint, write_untrained_checkpoint
from glvd.export import read_obj_vertices
from glvd.worker import decode_array

skimage_data = pytest.importorskip("skimage.data")
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "vendor" / "glvd"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ckpt")
    return write_untrained_checkpoint(d / "untrained.pt", kit_path=tiny_kit(d), config=SMALL)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("photos") / "astronaut face.jpg"  # a space in the name on purpose
    Image.fromarray(skimage_data.astronaut()).save(p, quality=92)
    return p


@pytest.fixture(scope="module")
def blank(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("photos") / "blank.png"
    Image.fromarray(np.full((240, 320, 3), 127, np.uint8)).save(p)
    return p


# --- checkpoints ---------------------------------------------------------------------------------------------

def test_checkpoint_round_trip(ckpt, tmp_path):
    model, prov = load_checkpoint(ckpt)
    assert prov["trained"] is False and "UNTRAINED" in prov["note"]
    again = save_checkpoint(tmp_path / "again.pt", model, {"trained": False})
    model2, _ = load_checkpoint(again)
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert np.array_equal(model.template.quads, model2.template.quads)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(glvd.CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint(ckpt, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(glvd.CheckpointError, match="truncated.pt"):
        load_checkpoint(bad)


def test_foreign_and_mismatched_checkpoints(ckpt, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(glvd.CheckpointError, match="not a GLVD checkpoint"):
        load_checkpoint(foreign)
    payload = torch.load(ckpt, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    mism = tmp_path / "mismatched.pt"
    torch.save(payload, mism)
    with pytest.raises(glvd.CheckpointError, match="does not match"):
        load_checkpoint(mism)


# --- the API -------------------------------------------------------------------------------------------------

def test_reconstruct_a_real_photo(ckpt, photo):
    rec = glvd.Reconstructor(checkpoint=ckpt, device="cpu")
    seen: list[int] = []
    res = rec.reconstruct([photo], steps=4, on_step=lambda i, v: seen.append(i))
    n = rec.template.num_vertices
    assert seen == [1, 2, 3, 4]
    assert res.vertices.shape == (5, n, 3) and res.vertices.dtype == np.float32
    assert res.cameras["K"].shape == (1, 3, 3) and res.landmarks2d.shape == (1, 68, 2)
    assert res.trained is False
    E = res.expressions()
    assert E.shape == (len(res.expression_names), n, 3)
    # computed once per final shape and shared read-only (the keys, the posed faces and the bake ask for it)
    assert res.expressions() is E and not E.flags.writeable
    final = res.vertices[-1].copy()
    res.vertices[-1] *= 1.1  # another final shape on the same result: computed anew
    assert not np.array_equal(res.expressions(), E)
    res.vertices[-1] = final
    assert np.array_equal(res.expressions(), E)
    assert {"preprocess_s", "encode_s", "descent_s", "total_s"} <= set(res.timings)
    assert res.focal_sources == ["assumed: face 1.2 m away"]  # the test photo has no EXIF
    lens = rec.reconstruct([photo], steps=1, lens_35mm=26)  # a phone's main camera
    W, H = res.image_sizes[0]
    assert lens.focal_sources == ["lens 26 mm"] and lens.cameras["K"][0, 0, 0] == pytest.approx(26 / 36 * max(W, H))
    with pytest.raises(glvd.GLVDError, match="lens_35mm"):
        rec.reconstruct([photo], steps=1, lens_35mm=-5)


def test_reconstruct_takes_the_focal_length_from_exif(ckpt, photo, tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50  # FocalLengthIn35mmFilm
    jpg = tmp_path / "exif50.jpg"
    Image.open(photo).convert("RGB").save(jpg, exif=exif, quality=95)
    res = glvd.Reconstructor(checkpoint=ckpt, device="cpu").reconstruct(str(jpg), steps=1, lens_35mm=26)
    W, H = res.image_sizes[0]
    assert res.focal_sources == ["EXIF"]  # the file's own lens wins over lens_35mm
    assert res.cameras["K"][0, 0, 0] == pytest.approx(50 / 36 * max(W, H))


def test_cancel_between_steps(ckpt, photo):
    rec = glvd.Reconstructor(checkpoint=ckpt, device="cpu")
    cancel = threading.Event()

    def on_step(i, v):
        if i == 2:
            cancel.set()

    with pytest.raises(glvd.Cancelled):
        rec.reconstruct(photo, steps=6, on_step=on_step, cancel=cancel)


def test_no_face_and_unreadable(ckpt, blank, tmp_path):
    rec = glvd.Reconstructor(checkpoint=ckpt, device="cpu")
    with pytest.raises(glvd.NoFaceError, match="blank.png"):
        rec.reconstruct(blank)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(glvd.ImageError, match="junk.jpg"):
        rec.reconstruct(junk)


# --- the CLI -------------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glvd", *args], capture_output=True, text=True, env=ENV,
                          timeout=300)


def test_cli_reconstruct_obj_glb_and_steps(ckpt, photo, tmp_path):
    out = tmp_path / "face.obj"
    r = _cli("reconstruct", str(photo), "-o", str(out), "--steps", "3", "--checkpoint", str(ckpt),
             "--device", "cpu", "--all-steps", "--json", str(tmp_path / "r.json"), "--mode", "face")
    assert r.returncode == 0, r.stderr
    assert "UNTRAINED" in r.stderr and "step 3/3" in r.stderr
    assert r.stdout == ""
    v = read_obj_vertices(out)
    assert np.array_equal(v, read_obj_vertices(tmp_path / "face_step03.obj"))
    api = glvd.Reconstructor(checkpoint=ckpt, device="cpu").reconstruct(photo, steps=3)
    np.testing.assert_allclose(v, api.final, atol=2e-6)  # OBJ keeps 6 decimals
    meta = json.loads((tmp_path / "r.json").read_text())
    assert len(meta["landmarks2d"][0]) == 68
    assert meta["camera_sources"] == api.camera_sources and len(meta["camera_sources"]) == 1
    assert meta["focal_sources"] == api.focal_sources and len(meta["focal_sources"]) == 1
    glb = tmp_path / "face.glb"
    assert _cli("reconstruct", str(photo), "-o", str(glb), "--steps", "2", "--checkpoint", str(ckpt),
                "-q", "--lens-35mm", "50", "--json", str(tmp_path / "g.json"), "--mode", "face").returncode == 0
    assert json.loads((tmp_path / "g.json").read_text())["focal_sources"] == ["lens 50 mm"]
    assert glb.read_bytes()[:4] == b"glTF"
    data = glb.read_bytes()
    names = json.loads(data[20:20 + int.from_bytes(data[12:16], "little")])["meshes"][0]["extras"]["targetNames"]
    assert names == ["GLVD 01", "GLVD 02", *api.expression_names]  # the face area's ARKit targets, as the head's
    # the whole head (the default) is built around the kit's face area only: the tiny kit's checkpoint is refused
    r = _cli("reconstruct", str(photo), "-o", str(tmp_path / "head.obj"), "--checkpoint", str(ckpt), "-q")
    assert r.returncode == 2 and "--mode face" in r.stderr and not (tmp_path / "head.obj").exists()


@pytest.mark.parametrize(("args", "code", "message"), [
    (["missing.jpg"], 3, "missing.jpg"),
    (["BLANK"], 4, "no face"),
])
def test_cli_exit_codes(ckpt, blank, tmp_path, args, code, message):
    args = [str(blank) if a == "BLANK" else str(tmp_path / a) for a in args]
    r = _cli("reconstruct", *args, "-o", str(tmp_path / "x.obj"), "--checkpoint", str(ckpt), "--mode", "face")
    assert r.returncode == code and message in r.stderr
    assert not (tmp_path / "x.obj").exists()


def test_cli_bad_checkpoint_and_output(photo, tmp_path):
    r = _cli("reconstruct", str(photo), "-o", str(tmp_path / "x.obj"), "--checkpoint", str(tmp_path / "no.pt"))
    assert r.returncode == 5 and "no.pt" in r.stderr
    r = _cli("reconstruct", str(photo), "-o", str(tmp_path / "x.fbx"))
    assert r.returncode == 2


# --- the worker ----------------------------------------------------------------------------------------------

class _Worker:
    def __init__(self, ckpt: Path, delay: float = 0.0) -> None:
        env = {**ENV, "GLVD_WORKER_STEP_DELAY": str(delay)}
        self.p = subprocess.Popen([sys.executable, "-m", "glvd", "worker", "--checkpoint", str(ckpt), "--device",
                                   "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.read()["event"] == "ready"

    def send(self, obj) -> None:
        self.p.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.p.stdin.flush()

    def read(self) -> dict:
        line = self.p.stdout.readline()
        assert line, "worker closed its output"
        return json.loads(line)

    def until(self, *events: str) -> tuple[dict, list[dict]]:
        seen = []
        while True:
            ev = self.read()
            seen.append(ev)
            if ev["event"] in events:
                return ev, seen

    def close(self) -> int:
        self.send({"id": "bye", "cmd": "shutdown"})
        assert self.until("bye")[0]["id"] == "bye"
        return self.p.wait(timeout=120)


def test_worker_protocol(ckpt, photo, blank):
    w = _Worker(ckpt)
    try:
        w.send({"id": "i", "cmd": "info"})
        info, _ = w.until("info")
        assert info["trained"] is False and info["checkpoint"] == str(ckpt)
        w.send({"id": "r", "cmd": "reconstruct", "images": [str(photo)], "steps": 3, "texture": 512,
                "lens_35mm": 85})
        res, seen = w.until("result", "error")
        assert res["event"] == "result", res
        assert res["focal_sources"] == ["lens 85 mm"] and res["focal_codes"] == ["lens"]
        kinds = [e["event"] for e in seen]
        assert kinds.index("topology") < kinds.index("step")  # the mesh can be built before the first step
        topo = next(e for e in seen if e["event"] == "topology")
        np.testing.assert_array_equal(decode_array(topo["quads"]), decode_array(res["quads"]))
        assert res["texture_error"] is None and Image.open(res["texture_png"]).size == (512, 512)
        os.unlink(res["texture_png"])
        steps = [e for e in seen if e["event"] == "step"]
        assert [e["step"] for e in steps] == [1, 2, 3]
        verts = decode_array(res["vertices"])
        assert verts.shape[0] == 4
        np.testing.assert_array_equal(decode_array(steps[-1]["vertices"]), verts[-1])
        assert decode_array(res["expressions"]).shape[1:] == verts.shape[1:]
        w.send("this is not json")
        err, _ = w.until("error")
        assert err["code"] == "bad_request"
        w.send({"id": "b", "cmd": "reconstruct", "images": "not-a-list"})
        err, _ = w.until("error")
        assert (err["id"], err["code"]) == ("b", "bad_request")
        w.send({"id": "m", "cmd": "reconstruct", "images": ["/no/such/photo.jpg"]})
        err, _ = w.until("error")
        assert (err["id"], err["code"]) == ("m", "unreadable_image")
        w.send({"id": "n", "cmd": "reconstruct", "images": [str(blank)]})
        err, _ = w.until("error")
        assert (err["id"], err["code"]) == ("n", "no_face")
        w.send({"id": "x", "cmd": "frobnicate"})
        assert w.until("error")[0]["code"] == "bad_request"
    finally:
        assert w.close() == 0


def test_worker_cancel_then_serves_again(ckpt, photo):
    w = _Worker(ckpt, delay=0.3)
    try:
        w.send({"id": "slow", "cmd": "reconstruct", "images": [str(photo)], "steps": 20})
        first, _ = w.until("step")
        assert first["step"] == 1
        w.send({"id": "c", "cmd": "cancel", "target": "slow"})
        end, seen = w.until("cancelled", "result", "error")
        assert (end["event"], end["id"]) == ("cancelled", "slow")
        assert max(e.get("step", 0) for e in seen) < 20
        w.send({"id": "again", "cmd": "reconstruct", "images": [str(photo)], "steps": 1})
        assert w.until("result", "error")[0]["event"] == "result"
    finally:
        assert w.close() == 0


def test_worker_warms_up_in_the_background(ckpt, tmp_path):
    import io

    from glvd.worker import Worker

    w = Worker(io.StringIO(), device="cpu", checkpoint=str(ckpt))
    w.warm_up().join(timeout=300)
    assert w.rec is not None and w.rec.checkpoint_path == str(ckpt)
    assert w._reconstructor(None, None) is w.rec  # the first request finds the model loaded
    # a warm-up that fails stays silent: the request that needs the model reports it
    bad = Worker(io.StringIO(), device="cpu", checkpoint=str(tmp_path / "missing.pt"))
    bad.warm_up().join(timeout=300)
    assert bad.rec is None
    with pytest.raises(glvd.CheckpointError):
        bad._reconstructor(None, None)
