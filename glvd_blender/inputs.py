"""Turn the user's photos (files, Blender images, packed or generated) into absolute file paths.

The worker reads files only (docs/worker_protocol.md), so packed and generated
images are written to a temporary folder first. Every problem raises
:class:`InputError` with a message naming the photo, before anything is created.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import bpy
import numpy as np

from . import frames

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".exr", ".tga"}
MAX_PHOTOS = 8  # the runtime's limit (glvd.worker.MAX_PHOTOS): photos of one face per reconstruction


class InputError(Exception):
    pass


@dataclass
class Photo:
    path: str  # absolute path the worker reads
    label: str  # what the user knows it by (file path or image name)
    image: bpy.types.Image | None = None
    camera: bpy.types.Object | None = None


@dataclass
class Inputs:
    photos: list[Photo] = field(default_factory=list)
    tmpdir: tempfile.TemporaryDirectory | None = None

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.photos]

    def cleanup(self) -> None:
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None


def abs_file(filepath: str, library: bpy.types.Library | None = None) -> str:
    """A user path (``//relative``, ``~``, spaces, non-ASCII) -> an existing absolute file."""
    raw = filepath.strip()
    if not raw:
        raise InputError("a photo has an empty file path")
    path = bpy.path.abspath(raw, library=library) if raw.startswith("//") else raw
    if path.startswith("//"):
        raise InputError(f"'{raw}' is relative to the .blend file, which is not saved yet")
    path = os.path.normpath(os.path.abspath(os.path.expanduser(path)))
    if not os.path.exists(path):
        raise InputError(f"photo not found: {path}")
    if not os.path.isfile(path):
        raise InputError(f"not a file: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"photo not readable (permissions): {path}")
    return path


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)[:60] or "image"


def image_to_file(img: bpy.types.Image, tmpdir: str) -> str:
    """A file the worker can read for a Blender image: its own file, its packed bytes, or a PNG copy."""
    if img.packed_file is not None:
        ext = os.path.splitext(img.filepath_raw or img.filepath)[1].lower()
        if ext not in IMAGE_EXTS:
            ext = "." + (img.file_format or "PNG").lower().replace("jpeg", "jpg")
        out = os.path.join(tmpdir, _safe_name(img.name) + ext)
        with open(out, "wb") as fh:
            fh.write(img.packed_file.data)
        return out
    if img.source == "FILE" and img.filepath and not img.is_dirty:
        return abs_file(img.filepath, library=img.library)
    if img.source in {"GENERATED", "FILE"} and img.size[0] > 0:
        return _pixels_to_png(img, os.path.join(tmpdir, _safe_name(img.name) + ".png"))
    raise InputError(f"image '{img.name}' has no pixels a photo could come from (source {img.source})")


def _pixels_to_png(img: bpy.types.Image, out: str) -> str:
    # a temporary copy, so the user's image keeps its path, format and dirty state
    w, h = img.size
    px = np.empty(w * h * 4, dtype=np.float32)
    img.pixels.foreach_get(px)
    tmp = bpy.data.images.new("glvd_tmp_export", w, h, alpha=True)
    try:
        tmp.pixels.foreach_set(px)
        tmp.filepath_raw = out
        tmp.file_format = "PNG"
        tmp.save()
    finally:
        bpy.data.images.remove(tmp)
    return out


def check_count(n: int) -> None:
    if n > MAX_PHOTOS:
        raise InputError(f"too many photos: give 1 to {MAX_PHOTOS} photos of one face (got {n})")


def selected_paths(filepath: str | None, directory: str | None, names: Sequence[str]) -> list[str] | None:
    """The photos an operator call names, as Blender's import operators take them; None: it names none.

    ``filepath="/photos/a.jpg"`` for one photo, ``directory="/photos/"`` with ``files=[{"name": "a.jpg"},
    ...]`` for several (as the file browser fills them in: then ``filepath`` is ignored). ``None`` for an
    argument the call did not set; an argument set to nothing (``filepath=""``, ``files`` without names,
    ``directory`` without ``files``) is an empty selection, an error.
    """
    names = [n for n in names if n.strip()]
    if names:
        if not directory:
            raise InputError("files= needs directory= (the folder the names are in)")
        paths = [os.path.join(directory, n) for n in names]
    elif directory is not None:
        raise InputError(f"no photos selected: directory={directory!r} needs files=[{{\"name\": ...}}, ...]")
    elif filepath is not None:
        if not filepath.strip():
            raise InputError("no photos selected: filepath is empty")
        paths = [filepath]
    else:
        return None
    check_count(len(paths))
    return paths


def from_paths(paths: Sequence[str]) -> Inputs:
    if not paths:
        raise InputError("no photos: add reference photos to the list (or pass filepath=... or files=[...])")
    check_count(len(paths))
    return Inputs([Photo(abs_file(p), p) for p in paths])


def from_scene_list(items: Sequence[bpy.types.PropertyGroup]) -> Inputs:
    """The panel's photo list (items with ``image`` and/or ``filepath``)."""
    if not items:
        raise InputError("no photos: add reference photos to the list first")
    check_count(len(items))
    inputs = Inputs()
    try:
        for it in items:
            if it.image is not None:
                img = it.image
                needs_tmp = img.packed_file is not None or img.source != "FILE" or img.is_dirty
                if needs_tmp and inputs.tmpdir is None:
                    inputs.tmpdir = tempfile.TemporaryDirectory(prefix="glvd_")
                path = image_to_file(img, inputs.tmpdir.name if inputs.tmpdir else "")
                inputs.photos.append(Photo(path, img.filepath or img.name, img, it.camera))
            else:
                inputs.photos.append(Photo(abs_file(it.filepath), it.filepath, None, it.camera))
    except InputError:
        inputs.cleanup()
        raise
    return inputs


def scene_camera_for(photo: Photo, scene: bpy.types.Scene) -> bpy.types.Object | None:
    """The photo's own camera, else a scene camera whose background image is this photo."""
    if photo.camera is not None:
        return photo.camera
    for ob in scene.objects:
        if ob.type != "CAMERA":
            continue
        for bg in ob.data.background_images:
            img = bg.image
            if img is None:
                continue
            if (photo.image is not None and img == photo.image) or (
                img.filepath and os.path.normpath(bpy.path.abspath(img.filepath)) == photo.path
            ):
                return ob
    return None


def image_size(photo: Photo) -> tuple[int, int]:
    if photo.image is not None and photo.image.size[0] > 0:
        return int(photo.image.size[0]), int(photo.image.size[1])
    img = bpy.data.images.load(photo.path, check_existing=True)
    return int(img.size[0]), int(img.size[1])


def cameras_for(inputs: Inputs, scene: bpy.types.Scene, obj_matrix: np.ndarray) -> list[dict] | None:
    """OpenCV cameras for every photo when each has a Blender camera, else None (the runtime estimates)."""
    cams = [scene_camera_for(p, scene) for p in inputs.photos]
    if not cams or any(c is None for c in cams):
        return None
    out = []
    for photo, cam in zip(inputs.photos, cams, strict=True):
        w, h = image_size(photo)
        d = cam.data
        K = frames.blender_camera_intrinsics(d.lens, d.sensor_width, d.sensor_height, d.sensor_fit,
                                             w, h, d.shift_x, d.shift_y)
        R, t = frames.opencv_from_blender_camera(np.array(cam.matrix_world), obj_matrix)
        out.append({"K": K.tolist(), "R": R.tolist(), "t": t.tolist()})
    return out
