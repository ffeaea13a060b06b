"""glvd batch: many faces in one process, failures reported and skipped, resumable."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from runtime_fixtures import SMALL, tiny_kit
from test_runtime_io import ENV, _cli

from glvd.batch import REPORT_NAME, BatchItem, collect_items, run_batch
from glvd.checkpoint import write_untrained_checkpoint
from glvd.errors import NoFaceError
from glvd.export import read_obj_vertices

skimage_data = pytest.importorskip("skimage.data")


def _report(out_dir) -> list[dict]:
    with open(out_dir / REPORT_NAME, newline="") as f:
        return list(csv.DictReader(f))


def test_inputs_become_named_faces(tmp_path):
    (tmp_path / "anna").mkdir()
    for n in ("b.jpg", "a.PNG", "notes.txt"):
        (tmp_path / "anna" / n).write_bytes(b"x")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "anna.jpg").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    items = collect_items([tmp_path / "anna", tmp_path / "x" / "anna.jpg", tmp_path / "empty", "gone.webp"])
    assert [i.name for i in items] == ["anna", "anna_2", "empty", "gone"]
    assert [p.name for p in items[0].photos] == ["a.PNG", "b.jpg"]  # sorted, images only
    assert items[2].photos == [] and items[3].photos[0].name == "gone.webp"


def test_a_batch_goes_on_past_failures_and_resumes(tmp_path):
    items = [BatchItem("ok", [tmp_path / "ok.jpg"]), BatchItem("noface", [tmp_path / "n.jpg"]),
             BatchItem("many", [tmp_path / f"{i}.jpg" for i in range(9)]), BatchItem("none", []),
             BatchItem("bug", [tmp_path / "bug.jpg"])]
    written = []

    def reconstruct(photos):
        if "n.jpg" in photos[0]:
            raise NoFaceError(f"no face found in {photos[0]}")
        if "bug" in photos[0]:
            raise ValueError("boom")
        return photos

    def write(res, photos, out):
        out.write_text("mesh")
        written.append(out.name)

    outcomes = run_batch(reconstruct, write, items, tmp_path / "out", ".glb", log=lambda m: None)
    assert [o.status for o in outcomes] == ["done", "failed", "failed", "failed", "failed"]
    assert [o.code for o in outcomes] == ["", "no_face", "bad_request", "bad_request", "internal"]
    assert written == ["ok.glb"]
    rows = _report(tmp_path / "out")
    assert [r["status"] for r in rows] == ["done", "failed", "failed", "failed", "failed"]
    assert "boom" in rows[4]["message"] and rows[0]["output"].endswith("ok.glb")
    again = run_batch(reconstruct, write, items[:1], tmp_path / "out", ".glb", skip_existing=True, log=lambda m: None)
    assert again[0].status == "skipped" and written == ["ok.glb"]


def test_an_interrupted_batch_still_reports_what_it_finished(tmp_path):
    items = [BatchItem("a", [tmp_path / "a.jpg"]), BatchItem("b", [tmp_path / "b.jpg"])]

    def reconstruct(photos):
        if "b.jpg" in photos[0]:
            raise KeyboardInterrupt
        return photos

    with pytest.raises(KeyboardInterrupt):
        run_batch(reconstruct, lambda r, p, o: o.write_text("m"), items, tmp_path, ".obj", log=lambda m: None)
    assert [r["name"] for r in _report(tmp_path)] == ["a"]


def test_cli_batch_end_to_end(tmp_path):
    """One process, a photo and a folder of two photos reconstructed, a blank photo reported (exit 7), every
    output complete (no temporary files), the same mesh as glvd reconstruct gives."""
    ckpt = write_untrained_checkpoint(tmp_path / "u.pt", kit_path=tiny_kit(tmp_path), config=SMALL)
    face = skimage_data.astronaut()
    Image.fromarray(face).save(tmp_path / "astronaut.jpg", quality=92)
    (tmp_path / "pair").mkdir()
    Image.fromarray(face).save(tmp_path / "pair" / "1.png")
    Image.fromarray(np.fliplr(face).copy()).save(tmp_path / "pair" / "2.png")
    Image.fromarray(np.full((240, 320, 3), 127, np.uint8)).save(tmp_path / "blank.png")
    out = tmp_path / "out"
    r = _cli("batch", str(tmp_path / "astronaut.jpg"), str(tmp_path / "pair"), str(tmp_path / "blank.png"),
             "-o", str(out), "--format", "obj", "--steps", "2", "--checkpoint", str(ckpt), "--device", "cpu", "--json",
             "--mode", "face")
    assert r.returncode == 7, r.stderr
    assert "[3/3] blank: failed" in r.stderr and r.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.json", "astronaut.obj", "batch_report.csv",
                                                     "pair.json", "pair.obj"]
    assert [(row["name"], row["status"], row["code"]) for row in _report(out)] == [
        ("astronaut", "done", ""), ("pair", "done", ""), ("blank", "failed", "no_face")]
    single = tmp_path / "single.obj"
    assert _cli("reconstruct", str(tmp_path / "astronaut.jpg"), "-o", str(single), "--steps", "2",
                "--checkpoint", str(ckpt), "--device", "cpu", "-q", "--mode", "face").returncode == 0
    np.testing.assert_array_equal(read_obj_vertices(out / "astronaut.obj"), read_obj_vertices(single))
    r = subprocess.run([sys.executable, "-m", "glvd", "batch", str(tmp_path / "astronaut.jpg"), "-o", str(out),
                        "--format", "obj", "--checkpoint", str(ckpt), "--skip-existing", "--mode", "face"],
                       capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 0 and "skipped" in r.stderr
