"""Reading any chest X-ray file into one canonical form: ``float32 [H, W]`` gray in ``[0, 1]``.

Every metric downstream sees the same pixels whatever the file was (DICOM, 8/16-bit PNG, JPEG, TIFF),
and there is exactly one resize (:func:`resize`), because clean-fid showed that resize implementations
alone move FID by points.

Decisions (documented because they change pixels):

- The format is detected from the file's content, never its extension.
- Colour images become luminance with ITU-R 601-2 weights (0.299 R + 0.587 G + 0.114 B), computed in
  float (no rounding to 8 bits first). Alpha is ignored, as ``PIL.Image.convert("RGB")`` does in the
  reference benchmark's loaders; so an RGBA file with opaque alpha reads exactly like its RGB twin.
- 16-bit images are divided by 65535 (the maximum of their bit depth), so 65535 -> 1.0.
- DICOM: Modality LUT (rescale), then the VOI LUT or the first window (pydicom), scaled by the
  window's output range; with no VOI in the file the image is stretched to its own min..max.
  MONOCHROME1 is inverted so that bone is bright. Multi-frame files give their first frame.
- Sizes are checked from the header *before* decoding: more than :data:`MAX_PIXELS` pixels
  (env ``CHEXGEN_MAX_PIXELS``) is refused. Pillow's own ``MAX_IMAGE_PIXELS`` guard stays on as well,
  so Pillow refuses images above twice its limit (about 179 M pixels) whatever ``CHEXGEN_MAX_PIXELS`` says.
- Truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path

import numpy as np

from . import settings
from .errors import InputError

MAX_PIXELS = 8192 * 8192  # 67,108,864 pixels per image (per frame for DICOM); env CHEXGEN_MAX_PIXELS overrides
MAX_PIXELS_ENV = "CHEXGEN_MAX_PIXELS"

# Pillow decoders allowed. Others (EPS runs Ghostscript, for one) are never tried on user files.
PIL_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "BMP", "GIF", "WEBP", "JPEG2000", "PPM")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_HASH_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------------
# Limits and sniffing


def max_pixels_limit() -> int:
    """The pixel limit in force: ``CHEXGEN_MAX_PIXELS`` if set, else :data:`MAX_PIXELS`."""
    return settings.int_setting(MAX_PIXELS_ENV, MAX_PIXELS)


def sniff_format(head: bytes) -> str | None:
    """'dicom', 'png', 'jpeg', 'tiff' or None, from a file's first 132 bytes."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def _check_file(path: str | os.PathLike) -> tuple[Path, bytes]:
    """The path and its first bytes, or an InputError for missing / folder / empty / unreadable."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"Image file {p} does not exist; check the path (or the images root it is relative to).") from None
    except OSError as exc:
        raise InputError(f"Image file {p} cannot be opened ({exc.strerror or exc}); check its path and permissions.") from None
    if p.is_dir():
        raise InputError(f"{p} is a folder, not an image file; pass a folder as an image set instead.")
    if st.st_size == 0:
        raise InputError(f"Image file {p} is empty (0 bytes); re-export or remove it.")
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise InputError(f"Image file {p} cannot be read ({exc.strerror or exc}); check its permissions.") from None
    return p, head


def _too_big(p: Path, width: int, height: int, limit: int, frames: int = 1) -> InputError:
    extra = f" ({frames} frames; the first is read)" if frames > 1 else ""
    return InputError(
        f"Image file {p} is {width}x{height} = {width * height:,} pixels by its header{extra}, above the limit of "
        f"{limit:,}; downscale it, or raise {MAX_PIXELS_ENV} if it is genuine."
    )


def _is_dicom_candidate(p: Path, head: bytes) -> bool:
    fmt = sniff_format(head)
    return fmt == "dicom" or (fmt is None and p.suffix.lower() in (".dcm", ".dicom", ".dic"))


# --------------------------------------------------------------------------------------------------
# Reading


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """The image as ``float32 [H, W]`` in ``[0, 1]``; bad files raise :class:`InputError` naming the file.

    ``max_pixels`` defaults to :func:`max_pixels_limit` (``CHEXGEN_MAX_PIXELS`` or :data:`MAX_PIXELS`).
    """
    limit = max_pixels_limit() if max_pixels is None else int(max_pixels)
    p, head = _check_file(path)
    if _is_dicom_candidate(p, head):
        img = _read_dicom(p, limit, force=sniff_format(head) != "dicom")
    else:
        img = _read_pil(p, limit)
    if img.ndim != 2 or img.size == 0:
        raise InputError(f"Image file {p} decoded to an empty or non-2-D array {img.shape}; re-export it.")
    if not np.isfinite(img).all():
        img = np.nan_to_num(img, nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32)


def _open_pil(p: Path):
    from PIL import Image, UnidentifiedImageError

    Image.init()  # register every plugin so that `formats` can name them
    formats = [f for f in PIL_FORMATS if f in Image.OPEN]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(p, formats=formats)
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        n = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
        raise InputError(
            f"Image file {p} is {n} by its header, above Pillow's decompression-bomb limit; "
            "downscale it before evaluating."
        ) from None
    except UnidentifiedImageError:
        raise InputError(
            f"{p} is not an image this tool can read (PNG, JPEG, TIFF, BMP, WebP or DICOM, detected by "
            "content); check that the file is an image and not truncated or mislabelled."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"Image file {p} cannot be parsed ({exc}); re-export it.") from None


def _read_pil(p: Path, limit: int, convert=None):
    """Open ``p`` with PIL under the pixel limit, decode it fully (a truncated file is an InputError naming it), and
    return ``convert(im, p)``: the canonical gray array by default (the chexgenbench chain passes its RGB step)."""
    from PIL import Image

    im = _open_pil(p)
    with im:
        w, h = im.size
        if w * h > limit:
            raise _too_big(p, w, h, limit)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
        except Exception as exc:  # truncated / corrupt data: Pillow raises OSError, SyntaxError, ValueError...
            raise InputError(
                f"Image file {p} is truncated or corrupt ({type(exc).__name__}: {exc}); re-export or remove it."
            ) from None
        return (convert or _pil_to_gray)(im, p)


def _pil_to_gray(im, p: Path) -> np.ndarray:
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / 255.0
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.float32) / 65535.0
    if mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if arr.min() >= 0 and arr.max() <= 65535:
            return (arr / 65535.0).astype(np.float32)  # 16-bit data in a 32-bit container
        return _stretch(arr)
    if mode == "F":
        arr = np.asarray(im).astype(np.float64)
        if np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1:
            return arr.astype(np.float32)
        return _stretch(arr)
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel(0), dtype=np.float32) / 255.0
    if mode not in ("RGB", "RGBA", "RGBX", "RGBa"):
        im = im.convert("RGBA" if mode in ("P", "PA") and "transparency" in im.info else "RGB")
    rgb = np.asarray(im)[..., :3].astype(np.float32)
    if rgb.ndim != 3:
        raise InputError(f"Image file {p} has an unsupported pixel layout (mode {mode}); re-export it as PNG.")
    return (rgb @ _LUMA) / 255.0


def _stretch(arr: np.ndarray) -> np.ndarray:
    """Min..max of the image to 0..1 (used only when the data has no defined range)."""
    arr = np.nan_to_num(arr.astype(np.float64))
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def _read_dicom_header(p: Path, *, force: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p, defer_size="1 MB", force=force)
    except InvalidDicomError:
        raise InputError(f"{p} is not a DICOM file (no DICM marker); check the file.") from None
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise InputError(f"DICOM file {p} cannot be parsed ({type(exc).__name__}: {exc}); re-export it.") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"DICOM file {p} has no pixel data (a report or structured document?); remove it from the set.")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise InputError(f"DICOM file {p} lacks Rows/Columns in its header; re-export it.") from None
    return ds, cols, rows


def _read_dicom(p: Path, limit: int, *, force: bool = False) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, pixel_array

    ds, w, h = _read_dicom_header(p, force=force)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if w * h > limit:
        raise _too_big(p, w, h, limit, frames)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = pixel_array(ds, index=0 if frames > 1 else None)
    except Exception as exc:
        raise InputError(
            f"DICOM file {p} pixel data cannot be decoded ({type(exc).__name__}: {exc}); if it is compressed, "
            "install a decoder (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or convert it to PNG."
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if (arr.ndim == 3 and arr.shape[-1] in (3, 4)) or photometric in ("RGB", "PALETTE COLOR") or photometric.startswith("YBR"):
                return _dicom_color_to_gray(arr, ds, photometric)
            if arr.ndim != 2:
                raise InputError(f"DICOM file {p} has pixel data of shape {arr.shape}, not one 2-D frame; re-export it.")
            out = apply_modality_lut(arr, ds)
            if ds.get("VOILUTSequence"):
                img = _scale_to_range(apply_voi(out, ds), _voi_lut_range(ds))
            elif "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowCenter is not None and ds.WindowWidth is not None:
                probe = np.array([-1e30, 1e30], dtype=np.float64)
                lo, hi = (float(v) for v in apply_windowing(probe, ds))
                img = _scale_to_range(apply_windowing(out, ds), (lo, hi))
            else:
                img = _stretch(out)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"DICOM file {p} has LUT / window values that cannot be applied ({type(exc).__name__}: {exc}); "
            "fix its VOI LUT or WindowCenter/WindowWidth, or convert it to PNG."
        ) from None
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    return img.astype(np.float32)


def _voi_lut_range(ds) -> tuple[float, float]:
    """Min and max of the first VOI LUT's output values (what the LUT can produce)."""
    from pydicom.pixels import apply_voi

    desc = list(ds.VOILUTSequence[0].LUTDescriptor)
    n = desc[0] or 2**16
    domain = np.arange(desc[1], desc[1] + n, dtype=np.int64)
    out = apply_voi(domain, ds)
    return float(out.min()), float(out.max())


