"""glvd.preprocess: loading every kind of photo, errors naming the file, the crop and its intrinsics.

Test photos come from installed packages (scikit-image's astronaut, matplotlib's
grace_hopper); variants are written into tmp_path at test time.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from glvd.cameras import CROP_SIDE_M, default_intrinsics, focal_from_exif_35mm, focal_from_face_box
from glvd.crop import ALPHA_BACKGROUND, crop_intrinsics, crop_square
from glvd.errors import ImageError, NoFaceError
from glvd.preprocess import (
    FOCAL_ASSUMED,
    FOCAL_EXIF,
    FOCAL_GIVEN,
    MAX_SIDE,
    PreparedView,
    exif_focal_px,
    load_image,
    load_image_info,
    prepare_view,
)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real face photo (512x512 RGB uint8)."""
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the astronaut test photo")
    return np.ascontiguousarray(data.astronaut())


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) <= tol


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("ext", "kw", "tol"),
    [
        ("jpg", {"quality": 95}, 3.0),
        ("png", {}, 0.0),
        ("webp", {"lossless": True}, 0.0),
        ("webp", {"quality": 90}, 4.0),
        ("tif", {}, 0.0),
        ("bmp", {}, 0.0),
    ],
)
def test_load_formats(face: np.ndarray, tmp_path, ext: str, kw: dict, tol: float) -> None:
    p = tmp_path / f"face.{ext}"
    Image.fromarray(face).save(p, **kw)
    img = load_image(p)
    assert img.dtype == np.uint8 and img.shape == face.shape and img.flags.c_contiguous
    assert _close(img, face, tol)
    assert _close(load_image(str(p)), img, 0.0)  # str and PathLike alike


def test_load_16bit_png_and_tiff(face: np.ndarray, tmp_path) -> None:
    cv2 = pytest.importorskip("cv2")
    f16 = face.astype(np.uint16) * 257
    for ext in ("png", "tif"):
        p = tmp_path / f"face16.{ext}"
        assert cv2.imwrite(str(p), f16[..., ::-1])  # 48-bit RGB
        img = load_image(p)
        assert img.dtype == np.uint8 and _close(img, face, 0.0), ext


def test_load_16bit_grey(face: np.ndarray, tmp_path) -> None:
    grey = face[..., 1].astype(np.uint16) * 257
    for ext in ("png", "tif"):
        p = tmp_path / f"grey16.{ext}"
        Image.fromarray(grey).save(p)
        img = load_image(p)
        assert img.shape == (*grey.shape, 3)
        assert np.array_equal(img[..., 0], face[..., 1]) and np.array_equal(img[..., 0], img[..., 2])


def test_load_greyscale_8bit(face: np.ndarray, tmp_path) -> None:
    p = tmp_path / "grey.jpg"
    Image.fromarray(face).convert("L").save(p, quality=95)
    img = load_image(p)
    assert img.shape == face.shape and np.array_equal(img[..., 0], img[..., 1])


def test_load_rgba_composited_on_grey(face: np.ndarray, tmp_path) -> None:
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    rgba[:100, :100, 3] = 0  # transparent corner
    rgba[100:200, :100, 3] = 128  # half transparent
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(p)
    img = load_image(p)
    assert img.shape == face.shape
    assert (img[:100, :100] == ALPHA_BACKGROUND).all()
    half = face[100:200, :100].astype(np.float32) * (128 / 255) + ALPHA_BACKGROUND * (127 / 255)
    assert np.abs(img[100:200, :100] - half).max() <= 1.0
    assert np.array_equal(img[300:, 300:], face[300:, 300:])
    # the same through a numpy array and a PIL image
    assert np.array_equal(load_image(rgba), img)
    assert np.array_equal(load_image(Image.fromarray(rgba)), img)


def test_load_palette(face: np.ndarray, tmp_path) -> None:
    p = tmp_path / "palette.png"
    Image.fromarray(face).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(p)
    img = load_image(p)
    assert img.shape == face.shape and _close(img, face, 12.0)
    g = tmp_path / "palette.gif"
    Image.fromarray(face).convert("P").save(g)
    assert load_image(g).shape == face.shape


@pytest.mark.parametrize(("orientation", "undo"), [(3, 2), (6, 1), (8, 3), (2, None)])
def test_exif_orientation_applied(face: np.ndarray, tmp_path, orientation: int, undo: int | None) -> None:
    """A phone stores a rotated sensor image + the Orientation tag; the loader must undo it."""
    h, w = 300, 200  # not square, so a wrong rotation shows in the shape
    upright = np.ascontiguousarray(face[50 : 50 + h, 150 : 150 + w])
    # what the camera stores: the inverse of the tag's transform
    stored = np.ascontiguousarray(upright[:, ::-1]) if undo is None else np.ascontiguousarray(np.rot90(upright, undo))
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"rot{orientation}.jpg"
    Image.fromarray(stored).save(p, exif=exif, quality=95)
    img = load_image(p)
    assert img.shape == upright.shape
    assert _close(img, upright, 4.0)


