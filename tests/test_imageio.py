"""evaluators.imageio: every format to float32 [H, W] in [0, 1], and bad files to InputError naming the file."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from evaluators.errors import InputError
from evaluators.imageio import (
    MAX_PIXELS,
    image_hash,
    image_size,
    max_pixels_limit,
    read_image,
    resize,
    save_png,
    sniff_format,
    to_uint8,
)
from tests.helpers_images import dicom_file, gray_png, png_with_claimed_size, random_png, truncated_copy

RNG = np.random.default_rng(0)
U8 = (RNG.random((12, 10)) * 255).astype(np.uint8)


def _canonical(img: np.ndarray) -> None:
    assert img.dtype == np.float32 and img.ndim == 2
    assert img.min() >= 0.0 and img.max() <= 1.0


# ------------------------------------------------------------------------------------------------
# Formats


def test_8bit_gray_png_is_value_over_255(tmp_path):
    img = read_image(gray_png(tmp_path / "a.png", U8))
    _canonical(img)
    assert img.shape == (12, 10)
    np.testing.assert_array_equal(img, U8.astype(np.float32) / 255)
    np.testing.assert_array_equal(to_uint8(img), U8)


def test_16bit_png_keeps_its_depth(tmp_path):
    arr = np.array([[0, 32768], [65535, 1]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    img = read_image(tmp_path / "d.png")
    _canonical(img)
    assert img[1, 0] == 1.0 and img[0, 0] == 0.0
    assert img[0, 1] == pytest.approx(32768 / 65535, abs=1e-6)
    assert img[1, 1] == pytest.approx(1 / 65535, abs=1e-7)  # not squashed to 8 bits


def test_16bit_tiff(tmp_path):
    arr = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.tif")
    np.testing.assert_allclose(read_image(tmp_path / "d.tif"), arr / 65535, atol=1e-6)


def test_rgb_is_luminance_and_gray_rgb_equals_gray(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 0] = (0, 0, 255)
    rgb[1, 1] = (100, 100, 100)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = read_image(tmp_path / "c.png")
    np.testing.assert_allclose(img, [[0.299, 0.587], [0.114, 100 / 255]], atol=1e-6)
    Image.fromarray(np.stack([U8] * 3, -1)).save(tmp_path / "g.png")
    np.testing.assert_allclose(read_image(tmp_path / "g.png"), U8 / 255, atol=1e-6)


def test_alpha_is_ignored(tmp_path):
    """RGBA and LA read like their colour channels alone (as PIL's convert('RGB') in the reference)."""
    alpha = np.zeros_like(U8)  # fully transparent: would be black if composited
    Image.fromarray(np.dstack([U8, U8, U8, alpha])).save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([U8, alpha]), mode="LA").save(tmp_path / "la.png")
    assert Image.open(tmp_path / "rgba.png").mode == "RGBA"
    assert Image.open(tmp_path / "la.png").mode == "LA"
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), U8 / 255, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "la.png"), U8 / 255, atol=1e-6)


def test_palette_and_bilevel(tmp_path):
    Image.fromarray(U8).convert("P").save(tmp_path / "p.png")
    pal = Image.open(tmp_path / "p.png")
    assert pal.mode == "P"
    expected = np.asarray(pal.convert("RGB"), np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), expected, atol=1e-6)
    bits = U8 > 127
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), bits.astype(np.float32))


def test_jpeg_matches_pil_decode(tmp_path):
    Image.fromarray(U8).save(tmp_path / "j.jpg", quality=95)
    ref = np.asarray(Image.open(tmp_path / "j.jpg").convert("L"), np.float32) / 255
    np.testing.assert_allclose(read_image(tmp_path / "j.jpg"), ref, atol=1e-6)


def test_format_comes_from_content_not_extension(tmp_path):
    Image.fromarray(U8).save(tmp_path / "really_png.jpg", format="PNG")
    Image.fromarray(U8).save(tmp_path / "noext", format="PNG")
    for name in ("really_png.jpg", "noext"):
        np.testing.assert_array_equal(read_image(tmp_path / name), U8 / np.float32(255))
    assert sniff_format((tmp_path / "noext").read_bytes()[:132]) == "png"


