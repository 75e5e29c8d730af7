"""Builders for small image files (good and bad) used by the image and image-set tests."""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def gray_png(path: Path, value: int | np.ndarray = 128, size: tuple[int, int] = (8, 8)) -> Path:
    """An 8-bit gray PNG (constant ``value`` or the given uint8 array)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = value if isinstance(value, np.ndarray) else np.full(size[::-1], value, np.uint8)
    Image.fromarray(arr.astype(np.uint8)).save(path, format="PNG")
    return path


def random_png(path: Path, seed: int = 0, size: int = 32) -> Path:
    arr = (np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)
    return gray_png(path, arr)


def png_with_claimed_size(path: Path, width: int, height: int) -> Path:
    """A valid tiny PNG whose IHDR is patched to claim ``width x height`` (CRC fixed): a bomb by header."""
    gray_png(path, 0, (4, 4))
    data = bytearray(path.read_bytes())
    # 8-byte signature, then the IHDR chunk: length(4) 'IHDR'(4) data(13) crc(4)
    assert data[12:16] == b"IHDR"
    data[16:20] = struct.pack(">I", width)
    data[20:24] = struct.pack(">I", height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: max(1, int(len(data) * keep))])
    return dst


def dicom_file(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    bits_stored: int = 12,
    frames: int = 1,
) -> Path:
    """A minimal uncompressed DICOM (Explicit VR Little Endian) with uint16 pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = "P1"
    arr = np.asarray(pixels, dtype=np.uint16)
    if frames > 1:
        arr = np.stack([arr] + [np.full_like(arr, 7)] * (frames - 1))
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def zip_with(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    """A zip of ``members`` (name -> bytes), plus a symbolic-link member pointing at /etc/passwd if asked."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path
