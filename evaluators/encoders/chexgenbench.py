"""CheXGenBench's preprocessing chain, step for step: the ``chexgenbench`` preprocessing mode.

Every encoder run has a preprocessing mode (``--preprocess``):

- ``clean``: the encoder's own preprocessing of the canonical float image (``evaluators.imageio``): one PIL
  bicubic resize in float straight to the network's input, no 8-bit round trip (clean-fid's advice).
- ``chexgenbench``: what CheXGenBench's ``metrics/fid.py`` does, so numbers are comparable with its published
  table: ``PIL.Image.open(path).convert("RGB")`` -> torchvision ``Resize((299, 299))`` on the PIL image (PIL
  bilinear) -> ``ToTensor()`` -> ``(x * 255).to(torch.uint8)`` (truncation, not rounding) -> for ``raddino`` the
  ``microsoft/rad-dino`` image processor on that uint8 tensor (shortest edge 518 bicubic, centre crop 518, rescale
  1/255, normalise), for ``inception`` the uint8 299 px tensor itself (torchmetrics' FID/KID/IS input).
- ``auto`` (the default of every command and of the app): ``chexgenbench`` for ``raddino`` and ``inception``, the two
  encoders whose numbers fill CheXGenBench's columns (``FID (RadDino)``, ``FID``, ...), ``clean`` for the others.

The processor step uses transformers' PIL backend (``BitImageProcessorPil``). The reference pins transformers
4.50.3, whose ``AutoImageProcessor`` gives the PIL-based ``BitImageProcessor`` for microsoft/rad-dino; transformers
5 renamed that class ``BitImageProcessorPil`` and made ``BitImageProcessor`` a torchvision backend whose bicubic
resize differs by up to 2 gray levels. Checked here: ``BitImageProcessorPil`` of 5.24 and 4.50.3's processor give
identical pixel values on uint8 299 px inputs.

What the chain does with each kind of file (PIL decides, as in the reference):

- 8-bit PNG / JPEG, gray or colour: decoded by PIL, colour kept as RGB (``clean`` mode uses luminance).
- 16-bit PNG / TIFF (PIL mode ``I;16``): ``convert("RGB")`` clips every value above 255 to 255 (Pillow 11.1, the
  reference's pin, and 12.0 alike), so a full-range 16-bit radiograph becomes almost white. Reproduced as is, and
  counted in the run's notes: convert such files to 8 bits first if you want the reference's numbers to mean
  anything.
- DICOM: PIL cannot open it (the reference's loader would substitute a black image). Here the canonical reading
  (modality LUT, VOI LUT / window, MONOCHROME1 inverted) rounded to 8 bits enters the chain as a gray image, what an
  8-bit PNG export of the file would give. Counted in the notes.
- In-memory images (the app's generated images): uint8 arrays as PIL reads them (gray, RGB, RGBA), uint16 as a
  16-bit PNG (clipped), float arrays rounded to 8 bits as the generator writes its PNGs.
- Unreadable files stop the run naming the file (the reference substitutes a black image silently).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

MODES = ("clean", "chexgenbench")
CHOICES = ("auto", *MODES)
REFERENCE_ENCODERS = ("raddino", "inception")
SIZE = 299
CHAIN = ('PIL open -> .convert("RGB") -> torchvision Resize((299, 299)) (PIL bilinear) -> ToTensor() '
         "-> (x * 255).to(uint8)")


def check_mode(mode: str) -> str:
    key = str(mode or "").strip().lower()
    if key not in CHOICES:
        raise InputError(f"Unknown preprocessing mode {mode!r}; use one of {', '.join(CHOICES)}.")
    return key


def resolve_mode(mode: str, encoder: str) -> str:
    """``clean`` or ``chexgenbench`` for one encoder: ``auto`` is ``chexgenbench`` for raddino and inception."""
    key = check_mode(mode)
    if key == "auto":
        return "chexgenbench" if encoder in REFERENCE_ENCODERS else "clean"
    if key == "chexgenbench" and encoder not in REFERENCE_ENCODERS:
        raise InputError(f"The chexgenbench preprocessing exists for {' and '.join(REFERENCE_ENCODERS)} only "
                         f"(CheXGenBench runs no other encoder); encoder {encoder!r} runs with --preprocess clean.")
    return key


def run_modes(mode: str, encoders: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """({encoder: mode}, notes) for a run over several encoders.

    ``chexgenbench`` asked for a run that also has other encoders applies to raddino/inception and leaves the
    others ``clean``, with a note; asked for a run with neither of them it is an error (it would change nothing).
    """
    key = check_mode(mode)
    if key == "chexgenbench" and not any(e in REFERENCE_ENCODERS for e in encoders):
        resolve_mode(key, encoders[0] if encoders else "?")  # raises the explanation
    out, notes = {}, []
    for name in encoders:
        if key == "chexgenbench" and name not in REFERENCE_ENCODERS:
            out[name] = "clean"
            notes.append(f"{name}: clean preprocessing (the chexgenbench chain exists for "
                         f"{' and '.join(REFERENCE_ENCODERS)} only)")
        else:
            out[name] = resolve_mode(key, name)
    return out, notes


def describe(modes: dict[str, str]) -> str:
    """One string for a run: ``chexgenbench`` when every encoder has the same mode, else ``name: mode, ...``."""
    values = set(modes.values())
    if len(values) == 1:
        return values.pop()
    return ", ".join(f"{k}: {v}" for k, v in modes.items())


# --------------------------------------------------------------------------------------------------
# The chain


def _open_file_rgb(path: str | os.PathLike):
    """``Image.open(path).convert("RGB")`` with the project's file checks (formats, size limit, truncation)."""
    from PIL import Image

    from ..imageio import _check_file, _is_dicom_candidate, _read_pil, max_pixels_limit, read_image, to_uint8

    p, head = _check_file(path)
    if _is_dicom_candidate(p, head):
        return Image.fromarray(to_uint8(read_image(p))).convert("RGB")
    return _read_pil(p, max_pixels_limit(), convert=lambda im, _p: im.convert("RGB"))


