"""Plain unit tests of the extension's pure helpers (no Blender): frames, mesh arrays, worker_client and job."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import load_pure

frames = load_pure("frames")
meshdata = load_pure("meshdata")
worker_client = load_pure("worker_client")
jobmod = load_pure("job")


# -- frames ------------------------------------------------------------------------------
def test_head_frame_to_blender_axes() -> None:
    # nose tip out of the face (+z head) -> toward -Y: the face looks at the front view
    np.testing.assert_allclose(frames.head_to_blender([0.0, 0.0, 0.1]), [0.0, -0.1, 0.0])
    np.testing.assert_allclose(frames.head_to_blender([0.0, 1.0, 0.0]), [0.0, 0.0, 1.0])  # up stays up
    np.testing.assert_allclose(frames.head_to_blender([1.0, 0.0, 0.0]), [1.0, 0.0, 0.0])  # subject's left = +X
    assert np.isclose(np.linalg.det(frames.HEAD_TO_BLENDER), 1.0)  # a rotation: no mirrored faces
    pts = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    np.testing.assert_allclose(frames.blender_to_head(frames.head_to_blender(pts)), pts)
    np.testing.assert_allclose(frames.head_to_blender(pts), pts @ frames.HEAD_TO_BLENDER.T, atol=1e-6)


def _random_camera(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    t = rng.normal(size=3)
    K = np.array([[900.0, 0, 310.0], [0, 900.0, 250.0], [0, 0, 1]])
    return K, R, t


@pytest.mark.parametrize(("w", "h"), [(640, 480), (480, 640)])
def test_camera_round_trip(w: int, h: int) -> None:
    rng = np.random.default_rng(1)
    K, R, t = _random_camera(rng)
    obj = np.eye(4)
    obj[:3, 3] = [0.3, -1.0, 1.5]  # the GLVD object at the 3D cursor
    cam = frames.blender_camera_from_opencv(K, R, t, w, h, obj)
    K2 = frames.blender_camera_intrinsics(cam["lens"], cam["sensor_width"], cam["sensor_height"], cam["sensor_fit"],
                                          w, h, cam["shift_x"], cam["shift_y"])
    R2, t2 = frames.opencv_from_blender_camera(cam["matrix_world"], obj)
    np.testing.assert_allclose(K2, K, atol=1e-9)
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)


def test_frontal_camera_sits_in_front_of_the_face() -> None:
    d = 0.6
    K = np.array([[800.0, 0.0, 256.0], [0.0, 800.0, 256.0], [0.0, 0.0, 1.0]])
    cam = frames.blender_camera_from_opencv(K, np.diag([1.0, -1.0, -1.0]), np.array([0.0, 0.0, d]), 512, 512)
    m = cam["matrix_world"]
    np.testing.assert_allclose(m[:3, 3], [0.0, -d, 0.0], atol=1e-12)  # on -Y, where the face looks
    np.testing.assert_allclose(-m[:3, 2], [0.0, 1.0, 0.0], atol=1e-12)  # looking along +Y at the face
    np.testing.assert_allclose(m[:3, 1], [0.0, 0.0, 1.0], atol=1e-12)  # its up is Blender's up
    assert cam["shift_x"] == 0.0 and cam["shift_y"] == 0.0


def test_blender_intrinsics_shift_and_fit() -> None:
    K = frames.blender_camera_intrinsics(50.0, 36.0, 24.0, "AUTO", 1920, 1080, 0.1, 0.2)
    f = 50.0 / 36.0 * 1920
    np.testing.assert_allclose(K, [[f, 0, 960 - 0.1 * 1920], [0, f, 540 + 0.2 * 1920], [0, 0, 1]])
    K = frames.blender_camera_intrinsics(50.0, 36.0, 24.0, "VERTICAL", 1000, 1000)
    assert np.isclose(K[0, 0], 50.0 / 24.0 * 1000)


# -- mesh arrays ----------------------------------------------------------------------------
def test_polygon_arrays_quads_and_padded_triangles() -> None:
    faces = np.array([[0, 1, 2, 3], [2, 3, 4, -1], [4, 5, 6, 7]])
    starts, totals, corners = meshdata.polygon_arrays(faces)
    assert starts.tolist() == [0, 4, 7]
    assert totals.tolist() == [4, 3, 4]
    assert corners.tolist() == [0, 1, 2, 3, 2, 3, 4, 4, 5, 6, 7]
    assert starts.dtype == np.int32 and corners.dtype == np.int32
    with pytest.raises(ValueError):
        meshdata.polygon_arrays(np.array([[0, 1, -1, -1]]))


def test_loop_uvs_follow_loop_order() -> None:
    faces = np.array([[0, 1, 2, 3], [2, 3, 4, -1]])
    face_uvs = np.array([[3, 2, 1, 0], [0, 1, 4, -1]])
    uvs = np.arange(10, dtype=np.float32).reshape(5, 2)
    luv = meshdata.loop_uvs(faces, face_uvs, uvs)
    np.testing.assert_array_equal(luv, uvs[[3, 2, 1, 0, 0, 1, 4]])
    assert meshdata.loop_uvs(faces, None, uvs) is None
    assert meshdata.loop_uvs(faces, face_uvs + 10, uvs) is None  # out of range: no UVs rather than garbage


def test_step_names_and_keyframes() -> None:
    assert meshdata.step_key_name(1) == "GLVD 01"
    assert meshdata.step_key_name(10) == "GLVD 10"
    assert meshdata.step_of_key("GLVD 07") == 7
    assert meshdata.step_of_key("Basis") is None and meshdata.step_of_key("GLVD 7") is None
    plan = meshdata.step_keyframes(3, frame_start=1, frames_per_step=5)
    assert plan == {1: [(1, 0.0), (6, 1.0), (11, 0.0)], 2: [(6, 0.0), (11, 1.0), (16, 0.0)], 3: [(11, 0.0), (16, 1.0)]}
    # at every keyed frame at most one step is on: playback walks from template to result
    frames_on: dict[int, float] = {}
    for keys in plan.values():
        for f, v in keys:
            frames_on[f] = frames_on.get(f, 0.0) + v
    assert max(frames_on.values()) == 1.0 and frames_on[1] == 0.0


# -- worker_client + job against fake workers --------------------------------------------------------
FAKE_WORKER = textwrap.dedent(r'''
    import base64, json, sys, threading, time
    import numpy as np
    mode = sys.argv[1]
    def emit(**ev):
        sys.stdout.write(json.dumps(ev) + "\n"); sys.stdout.flush()
    def arr(a):
        a = np.ascontiguousarray(a)
        return {"dtype": str(a.dtype), "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}
    if mode == "crash":
        print("Traceback: boom in the runtime", file=sys.stderr, flush=True); sys.exit(3)
    if mode == "no_torch":
        print("ModuleNotFoundError: No module named 'torch'", file=sys.stderr, flush=True); sys.exit(6)
    if mode == "silent_start":
        time.sleep(60); sys.exit(0)
    print("some library banner on stdout")  # must not break the protocol
    emit(event="ready", id=None, version="0.0-fake", pid=0)
    cancel = threading.Event(); reqs = []
    def reader():
        for line in sys.stdin:
            r = json.loads(line)
            if r["cmd"] == "cancel":
                if mode != "ignore_cancel": cancel.set()
            else: reqs.append(r)
        reqs.append(None)
    threading.Thread(target=reader, daemon=True).start()
    while True:
        while not reqs: time.sleep(0.01)
        r = reqs.pop(0)
        if r is None or r["cmd"] == "shutdown":
            if r: emit(event="bye", id=r["id"])
            break
        if mode == "hang": time.sleep(60); continue
        if r["cmd"] == "info":
            emit(event="info", id=r["id"], torch="fake", cuda=False, device="cpu", checkpoint="/x/fake.pt",
                 checkpoint_date="2025-01-01", trained=False); continue
        steps = r["steps"]; cancel.clear()
        emit(event="progress", id=r["id"], stage="load", step=0, steps=steps, message="loading")
        v = np.zeros((4, 3), np.float32); out = [v.copy()]
        done = True
        for i in range(1, steps + 1):
            time.sleep(0.3 if mode in ("slow", "ignore_cancel") else 0.0)
            if cancel.is_set(): emit(event="cancelled", id=r["id"]); done = False; break
            v = v + 0.01; out.append(v.copy())
            emit(event="step", id=r["id"], step=i, steps=steps, vertices=arr(v))
        if done:
            emit(event="result", id=r["id"], vertices=arr(np.stack(out)), quads=arr(np.array([[0, 1, 2, 3]], np.int32)),
                 uvs=arr(np.zeros((4, 2), np.float32)), quad_uvs=arr(np.array([[0, 1, 2, 3]], np.int32)),
                 expressions=None, expression_names=[], cameras=[], checkpoint="/x/fake.pt", timings={"total_s": 0.1})
''')


@pytest.fixture()
def fake(tmp_path: Path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    started: list = []

    def make(mode: str) -> object:
        w = worker_client.Worker([sys.executable, str(script), mode], worker_client.worker_env(sys.path)).start()
        started.append(w)
        return w

    yield make
    for w in started:
        w.kill()


def test_request_message_carries_the_lens() -> None:
    msg = jobmod.Request(images=["a.png"], lens_35mm=26).message()
    assert msg["lens_35mm"] == 26.0 and msg["cmd"] == "reconstruct"
    assert jobmod.Request(images=["a.png"]).message()["lens_35mm"] is None  # the runtime's assumption


def test_focal_note_tells_the_artist_when_a_focal_length_was_assumed() -> None:
    assert jobmod.focal_note(["exif", "camera", "lens", "given"]) == ""
    assert jobmod.focal_note(["assumed"], 1.2) == (
        "no focal length in the photo: face 1.2 m away assumed (set Lens if you know it)")
    assert jobmod.focal_note(["exif", "assumed"], 1.5).startswith("no focal length in 1 of 2 photos: face 1.5 m")


def _job(worker: object, steps: int = 3, **timeouts: float) -> object:
    return jobmod.Job(worker, jobmod.Request(images=["/a b/ünï.png"], steps=steps), jobmod.Timeouts(**timeouts))


def _pump_until(job: object, cond, limit: float = 20.0) -> list:
    ups: list = []
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < limit:
        ups += job.pump()
        time.sleep(0.02)
    return ups


def test_job_streams_steps_then_result(fake) -> None:
    job = _job(fake("normal"), steps=3)
    ups = job.run()
    assert job.state == "done"
    assert [u.step for u in ups if u.kind == "step"] == [1, 2, 3]
    assert ups[-1].kind == "result" and ups[-1].fraction == 1.0
    assert job.result["vertices"].shape == (4, 4, 3)
    np.testing.assert_allclose(job.result["vertices"][-1], job.steps_seen[3])


def test_job_pump_never_blocks_and_cancel_keeps_worker_usable(fake) -> None:
    worker = fake("slow")
    job = _job(worker, steps=20)
    job.start()
    t0 = time.perf_counter()
    job.pump()
    assert time.perf_counter() - t0 < 0.05  # a timer tick must not wait for the worker
    _pump_until(job, lambda: len(job.steps_seen) >= 1)
    job.cancel()
    _pump_until(job, lambda: job.finished)
    assert job.state == "cancelled" and len(job.steps_seen) < 20
    assert worker.alive  # cancel is between steps: the worker goes on serving
    again = _job(worker, steps=2)
    again.run()
    assert again.state == "done"


def test_worker_that_ignores_cancel_is_killed(fake) -> None:
    worker = fake("ignore_cancel")
    job = _job(worker, steps=30, cancel=0.5)
    job.start()
    _pump_until(job, lambda: len(job.steps_seen) >= 1)
    job.cancel()
    _pump_until(job, lambda: job.finished)
    assert job.state == "cancelled"
    assert not worker.alive


def test_crash_hang_and_missing_torch_give_clear_errors(fake) -> None:
    job = _job(fake("crash"))
    job.run()
    assert job.state == "failed" and job.error.code == "worker_exit"
    assert "exit code 3" in job.error.message and "boom" in job.error.message

    job = _job(fake("no_torch"))
    job.run()
    assert job.state == "failed" and job.error.code == "torch_missing"

    worker = fake("hang")
    job = _job(worker, silence=1.0)
    t0 = time.monotonic()
    job.run(tick=0.1)
    assert job.state == "failed" and job.error.code == "timeout" and "hung" in job.error.message
    assert time.monotonic() - t0 < 10 and not worker.alive

    worker = fake("silent_start")
    job = _job(worker, startup=1.0)
    job.run(tick=0.1)
    assert job.state == "failed" and job.error.code == "timeout" and "did not start" in job.error.message


def test_decode_array_and_env() -> None:
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    import base64

    enc = {"dtype": "float32", "shape": [4, 3], "b64": base64.b64encode(a.tobytes()).decode()}
    np.testing.assert_array_equal(worker_client.decode_array(enc), a)
    with pytest.raises(worker_client.WorkerError):
        worker_client.decode_array({"shape": [1]})
    env = worker_client.worker_env(["/definitely/not/here", str(Path(__file__).parent)], base={})
    assert env["PYTHONPATH"] == str(Path(__file__).parent)  # only folders that exist
    assert env["PYTHONUNBUFFERED"] == "1"
    assert worker_client.worker_command("/py") == ["/py", "-m", "glvd", "worker"]
