"""Photos in, network-ready face crops out: loading, face detection, cropping.

``load_image`` turns whatever a user has (a file path, a numpy array, a PIL
image) into an ``(H, W, 3)`` uint8 RGB array; ``prepare_view`` finds the face
(:mod:`glvd.detect`) and resamples the square box that training used
(:func:`glvd.crop.crop_box_from_points`, 68-landmark bbox x ``CROP_MARGIN``) to
``size`` pixels, with the matching intrinsics.

Pixel convention (as in ``glvd.cameras``): continuous image coordinates with
pixel centres at integer + 0.5, so an image of width W spans ``[0, W]``.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import detect
from .cameras import DEFAULT_DISTANCE_M, focal_from_exif_35mm, focal_from_face_box, intrinsics
from .crop import ALPHA_BACKGROUND, crop_intrinsics, crop_square
from .errors import ImageError, NoFaceError

#: Images whose longer side exceeds this are downscaled on load: detection and a
#: 192-pixel crop gain nothing from more, and 100-MP photos would cost seconds.
MAX_SIDE = 4096

_EXIF_IFD = 0x8769
_EXIF_FOCAL_35MM = 0xA405
_EXIF_FOCAL = 0x920A
_EXIF_PLANE_XRES = 0xA20E
_EXIF_PLANE_UNIT = 0xA210

ImageSource = str | os.PathLike | np.ndarray | Image.Image


@dataclass
class LoadedImage:
    """An image as :func:`load_image` returns it, plus where it came from.

    ``scale`` is (loaded size) / (original size after EXIF rotation): multiply
    original-pixel coordinates by it to get loaded-pixel coordinates.
    """

    rgb: np.ndarray
    name: str
    scale: float = 1.0
    original_size: tuple[int, int] = (0, 0)
    focal_px: float | None = None  # from EXIF, in loaded pixels


def _name_of(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, Image.Image):
        return getattr(src, "filename", "") or "<PIL image>"
    return "<array>"


def _to_uint8_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    """Any HxW / HxWxC array of a common dtype -> HxWx3 uint8 RGB."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise ImageError(f"{name}: expected an HxW, HxWx3 or HxWx4 image, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"{name}: the image is empty (shape {a.shape})")
    if a.dtype == np.uint8:
        a8 = a
    elif a.dtype == np.bool_:
        a8 = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        # 65535 -> 255 with rounding (x / 257)
        a8 = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        # int32 (PIL "I") and friends: treat as 16-bit if they exceed 8 bits
        hi = 65535.0 if a.max(initial=0) > 255 else 255.0
        a8 = np.clip(np.rint(a.astype(np.float64) * (255.0 / hi)), 0, 255).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        af = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        # floats are taken as [0, 1]; arrays clearly in [0, 255] are accepted too
        if af.max(initial=0.0) > 1.0 + 1e-3:
            af = af / 255.0
        a8 = np.clip(np.rint(af * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"{name}: unsupported pixel type {a.dtype}")
    if a8.ndim == 2:
        return np.ascontiguousarray(np.repeat(a8[..., None], 3, axis=2))
    if a8.shape[2] == 2:  # grey + alpha
        a8 = np.concatenate([np.repeat(a8[..., :1], 3, axis=2), a8[..., 1:]], axis=2)
    if a8.shape[2] == 4:
        alpha = a8[..., 3:4].astype(np.float32) / 255.0
        rgb = a8[..., :3].astype(np.float32) * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
        return np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    return np.ascontiguousarray(a8)


def _pil_to_array(im: Image.Image, name: str) -> np.ndarray:
    """A PIL image of any mode -> HxWx3 uint8 RGB (alpha on grey, 16-bit scaled)."""
    mode = im.mode
    if mode in ("RGB", "L", "RGBA", "LA"):
        return _to_uint8_rgb(np.asarray(im), name)
    if mode in ("P", "PA"):
        # palettes may carry transparency: expand through RGBA
        return _to_uint8_rgb(np.asarray(im.convert("RGBA")), name)
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if mode == "F":
            return _to_uint8_rgb(arr.astype(np.float32), name)
        return _to_uint8_rgb(arr.astype(np.uint16) if mode.startswith("I;16") else arr, name)
    if mode == "1":
        return _to_uint8_rgb(np.asarray(im.convert("L")), name)
    # CMYK, YCbCr, LAB, HSV, RGBX, RGBa ...
    try:
        return _to_uint8_rgb(np.asarray(im.convert("RGBA" if "A" in mode or "a" in mode else "RGB")), name)
    except (ValueError, OSError) as exc:
        raise ImageError(f"{name}: unsupported image mode {mode}") from exc


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, 1.0
    s = max_side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    out = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BOX, reducing_gap=2.0))
    return np.ascontiguousarray(out), nw / w