def _array_rgb(arr: np.ndarray):
    """An in-memory image as PIL would read its 8-bit (or 16-bit) PNG, then ``convert("RGB")``."""
    from PIL import Image

    from ..imageio import to_uint8

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise InputError(f"Expected a 2-D gray or H x W x 3/4 colour image; got shape {a.shape}.")
    if a.dtype == np.uint16 and a.ndim == 2:
        return Image.fromarray(a).convert("RGB")  # mode I;16, clipped at 255 like a 16-bit PNG
    if a.dtype != np.uint8:
        if a.dtype == np.uint16:
            a = a.astype(np.float32) / 65535.0
        a = to_uint8(np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0))
    return Image.fromarray(np.ascontiguousarray(a)).convert("RGB")


def open_rgb(source):
    """The reference's ``Image.open(path).convert("RGB")`` for a file or an in-memory image (module docstring)."""
    if isinstance(source, np.ndarray):
        return _array_rgb(source)
    return _open_file_rgb(source)


_RESIZE = None


def to_uint8_299(rgb) -> torch.Tensor:
    """torchvision ``Resize((299, 299))`` -> ``ToTensor()`` -> ``(x * 255).to(torch.uint8)``: uint8 [3, 299, 299].

    After ``convert("RGB")`` the resized image is uint8, and in float32 ``(v / 255) * 255 == v`` for all 256 values
    (checked in the tests against torch's own ops), so ToTensor, the multiplication and the truncation return the
    resized bytes unchanged: they are done as that identity here (no float pass, no torch threads per image)."""
    global _RESIZE
    if _RESIZE is None:
        from torchvision import transforms

        _RESIZE = transforms.Resize((SIZE, SIZE))  # on a PIL image: PIL's bilinear resize, as in the reference
    arr = np.asarray(_RESIZE(rgb), dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def reference_uint8(source) -> torch.Tensor:
    """What CheXGenBench's metrics receive for one image: uint8 [3, 299, 299]."""
    return to_uint8_299(open_rgb(source))


class InceptionReference:
    """chexgenbench mode for ``inception``: the uint8 299 px tensor (torchmetrics' FID/KID/IS input)."""

    reads_source = True  # the feature loader hands over the file (or array), not the canonical image

    def __call__(self, source) -> torch.Tensor:
        return reference_uint8(source)

    def describe(self) -> str:
        return f"chexgenbench: {CHAIN}"


class RadDinoReference:
    """chexgenbench mode for ``raddino``: the uint8 299 px tensor through microsoft/rad-dino's image processor."""

    reads_source = True

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, source) -> torch.Tensor:
        u8 = reference_uint8(source)
        return self.processor(images=u8, return_tensors="pt")["pixel_values"][0]

    def describe(self) -> str:
        p = self.processor
        return (f"chexgenbench: {CHAIN} -> {type(p).__name__} (size {dict(p.size)}, crop {dict(p.crop_size)}, "
                f"resample {int(p.resample)}, rescale {p.rescale_factor:.6g}, mean {list(p.image_mean)}, "
                f"std {list(p.image_std)})")


def raddino_processor(folder: str | Path):
    """microsoft/rad-dino's processor as the reference ran it: transformers' PIL-backend BitImageProcessor."""
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    return BitImageProcessorPil.from_pretrained(str(folder), local_files_only=True)


# --------------------------------------------------------------------------------------------------
# What the chain will do to a set's files (for the run's notes)


def source_notes(items: Sequence) -> list[str]:
    """Notes on files whose chexgenbench pixels differ in kind from an 8-bit image (16-bit, DICOM), from headers."""
    from ..imageio import _check_file, _is_dicom_candidate, _open_pil

    wide, dicom, n = 0, 0, 0
    for item in items:
        if isinstance(item, np.ndarray):
            wide += int(item.dtype == np.uint16)
            continue
        n += 1
        try:
            p, head = _check_file(item)
            if _is_dicom_candidate(p, head):
                dicom += 1
                continue
            with _open_pil(p) as im:
                wide += int(im.mode.startswith("I") or im.mode == "F")
        except InputError:
            continue  # reported by the encoding itself
    notes = []
    if wide:
        notes.append(f"{wide} image(s) are 16-bit (or 32-bit): PIL's convert('RGB') clips them at 255, as in "
                     "CheXGenBench, so they reach the encoder nearly white; convert them to 8 bits for numbers "
                     "that mean something")
    if dicom:
        notes.append(f"{dicom} DICOM file(s): PIL cannot open DICOM (CheXGenBench's loader would use a black image); "
                     "their canonical reading rounded to 8 bits entered the chain")
    return notes