def test_exif_focal(face: np.ndarray, tmp_path) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 26  # FocalLengthIn35mmFilm
    p = tmp_path / "focal.jpg"
    Image.fromarray(face[:, :400]).save(p, exif=exif)
    expected = focal_from_exif_35mm(26.0, 400, 512)
    assert exif_focal_px(p) == pytest.approx(expected)
    assert load_image_info(p).focal_px == pytest.approx(expected)
    plain = tmp_path / "plain.jpg"
    Image.fromarray(face).save(plain)
    assert exif_focal_px(plain) is None and load_image_info(plain).focal_px is None
    assert exif_focal_px(tmp_path / "missing.jpg") is None


def test_huge_image_downscaled_early(tmp_path) -> None:
    big = np.zeros((5000, 9000, 3), np.uint8)
    big[:, :4500] = 200
    p = tmp_path / "huge.jpg"
    Image.fromarray(big).save(p, quality=80)
    info = load_image_info(p)
    assert max(info.rgb.shape[:2]) == MAX_SIDE
    assert info.original_size == (9000, 5000)
    assert info.scale == pytest.approx(MAX_SIDE / 9000, rel=1e-3)
    assert info.rgb.shape[1] / info.rgb.shape[0] == pytest.approx(9000 / 5000, rel=1e-3)
    # arrays too
    arr = load_image_info(np.zeros((100, 5000), np.uint8))
    assert arr.rgb.shape == (82, 4096, 3) and arr.scale == pytest.approx(4096 / 5000)


# --------------------------------------------------------------------------- arrays


def test_array_inputs(face: np.ndarray) -> None:
    assert np.array_equal(load_image(face), face)
    grey = face[..., 0]
    assert np.array_equal(load_image(grey)[..., 2], grey)
    assert np.array_equal(load_image(grey[..., None])[..., 1], grey)
    assert np.array_equal(load_image(face.astype(np.uint16) * 257), face)
    assert np.abs(load_image(face.astype(np.float32) / 255.0).astype(int) - face).max() <= 1
    assert np.abs(load_image(face.astype(np.float64)).astype(int) - face).max() <= 1  # floats in [0, 255]
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    assert np.array_equal(load_image(rgba), face)
    assert np.array_equal(load_image(Image.fromarray(face)), face)
    assert np.array_equal(load_image(np.asfortranarray(face)), face)


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10, 5), np.uint8), np.zeros(10, np.uint8), "not-a-thing"]
)
def test_bad_arrays(bad) -> None:
    if isinstance(bad, str):
        bad = object()
    with pytest.raises(ImageError):
        load_image(bad)


# --------------------------------------------------------------------------- errors


def test_errors_name_the_file(face: np.ndarray, tmp_path) -> None:
    missing = tmp_path / "nobody.jpg"
    with pytest.raises(ImageError, match=r"nobody\.jpg"):
        load_image(missing)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match=r"notes\.jpg"):
        load_image(text)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(ImageError, match=r"folder\.png"):
        load_image(folder)
    buf = io.BytesIO()
    Image.fromarray(face).save(buf, format="JPEG")
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes(buf.getvalue()[:200])  # header only
    with pytest.raises(ImageError, match=r"truncated\.jpg"):
        load_image(cut)


def test_error_codes() -> None:
    assert ImageError.code == "unreadable_image" and NoFaceError.code == "no_face"


# --------------------------------------------------------------------------- crop


def test_crop_square_geometry() -> None:
    """Crop pixel (i, j) samples image point x0 + (i + 0.5) * side / size (pixel centres at +0.5)."""
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # a linear ramp image: value = pixel-centre coordinate, so bilinear sampling is exact
    img = np.dstack([(xx + 0.5) / 2, (yy + 0.5) / 2, np.zeros_like(xx)]).round().astype(np.uint8)
    ramp = np.dstack([(xx + 0.5) / 2, (yy + 0.5) / 2, np.zeros_like(xx)]).astype(np.float32)
    cx, cy, side, size = 210.0, 140.0, 128.0, 64
    out = crop_square(ramp, (cx, cy, side), size)
    jj, ii = np.mgrid[0:size, 0:size]
    ex = (cx - side / 2 + (ii + 0.5) * side / size) / 2
    ey = (cy - side / 2 + (jj + 0.5) * side / size) / 2
    assert np.abs(out[..., 0] - ex).max() < 1e-3 and np.abs(out[..., 1] - ey).max() < 1e-3
    # strong reduction (area-averaged first) keeps the geometry
    out8 = crop_square(img, (200.0, 150.0, 280.0), 32).astype(np.float32)
    jj, ii = np.mgrid[0:32, 0:32]
    ex = (200.0 - 140 + (ii + 0.5) * 280 / 32) / 2
    assert np.abs(out8[..., 0] - ex).max() <= 1.5
    # outside the photo: edge pixels replicated
    edge = crop_square(img, (5.0, 150.0, 100.0), 50)
    assert (edge[:, :10, 0] == img[0, 0, 0]).all()