def _exif_focal_35mm(im: Image.Image) -> float | None:
    try:
        exif = im.getexif()
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # broken EXIF must never stop a reconstruction
        return None
    f35 = sub.get(_EXIF_FOCAL_35MM) or exif.get(_EXIF_FOCAL_35MM)
    try:
        if f35 and float(f35) > 0:
            return float(f35)
    except (TypeError, ValueError):
        pass
    return None


def _read_path(path: str | os.PathLike, max_side: int) -> LoadedImage:
    name = os.fspath(path)
    p = Path(name)
    if not p.exists():
        raise ImageError(f"image not found: {name}")
    if p.is_dir():
        raise ImageError(f"not an image file (a folder): {name}")
    try:
        if p.stat().st_size == 0:
            raise ImageError(f"image file is empty: {name}")
        data = p.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image {name}: {exc}") from exc
    f35: float | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            f35 = _exif_focal_35mm(im)
            w0, h0 = im.size
            # JPEG: decode at 1/2, 1/4 or 1/8 scale straight away when the photo is huge
            if im.format == "JPEG" and max(w0, h0) > 2 * max_side:
                im.draft("RGB", (w0 * max_side // max(w0, h0), h0 * max_side // max(w0, h0)))
            im = ImageOps.exif_transpose(im)  # phones store portrait shots rotated + a tag
            im.load()
            rgb = _pil_to_array(im, name)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        rgb = _read_cv2(data, name, exc)
        w0, h0 = rgb.shape[1], rgb.shape[0]
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError) as exc:
        # truncated/corrupt files; some 16-bit multi-channel TIFFs PIL cannot decode
        rgb = _read_cv2(data, name, exc)
        w0, h0 = rgb.shape[1], rgb.shape[0]
    # original size after the EXIF rotation, for the scale
    oh, ow = rgb.shape[:2]
    ow0, oh0 = (w0, h0) if (ow >= oh) == (w0 >= h0) else (h0, w0)
    rgb, _ = _downscale(rgb, max_side)
    scale = rgb.shape[1] / ow0 if ow0 else 1.0
    focal = focal_from_exif_35mm(f35, rgb.shape[1], rgb.shape[0]) if f35 else None
    return LoadedImage(rgb, name, scale, (int(ow0), int(oh0)), focal)


def _read_cv2(data: bytes, name: str, why: Exception) -> np.ndarray:
    """Second chance for files PIL rejects (e.g. 16-bit RGB TIFF); no EXIF rotation here."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        buf = np.frombuffer(data, np.uint8)
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if arr is not None and arr.size:
            if arr.ndim == 3 and arr.shape[2] == 3:
                arr = arr[..., ::-1]
            elif arr.ndim == 3 and arr.shape[2] == 4:
                arr = arr[..., [2, 1, 0, 3]]
            return _to_uint8_rgb(arr, name)
    raise ImageError(f"not a readable image: {name} ({type(why).__name__}: {why})") from why


def load_image_info(src: ImageSource, max_side: int = MAX_SIDE) -> LoadedImage:
    """Like :func:`load_image`, also returning the downscale factor and EXIF focal length."""
    if isinstance(src, (str, os.PathLike)):
        return _read_path(src, max_side)
    name = _name_of(src)
    if isinstance(src, Image.Image):
        f35 = _exif_focal_35mm(src)
        try:
            im = ImageOps.exif_transpose(src)
        except Exception:  # a bad orientation tag is not worth failing for
            im = src
        rgb = _pil_to_array(im, name)
    elif isinstance(src, np.ndarray) or hasattr(src, "__array__"):
        if isinstance(src, torch.Tensor):
            raise ImageError(f"{name}: pass a numpy array (H, W, 3), not a torch tensor")
        f35 = None
        rgb = _to_uint8_rgb(np.asarray(src), name)
    else:
        raise ImageError(f"not an image: {type(src).__name__} (expected a path, numpy array or PIL image)")
    h, w = rgb.shape[:2]
    rgb, scale = _downscale(rgb, max_side)
    focal = focal_from_exif_35mm(f35, rgb.shape[1], rgb.shape[0]) if f35 else None
    return LoadedImage(rgb, name, scale, (w, h), focal)


def load_image(src: ImageSource, max_side: int = MAX_SIDE) -> np.ndarray:
    """Load a photo as an ``(H, W, 3)`` uint8 RGB array.

    ``src``: a path (JPEG, PNG, WebP, TIFF, anything PIL or OpenCV reads), a numpy
    array (HxW, HxWx3, HxWx4; uint8, uint16, or float in [0, 1]) or a PIL image.
    EXIF orientation is applied; 16-bit is scaled to 8; greyscale is repeated to
    RGB; alpha is composited on grey; images longer than ``max_side`` are
    downscaled (see :func:`load_image_info` for the factor).
    Raises :class:`glvd.errors.ImageError` naming the file when it cannot be read.
    """
    return load_image_info(src, max_side).rgb


def exif_focal_px(path: str | os.PathLike, size: tuple[int, int] | None = None) -> float | None:
    """Focal length in pixels from the EXIF 35 mm-equivalent focal length, or None.

    ``size``: (W, H) of the image the focal is for; default: the size
    :func:`load_image` gives for this file (EXIF-rotated and downscaled).
    """
    try:
        with Image.open(path) as im:
            f35 = _exif_focal_35mm(im)
            if not f35:
                return None
            if size is None:
                w, h = im.size
                s = min(1.0, MAX_SIDE / max(w, h))
                size = (max(1, round(w * s)), max(1, round(h * s)))
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return focal_from_exif_35mm(f35, size[0], size[1])


# --------------------------------------------------------------------------- crop


#: where a view's focal length came from (``PreparedView.focal_source``, ``Result.focal_sources``)
FOCAL_GIVEN, FOCAL_EXIF = "given", "EXIF"
FOCAL_ASSUMED = f"assumed: face {DEFAULT_DISTANCE_M:g} m away"
#: the same, as a code a program can act on (the worker's ``focal_codes``): the labels are for people
FOCAL_CODES = ("given", "exif", "lens", "camera", "assumed")


def focal_code(source: str) -> str:
    """The code of a focal-source label (``FOCAL_*``, ``"lens N mm"``, ``"camera"``): one of ``FOCAL_CODES``."""
    if source == FOCAL_EXIF:
        return "exif"
    if source.startswith("assumed"):
        return "assumed"
    if source.startswith("lens "):
        return "lens"
    if source == "camera":
        return "camera"
    return "given"


@dataclass
class PreparedView:
    """One photo, ready for the network.

    crop: ``(3, size, size)`` float32 RGB in [0, 1]; K_crop / K_image: ``(3, 3)``
    intrinsics in crop / full-image pixels; box: (cx, cy, side) in image pixels;
    landmarks68: ``(68, 2)`` float32 image pixels or None (box-only detector);
    image_size: (W, H).
    """

    crop: torch.Tensor
    K_crop: torch.Tensor
    K_image: torch.Tensor
    box: tuple[float, float, float]
    landmarks68: np.ndarray | None
    image_size: tuple[int, int]
    detector: str
    faces_found: int
    name: str = ""
    landmarks_dense: np.ndarray | None = field(default=None, repr=False)  # MediaPipe's 468, image px
    focal_source: str = ""  # FOCAL_GIVEN, FOCAL_EXIF or FOCAL_ASSUMED

    @property
    def size(self) -> int:
        return int(self.crop.shape[-1])

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Image-pixel points ``(..., 2)`` -> crop pixels."""
        cx, cy, side = self.box
        s = self.size / side
        p = np.asarray(points, dtype=np.float64)
        return np.stack([(p[..., 0] - (cx - side / 2)) * s, (p[..., 1] - (cy - side / 2)) * s], -1)

    def affine_from_crop(self, affine: np.ndarray) -> np.ndarray:
        """A ``(2, 3)`` map from image pixels (e.g. :func:`glvd.face_chip.image_to_chip`) composed after the map
        from crop pixels to image pixels: the same map, taking crop pixels."""
        cx, cy, side = self.box
        a = np.asarray(affine, np.float64)
        lin = a[:, :2] * (side / self.size)  # crop pixel -> image pixel: p * side / size + corner
        return np.concatenate([lin, (a[:, :2] @ np.array([cx - side / 2, cy - side / 2]) + a[:, 2])[:, None]],
                              1).astype(np.float32)

    @property
    def landmarks68_crop(self) -> np.ndarray | None:
        return None if self.landmarks68 is None else self.to_crop(self.landmarks68).astype(np.float32)


def prepare_view(
    img: ImageSource,
    size: int = 192,
    focal_px: float | None = None,
    face_index: int | None = None,
    name: str = "photo.jpg",
    *,
    detector: str = "auto",
) -> PreparedView:
    """Detect the face in ``img`` and crop it the way training crops were made.

    ``focal_px``: the full image's focal length in pixels (e.g. from
    :func:`exif_focal_px`); default: the image's EXIF focal length, else the focal
    that puts the face 1.2 m from the camera (:func:`glvd.cameras.focal_from_face_box`).
    ``face_index``: which face, faces ordered by size, largest first (default 0).
    ``detector``: "auto" (MediaPipe if installed, else OpenCV Haar), "mediapipe" or "haar".
    Raises :class:`glvd.errors.NoFaceError` when there is no face.
    """
    focal_source = FOCAL_GIVEN
    if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
        loaded = load_image_info(img)
        img = loaded.rgb
        if focal_px is None and loaded.focal_px is not None:
            focal_px, focal_source = loaded.focal_px, FOCAL_EXIF
        if name == "photo.jpg" and isinstance(loaded.name, str) and not loaded.name.startswith("<"):
            name = os.path.basename(loaded.name)
    faces = detect.detect_faces(img, backend=detector)
    if not faces:
        raise NoFaceError(f"no face found in {name}")
    idx = 0 if face_index is None else int(face_index)
    if not 0 <= idx < len(faces):
        raise NoFaceError(f"face {idx} requested in {name}, but only {len(faces)} face(s) found")
    face = faces[idx]
    cx, cy, side = face.crop_box
    h, w = img.shape[:2]
    if focal_px is None:
        focal_px, focal_source = focal_from_face_box(side, w, h), FOCAL_ASSUMED
    K_image = intrinsics(focal_px, w, h)
    K_crop = crop_intrinsics(K_image, torch.tensor(cx), torch.tensor(cy), torch.tensor(side), size).float()
    crop8 = crop_square(img, (cx, cy, side), size)
    crop = torch.from_numpy(crop8).permute(2, 0, 1).float().div_(255.0).contiguous()
    return PreparedView(
        crop=crop,
        K_crop=K_crop,
        K_image=K_image,
        box=(float(cx), float(cy), float(side)),
        landmarks68=None if face.landmarks68 is None else face.landmarks68.astype(np.float32),
        image_size=(w, h),
        detector=face.detector,
        faces_found=len(faces),
        name=name,
        landmarks_dense=face.landmarks_dense,
        focal_source=focal_source,
    )
