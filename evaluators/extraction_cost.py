"""What a fidelity run's first radiomic feature extraction (FRD) will cost, stated before the run starts.

FRD's ``radiomics`` encoder runs PyRadiomics on one CPU core per image, at the image's own size, and caches the
features (content hash): a new reference set of thousands of full-size radiographs costs hours once, then nothing.
:func:`first_run_cost` says so before a run that would pay it, from the cache without reading any image: a file
counts as cached when its content hash is remembered (:func:`evaluators.filehashes.remembered_hashes`, a stat per
file) and that hash has radiomic features in the feature cache; the image size comes from a few files' headers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from .errors import InputError, UnavailableError

log = logging.getLogger(__name__)

# CPU seconds per image of the radiomics encoder on one core, by image side (square NIH images upsampled from the
# 64 px sample, this project's 2-core machine: `python benchmarks/frd_first_run.py`); interpolated in pixel count
COST_SIDES = (64, 128, 256, 512, 1024)
COST_SECONDS = (0.141, 0.189, 0.291, 0.632, 2.317)
MIN_SECONDS = 60.0  # below this the run does not stop to say it
SIZE_SAMPLE = 20  # headers read to know the images' size


def seconds_per_image(pixels: float) -> float:
    """CPU seconds of one radiomic extraction for an image of ``pixels`` pixels (linear beyond the last point)."""
    px = np.asarray(COST_SIDES, dtype=float) ** 2
    if pixels <= px[-1]:
        return float(np.interp(pixels, px, COST_SECONDS))
    slope = (COST_SECONDS[-1] - COST_SECONDS[-2]) / (px[-1] - px[-2])
    return float(COST_SECONDS[-1] + slope * (pixels - px[-1]))


def _header_pixels(path: str) -> int | None:
    """Width x height from the file's header (PIL opens lazily; DICOM through pydicom without pixel data)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[0]) * int(im.size[1])
    except Exception:  # not a PIL image: DICOM, or unreadable (the run reports those)
        pass
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows) * int(ds.Columns)
    except Exception:  # unreadable: the run reports it
        return None


def uncached(paths: Sequence[str], encoder_key: str) -> list[str]:
    """The paths without features under ``encoder_key`` in the feature cache (a file whose hash is not remembered
    counts as uncached: extraction remembers the hash of every file it reads)."""
    from .features import FeatureStore
    from .filehashes import remembered_hashes
    from .settings import subdir

    if not (subdir("features") / encoder_key).is_dir():
        return list(paths)
    rows = FeatureStore(encoder_key).rows
    return [p for p, h in zip(paths, remembered_hashes(paths), strict=True) if h is None or h not in rows]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def first_run_cost(real, synthetic, encoders: Sequence[str] | None = None, *,
                   min_seconds: float | None = None) -> str | None:
    """The statement of the radiomic extraction a fidelity run is about to pay, or None (no FRD in this run, or
    under ``min_seconds`` of work, default :data:`MIN_SECONDS`). ``real``: a :class:`evaluators.runs.RunContext`, an ImageSet or a reference
    index; ``synthetic``: the synthetic ImageSet; ``encoders``: the run's encoders (None: the defaults, which add
    ``radiomics`` off the demo world when PyRadiomics is installed). Never raises for the estimate's sake."""
    from .encoders import load_encoder
    from .fidelity import RealSide, _default_frd

    try:
        if hasattr(real, "reference_set"):  # a RunContext: its set, or its index folder when given one
            real = real.reference_set() or real.index()
        side = RealSide(real)
        if not ("radiomics" in encoders if encoders is not None else _default_frd(side)):
            return None
        key = load_encoder("radiomics").cache_key()
        real_paths = [str(p) for p in (side.index.meta["path"] if side.index is not None else side.image_set.paths)]
        todo_real = uncached(real_paths, key)
        todo_syn = uncached([str(p) for p in synthetic.paths], key)
    except (InputError, UnavailableError, OSError, KeyError):
        return None  # the run itself reports these (a bad reference, no PyRadiomics)
    except Exception as exc:  # an estimate must never stop the run it describes
        log.warning("first-run cost estimate skipped: %s", exc)
        return None
    todo = todo_real + todo_syn
    if not todo:
        return None
    sample = [todo[i] for i in np.linspace(0, len(todo) - 1, min(SIZE_SAMPLE, len(todo))).astype(int)]
    pixels = [px for px in map(_header_pixels, sample) if px]
    per = seconds_per_image(float(np.median(pixels))) if pixels else COST_SECONDS[-1]
    if per * len(todo) < (MIN_SECONDS if min_seconds is None else min_seconds):
        return None
    side_px = f"about {math.isqrt(int(np.median(pixels)))} px square" if pixels else "size unknown, taken as 1024 px"
    return (f"FRD: radiomic features for {len(todo):,} uncached image(s) ({len(todo_real):,} reference, "
            f"{len(todo_syn):,} synthetic; {side_px}): about {_duration(per * len(todo))} on one core "
            f"(~{per:.2f} CPU-s per image), once; cached afterwards.")


__all__ = ["first_run_cost", "seconds_per_image", "uncached"]