def test_crop_matches_intrinsics(face: np.ndarray) -> None:
    """A 3D point projected with K_image lands on the crop pixel that K_crop gives."""
    size = 128
    img = face.copy()
    h, w = img.shape[:2]
    K = default_intrinsics(w, h)
    X = torch.tensor([0.021, -0.013, 0.55])
    u, v = (K @ X / X[2])[:2].tolist()
    img[int(v) - 3 : int(v) + 4, int(u) - 3 : int(u) + 4] = (0, 255, 0)  # a green square on the point
    cx, cy, side = u + 37.3, v - 21.9, 150.0
    Kc = crop_intrinsics(K, torch.tensor(cx), torch.tensor(cy), torch.tensor(side), size)
    uc, vc = (Kc @ X / X[2])[:2].tolist()
    crop = crop_square(img, (cx, cy, side), size)
    px = crop[int(vc), int(uc)]
    assert px[1] > 200 and px[0] < 60 and px[2] < 60


def test_prepare_view_contract(face: np.ndarray) -> None:
    v = prepare_view(face, size=160, focal_px=900.0, name="astronaut.png")
    assert isinstance(v, PreparedView)
    assert v.crop.shape == (3, 160, 160) and v.crop.dtype == torch.float32
    assert 0.0 <= float(v.crop.min()) and float(v.crop.max()) <= 1.0
    assert v.K_crop.shape == (3, 3) and v.K_crop.dtype == torch.float32
    assert v.K_image.dtype == torch.float32 and float(v.K_image[0, 0]) == 900.0
    assert float(v.K_image[0, 2]) == 256.0 and v.image_size == (512, 512)
    assert v.faces_found >= 1 and v.detector
    cx, cy, side = v.box
    assert torch.allclose(
        v.K_crop, crop_intrinsics(v.K_image, torch.tensor(cx), torch.tensor(cy), torch.tensor(side), 160)
    )
    # the crop's pixels are the photo's pixels in the box
    expect = crop_square(face, v.box, 160)
    assert np.array_equal((v.crop.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), expect)
    assert v.focal_source == FOCAL_GIVEN
    # no focal given: the one that puts the face DEFAULT_DISTANCE_M away, centred principal point
    d = prepare_view(face)
    assert d.focal_source == FOCAL_ASSUMED
    assert float(d.K_image[0, 0]) == pytest.approx(focal_from_face_box(d.box[2], 512, 512))
    assert float(d.K_image[1, 1]) == float(d.K_image[0, 0]) and d.K_image[:2, 2].tolist() == [256.0, 256.0]


def test_focal_from_face_box() -> None:
    # a 260-pixel crop box is CROP_SIDE_M wide at the head: the focal puts it distance_m away
    assert focal_from_face_box(260.0, 1000, 800, distance_m=1.0) == pytest.approx(260.0 / CROP_SIDE_M)
    assert focal_from_face_box(260.0, 1000, 800, distance_m=2.0) == pytest.approx(520.0 / CROP_SIDE_M)
    # a tiny face in a big photo: no wider than a 24 mm-equivalent lens
    assert focal_from_face_box(20.0, 4000, 3000) == pytest.approx(focal_from_exif_35mm(24.0, 4000, 3000))


def test_crop_side_matches_training_crops() -> None:
    """CROP_SIDE_M is what the synthetic crops frame: crop pixels * depth / focal, frontal views."""
    from glvd_train.synth import SynthConfig, SyntheticFaces
    from glvd.topology import default_kit_path

    kit = default_kit_path()
    if not kit.is_file():
        pytest.skip("needs the ICT kit (../shared): the tiny kit's head is not face-sized")
    gen = SyntheticFaces(kit_path=str(kit), config=SynthConfig(image_size=64, augment=False, yaw_max=15.0,
                                                           pitch_max=10.0, roll_max=5.0), seed=3)
    d = gen.sample(16, 1)
    side_m = 64 * d["t"][:, 0, 2] / d["K"][:, 0, 0, 0]
    assert float(side_m.median()) == pytest.approx(CROP_SIDE_M, rel=0.08)


def test_prepare_view_from_file_uses_exif_focal(face: np.ndarray, tmp_path) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50
    p = tmp_path / "focal.jpg"
    Image.fromarray(face).save(p, exif=exif, quality=95)
    v = prepare_view(str(p))
    assert float(v.K_image[0, 0]) == pytest.approx(50 / 36 * 512)
    assert v.focal_source == FOCAL_EXIF


@pytest.mark.parametrize("kind", ["noise", "gradient", "flat"])
def test_no_face(kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "noise":
        img = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    elif kind == "gradient":
        img = np.broadcast_to(np.linspace(0, 255, 480, dtype=np.float32)[None, :, None], (360, 480, 3))
        img = np.ascontiguousarray(img).astype(np.uint8)
    else:
        img = np.full((360, 480, 3), 90, np.uint8)
    with pytest.raises(NoFaceError, match=r"empty_wall\.jpg"):
        prepare_view(img, name="empty_wall.jpg")
    with pytest.raises(NoFaceError, match=r"empty_wall\.jpg"):
        prepare_view(img, name="empty_wall.jpg", detector="haar")
