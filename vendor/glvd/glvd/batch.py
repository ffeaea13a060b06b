"""Many faces in one process (``glvd batch``): each photo is one face, each folder the photos of one person.

Starting the runtime (torch, the model, the face detector) takes seconds; a shell loop over
``glvd reconstruct`` pays that for every face, a batch pays it once. An input that fails (unreadable,
no face found, too many photos) is reported and skipped, the others go on; ``batch_report.csv`` in the
output folder lists every input with its outcome, also after an interruption.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import GLVDError

#: what a folder's photos may be (the loader reads these; others in a folder are ignored)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
MAX_PHOTOS = 8
REPORT_NAME = "batch_report.csv"


@dataclass
class BatchItem:
    """One face to reconstruct: its output name and its photos."""

    name: str
    photos: list[Path]


@dataclass
class BatchOutcome:
    name: str
    photos: int
    status: str  # "done", "skipped" (output exists) or "failed"
    code: str  # glvd.errors code of a failure ("" otherwise)
    message: str
    seconds: float
    output: str


def collect_items(inputs: Sequence[str | Path]) -> list[BatchItem]:
    """Inputs -> faces: a file is one face named after it, a folder one face from its photos (sorted) named
    after the folder. Repeated names get ``_2``, ``_3``... so no output overwrites another."""
    items, seen = [], {}
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            photos = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            name = p.resolve().name
        else:
            photos, name = [p], p.stem
        seen[name] = seen.get(name, 0) + 1
        items.append(BatchItem(name if seen[name] == 1 else f"{name}_{seen[name]}", photos))
    return items


def run_batch(reconstruct: Callable[[list[str]], object], write: Callable[[object, list[Path], Path], None],
              items: Sequence[BatchItem], out_dir: Path, suffix: str, skip_existing: bool = False,
              log: Callable[[str], None] = print) -> list[BatchOutcome]:
    """Reconstruct and write every item; the outcomes (also written to ``out_dir/batch_report.csv``).

    Args:
        reconstruct: photo paths -> a result (``glvd.Reconstructor.reconstruct`` with the batch's options).
        write: ``(result, photos, output path)`` -> writes the output (and whatever goes beside it).
        suffix: the mesh format, e.g. ``".glb"``.
        skip_existing: leave items whose output already exists (resuming an interrupted batch).
    A KeyboardInterrupt stops the batch after writing the report of the items finished so far.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[BatchOutcome] = []
    try:
        for k, item in enumerate(items, 1):
            out = out_dir / f"{item.name}{suffix}"
            t0 = time.perf_counter()
            status, code, message = "done", "", ""
            if skip_existing and out.exists():
                status, message = "skipped", "output exists"
            elif not item.photos:
                status, code, message = "failed", "bad_request", "no photos in this folder"
            elif len(item.photos) > MAX_PHOTOS:
                status, code, message = "failed", "bad_request", \
                    f"{len(item.photos)} photos: give at most {MAX_PHOTOS} per face"
            else:
                try:
                    write(reconstruct([str(p) for p in item.photos]), item.photos, out)
                except GLVDError as exc:
                    status, code, message = "failed", exc.code, str(exc)
                except Exception as exc:  # a bug or a full disk on one face should not lose the others
                    status, code, message = "failed", "internal", f"{type(exc).__name__}: {exc}"
            secs = time.perf_counter() - t0
            outcomes.append(BatchOutcome(item.name, len(item.photos), status, code, message, secs,
                                         str(out) if status != "failed" else ""))
            log(f"[{k}/{len(items)}] {item.name}: {status}" + (f" ({message})" if message else "")
                + (f" in {secs:.2f} s" if status == "done" else ""))
    finally:
        write_report(out_dir / REPORT_NAME, outcomes)
    return outcomes


def write_report(path: Path, outcomes: Sequence[BatchOutcome]) -> None:
    """One CSV row per item: name, photos, status, code, message, seconds, output."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "photos", "status", "code", "message", "seconds", "output"])
        for o in outcomes:
            w.writerow([o.name, o.photos, o.status, o.code, o.message, f"{o.seconds:.3f}", o.output])