def _scale_to_range(arr: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    lo, hi = bounds
    if hi <= lo:
        return _stretch(arr)
    return np.clip((np.asarray(arr, np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _dicom_color_to_gray(arr: np.ndarray, ds, photometric: str) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        arr = apply_color_lut(arr, ds)
        bits = 16 if arr.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.get("BitsStored", 8) or 8)
    if arr.ndim == 4:  # several frames slipped through
        arr = arr[0]
    rgb = arr[..., :3].astype(np.float32)
    return (rgb @ _LUMA) / float(2**bits - 1)


# --------------------------------------------------------------------------------------------------
# Header-only information, hashing, conversion and writing


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the header, without decoding the pixels (first frame for DICOM)."""
    p, head = _check_file(path)
    if _is_dicom_candidate(p, head):
        _, w, h = _read_dicom_header(p, force=sniff_format(head) != "dicom")
        return w, h
    with _open_pil(p) as im:
        return im.size


def check_image_header(path: str | os.PathLike, *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(width, height)`` after refusing bombs, from the header alone (cheap pre-check for sets)."""
    limit = max_pixels_limit() if max_pixels is None else int(max_pixels)
    w, h = image_size(path)
    if w * h > limit:
        raise _too_big(Path(path), w, h, limit)
    return w, h


def image_hash(path: str | os.PathLike) -> str:
    """sha256 hex digest of the file's bytes (streamed): the key of the feature cache."""
    p = Path(path)
    digest = hashlib.sha256()
    try:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except IsADirectoryError:
        raise InputError(f"{p} is a folder, not an image file.") from None
    except FileNotFoundError:
        raise InputError(f"Image file {p} does not exist; check the path.") from None
    except OSError as exc:
        raise InputError(f"Image file {p} cannot be read ({exc.strerror or exc}); check its permissions.") from None
    return digest.hexdigest()


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Canonical float image -> uint8 (round half to even, clipped to 0..255)."""
    arr = np.asarray(img, dtype=np.float32)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The one resize: PIL bicubic on the float ('F' mode) image, antialiased as PIL does, clipped to [0, 1].

    ``size`` is an int for a square, or ``(width, height)`` as in PIL. Same as clean-fid's
    ``make_resizer("PIL", quantize_after=False, "bicubic", ...)`` on one channel.
    """
    from PIL import Image

    if isinstance(size, int | np.integer):
        w = h = int(size)
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise InputError(f"Resize size {size!r} must be an int or (width, height).") from None
    if w <= 0 or h <= 0:
        raise InputError(f"Resize size {size!r} must be positive.")
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(f"resize expects a 2-D gray image, got shape {arr.shape}.")
    if arr.shape == (h, w):
        return arr.copy()
    out = Image.fromarray(np.ascontiguousarray(arr)).resize((w, h), resample=Image.Resampling.BICUBIC)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def save_png(img: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an 8-bit gray PNG with deterministic bytes (no timestamp or text chunks); returns the path."""
    from PIL import Image

    p = Path(path)
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = to_uint8(arr)
    if arr.ndim != 2:
        raise InputError(f"save_png expects a 2-D gray image, got shape {arr.shape} for {p}.")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    Image.fromarray(arr).save(tmp, format="PNG", compress_level=6)
    os.replace(tmp, p)
    return p


def image_array(item) -> np.ndarray:
    """An image given as an array or a path, as an array (a path is read and checked by :func:`read_image`)."""
    if isinstance(item, np.ndarray):
        return item
    return read_image(item)