# ------------------------------------------------------------------------------------------------
# DICOM

PX = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)


def test_dicom_monochrome2_without_window_stretches(tmp_path):
    img = read_image(dicom_file(tmp_path / "m2.dcm", PX))
    _canonical(img)
    np.testing.assert_allclose(img, PX / 4095, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    m2 = read_image(dicom_file(tmp_path / "m2.dcm", PX))
    m1 = read_image(dicom_file(tmp_path / "m1.dcm", PX, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[0, 0] == 1.0  # lowest stored value is white in MONOCHROME1


def test_dicom_window_matches_pydicom(tmp_path):
    import pydicom
    from pydicom.pixels import apply_windowing

    path = dicom_file(tmp_path / "w.dcm", PX, window=(1000, 1000))
    img = read_image(path)
    ds = pydicom.dcmread(path)
    expected = apply_windowing(PX.astype(np.float64), ds) / 4095  # 12 bits stored: output range 0..4095
    np.testing.assert_allclose(img, expected, atol=1e-6)
    assert img[0, 0] == 0.0 and img[1, 0] == 1.0 and img[1, 1] == 1.0
    assert img[0, 1] == pytest.approx(0.5, abs=0.01)  # the window centre is mid-gray


def test_dicom_rescale_then_window(tmp_path):
    # stored 0..4095 with intercept -1000: window centred on 0 (stored 1000) maps that to mid-gray
    img = read_image(dicom_file(tmp_path / "r.dcm", PX, window=(0, 2000), rescale=(1, -1000)))
    assert img[0, 0] == 0.0 and img[1, 1] == 1.0
    assert img[0, 1] == pytest.approx(0.5, abs=0.01)


def test_dicom_multiframe_gives_first_frame_and_needs_no_extension(tmp_path):
    path = dicom_file(tmp_path / "scan", PX, frames=3)
    assert sniff_format(path.read_bytes()[:132]) == "dicom"
    np.testing.assert_allclose(read_image(path), PX / 4095, atol=1e-6)
    assert image_size(path) == (2, 2)


def test_dicom_header_bomb_is_refused_before_decoding(tmp_path):
    import pydicom

    path = dicom_file(tmp_path / "big.dcm", PX)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 20000, 20000  # pixel data stays 8 bytes: decoding would fail differently
    ds.save_as(path)
    with pytest.raises(InputError, match=r"big\.dcm.*20000x20000"):
        read_image(path)


def test_dicom_without_pixels(tmp_path):
    import pydicom

    path = dicom_file(tmp_path / "sr.dcm", PX)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(InputError, match=r"sr\.dcm.*no pixel data"):
        read_image(path)


# ------------------------------------------------------------------------------------------------
# Bad files


def _raises_naming(path, *words):
    with pytest.raises(InputError) as info:
        read_image(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_missing_directory_and_empty(tmp_path):
    _raises_naming(tmp_path / "nope.png", "does not exist")
    _raises_naming(tmp_path, "folder")
    (tmp_path / "zero.png").write_bytes(b"")
    _raises_naming(tmp_path / "zero.png", "empty")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n" * 20)
    _raises_naming(tmp_path / "notes.png", "not an image")


def test_truncated_png_and_jpeg(tmp_path):
    src = random_png(tmp_path / "ok.png", size=64)
    Image.open(src).save(tmp_path / "ok.jpg", quality=90)
    for name in ("ok.png", "ok.jpg"):
        bad = truncated_copy(tmp_path / name, tmp_path / f"cut_{name}", keep=0.6)
        _raises_naming(bad, "truncated")


def test_header_bomb_png_is_refused(tmp_path):
    huge = png_with_claimed_size(tmp_path / "huge.png", 20000, 20000)  # 400 M pixels: Pillow's guard too
    _raises_naming(huge, "400,000,000")
    big = png_with_claimed_size(tmp_path / "big.png", 9000, 9000)  # 81 M: above our 67 M default only
    _raises_naming(big, "9000x9000", "CHEXGEN_MAX_PIXELS")
    assert image_size(big) == (9000, 9000)  # header read, nothing decoded


def test_pixel_limit_is_settable(tmp_path, monkeypatch):
    path = gray_png(tmp_path / "s.png", 10, (8, 8))
    assert max_pixels_limit() == MAX_PIXELS == 8192 * 8192
    monkeypatch.setenv("CHEXGEN_MAX_PIXELS", "63")
    _raises_naming(path, "8x8")
    assert read_image(path, max_pixels=64).shape == (8, 8)
    monkeypatch.setenv("CHEXGEN_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="CHEXGEN_MAX_PIXELS"):
        read_image(path)


def test_truncated_images_stay_errors():
    from PIL import ImageFile

    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    assert Image.MAX_IMAGE_PIXELS is not None


# ------------------------------------------------------------------------------------------------
# Size, hash, resize, save


def test_image_size_and_hash(tmp_path):
    p = gray_png(tmp_path / "a.png", U8)
    assert image_size(p) == (10, 12)
    assert image_hash(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    q = gray_png(tmp_path / "b.png", U8 + 1)
    assert image_hash(q) != image_hash(p)
    with pytest.raises(InputError, match=r"gone\.png"):
        image_hash(tmp_path / "gone.png")


def test_resize_is_antialiased_pil_bicubic():
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)
    small = resize(checker, 8)
    assert small.shape == (8, 8) and small.dtype == np.float32
    np.testing.assert_allclose(small, 0.5, atol=0.02)  # antialiasing averages; point sampling would give 0/1
    const = np.full((30, 50), 0.25, np.float32)
    np.testing.assert_allclose(resize(const, (20, 10)), 0.25, atol=1e-6)
    assert resize(const, (20, 10)).shape == (10, 20)  # (width, height) as in PIL
    img = RNG.random((64, 64)).astype(np.float32)
    out = resize(img, 29)
    assert out.min() >= 0 and out.max() <= 1  # bicubic overshoot clipped
    # agrees with PIL's own 8-bit bicubic to within quantisation
    ref = np.asarray(Image.fromarray(to_uint8(img)).resize((29, 29), Image.Resampling.BICUBIC), np.float32) / 255
    assert np.abs(out - ref).max() < 3 / 255
    np.testing.assert_array_equal(resize(img, 64), img)
    with pytest.raises(InputError):
        resize(img, 0)


def test_save_png_is_deterministic_8bit_gray(tmp_path):
    img = RNG.random((16, 24)).astype(np.float32)
    a = save_png(img, tmp_path / "a.png")
    b = save_png(img, tmp_path / "sub" / "b.png")
    assert a.read_bytes() == b.read_bytes()
    data = a.read_bytes()
    assert b"tIME" not in data and b"tEXt" not in data
    with Image.open(a) as im:
        assert im.mode == "L" and im.size == (24, 16)
    np.testing.assert_array_equal(to_uint8(read_image(a)), to_uint8(img))
    assert np.abs(read_image(a) - img).max() <= 0.5 / 255 + 1e-6


def test_dicom_voi_lut_sequence_is_applied(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset

    path = dicom_file(tmp_path / "lut.dcm", PX)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 12])  # LUTDescriptor
    item.add_new(0x00283006, "US", list(range(4095, -1, -1)))  # LUTData: inverting over the 12-bit range
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    np.testing.assert_allclose(read_image(path), 1.0 - PX / 4095, atol=1e-6)


def test_color_dicom_becomes_luminance(tmp_path):
    import pydicom

    path = dicom_file(tmp_path / "rgb.dcm", PX)
    ds = pydicom.dcmread(path)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (60, 60, 60)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    ds.save_as(path)
    img = read_image(path)
    _canonical(img)
    np.testing.assert_allclose(img, [[0.299, 0.0], [0.0, 60 / 255]], atol=1e-6)
