"""One loader that turns what researchers have into one canonical image set.

Accepted sources (see :func:`load_image_set`):

- a folder of images (recursive, sorted), optionally with ``metadata.csv`` (or ``labels.csv``, or the
  ``generations.csv`` that ``generate`` writes) in it;
- a CSV: generic metadata, CheXGenBench synthetic (``prompt``, ``img_savename``), MIMIC-CXR LLaVA-Rad
  (``path``, ``annotated_prompt``, ``chexpert_labels`` dict strings), NIH ChestX-ray14 (``filename`` /
  ``Image Index``, ``finding_labels`` / ``Finding Labels``);
- ``PATH@SPLIT`` to keep one split; ``demo`` (or ``demo@test``) for the embedded demo world.

Every set becomes an :class:`ImageSet` whose ``table`` has the columns path (absolute), prompt,
patient_id, study_id, view, split, then the 14 CheXpert labels (float32 1/0/-1/NaN), then any extra
columns of the source. Bad rows raise an :class:`InputError` naming the file, row and column, or are
skipped and listed in ``ImageSet.skipped`` with ``skip_bad=True``; nothing is dropped silently.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
import re
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import settings
from .errors import BadFile, InputError
from .pathologies import (
    DEFAULT_UNCERTAIN_POLICY,
    N_LABELS,
    PATHOLOGIES,
    binarize,
    empty_labels,
    labels_from_mapping,
    labels_from_nih,
    parse_label_value,
)

BASE_COLUMNS: tuple[str, ...] = ("path", "prompt", "patient_id", "study_id", "view", "split")
TABLE_COLUMNS: tuple[str, ...] = BASE_COLUMNS + PATHOLOGIES
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff")
METADATA_NAMES = ("metadata.csv", "labels.csv", "generations.csv")  # looked for, in this order, inside a folder
# (generations.csv: what `python -m evaluators generate` writes, prompts + the labeler's 14 labels)
SOURCE_FORMATS = ("folder", "metadata", "chexgenbench-synthetic", "mimic-llavarad", "nih")
LABEL_SOURCES = ("metadata", "prompt-labeler", "none")
MAX_ROWS = 5_000_000  # rows per CSV; env CHEXGEN_MAX_ROWS overrides
MAX_ROWS_ENV = "CHEXGEN_MAX_ROWS"
DEMO = "demo"

# Accepted headers per canonical column, compared after _norm() (lower case, spaces/dashes -> '_').
# The first present wins; e.g. a CSV with both `prompt` and `annotated_prompt` uses `prompt`.
PATH_COLUMNS = ("path", "filename", "file_name", "img_savename", "image_index", "image_path", "img_path", "image", "file")
PROMPT_COLUMNS = ("prompt", "annotated_prompt", "report", "caption", "text")
PATIENT_COLUMNS = ("patient_id", "patientid", "subject_id", "subjectid", "patient")  # patientid: CheXGenBench's `patientID`
STUDY_COLUMNS = ("study_id", "studyid", "study")
VIEW_COLUMNS = ("view", "view_position", "viewposition", "projection")
SPLIT_COLUMNS = ("split",)
CHEXPERT_DICT_COLUMNS = ("chexpert_labels",)
NIH_COLUMNS = ("finding_labels",)
_SPLIT_ALIASES = {"val": "valid", "validation": "valid", "valid": "valid", "dev": "valid", "train": "train", "test": "test"}
_DICT_MAX_CHARS = 10_000


def _norm(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _row(i: int) -> str:
    """How rows are named in messages: spreadsheet numbering, header = row 1."""
    return f"row {int(i) + 2}"


# --------------------------------------------------------------------------------------------------
# The set


@dataclass
class ImageSet:
    """A canonical set of images with prompts, 14 labels, patient ids and splits.

    ``table`` columns: :data:`TABLE_COLUMNS` first, then extra source columns (kept, unused).
    """

    table: pd.DataFrame
    name: str = "images"
    root: Path | None = None
    source_format: str = "metadata"
    labels_source: str = "none"
    skipped: list[BadFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    patient_ids_source: str | None = None  # "column", "derived from ... layout)" (evaluators.patient_ids), "none"

    def __post_init__(self) -> None:
        self.table = _canonical_table(self.table)
        if self.patient_ids_source is None:
            self.patient_ids_source = "column" if any(p is not None for p in self.patient_ids) else "none"

    # ---- access
    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return (
            f"ImageSet(name={self.name!r}, n={len(self)}, source_format={self.source_format!r}, "
            f"labels_source={self.labels_source!r}, skipped={len(self.skipped)})"
        )

    @property
    def paths(self) -> list[str]:
        return self.table["path"].tolist()

    @property
    def prompts(self) -> list[str]:
        return self.table["prompt"].tolist()

    @property
    def labels(self) -> np.ndarray:
        """``float32 [N, 14]``: 1 / 0 / -1 / NaN, in :data:`PATHOLOGIES` order."""
        return self.table[list(PATHOLOGIES)].to_numpy(dtype=np.float32, copy=True).reshape(len(self), N_LABELS)

    @property
    def patient_ids(self) -> list[str | None]:
        return [None if _blank(v) else str(v) for v in self.table["patient_id"].tolist()]

    @property
    def splits(self) -> list[str]:
        """The split names present, in first-seen order."""
        return [str(s) for s in pd.unique(self.table["split"].dropna())]

    @property
    def has_labels(self) -> bool:
        return self.labels_source != "none" and bool(np.isfinite(self.labels).any())

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as canonical ``float32 [H, W]`` (errors name the file)."""
        from .imageio import read_image

        return read_image(self.table["path"].iat[int(i)])

    def binary_labels(self, policy: str = DEFAULT_UNCERTAIN_POLICY) -> np.ndarray:
        """Binary ``[N, 14]`` targets; see :data:`evaluators.pathologies.UNCERTAIN_POLICIES`."""
        return binarize(self.labels, policy)

    # ---- selection
    def subset(self, index_or_mask, name: str | None = None) -> ImageSet:
        """Rows by integer indices, a boolean mask or a slice, as a new set (same provenance)."""
        if isinstance(index_or_mask, slice):
            table = self.table.iloc[index_or_mask]
        else:
            idx = np.asarray(index_or_mask)
            if idx.dtype == bool:
                if idx.shape != (len(self),):
                    raise InputError(f"Boolean mask of length {idx.size} does not match the set's {len(self)} rows.")
                table = self.table.loc[idx]
            else:
                idx = idx.astype(np.int64).reshape(-1)
                if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
                    raise InputError(f"Index out of range for set {self.name!r} of {len(self)} images.")
                table = self.table.iloc[idx]
        return ImageSet(
            table.reset_index(drop=True),
            name=name or self.name,
            root=self.root,
            source_format=self.source_format,
            labels_source=self.labels_source,
            skipped=list(self.skipped),
            notes=list(self.notes),
            patient_ids_source=self.patient_ids_source,
        )

    def split(self, name: str) -> ImageSet:
        """The rows of one split; an InputError lists the splits present when it does not exist."""
        mask = _split_mask(self.table["split"], name, what=f"image set {self.name!r}")
        return self.subset(mask, name=f"{self.name}@{name}")

    # ---- reporting and export
    def describe(self) -> dict:
        """Counts per label and split (plain data for the CLI and the app)."""
        labels = self.labels
        counts = {
            p: {
                "positive": int((labels[:, j] == 1).sum()),
                "negative": int((labels[:, j] == 0).sum()),
                "uncertain": int((labels[:, j] == -1).sum()),
                "blank": int(np.isnan(labels[:, j]).sum()),
            }
            for j, p in enumerate(PATHOLOGIES)
        }
        split_col = self.table["split"].map(lambda v: "(none)" if _blank(v) else str(v))
        by_split = {}
        for s in pd.unique(split_col):
            m = (split_col == s).to_numpy()
            by_split[str(s)] = {
                "images": int(m.sum()),
                "positives": {p: int((labels[m, j] == 1).sum()) for j, p in enumerate(PATHOLOGIES)},
            }
        pids = [p for p in self.patient_ids if p is not None]
        return {
            "name": self.name,
            "source_format": self.source_format,
            "labels_source": self.labels_source,
            "root": str(self.root) if self.root else None,
            "n_images": len(self),
            "n_patients": len(set(pids)) if pids else None,
            "patient_ids_source": self.patient_ids_source if pids else "none",
            "n_with_prompt": int((self.table["prompt"].astype(str).str.strip() != "").sum()),
            "splits": {s: v["images"] for s, v in by_split.items()},
            "labels": counts,
            "positives_by_split": {s: v["positives"] for s, v in by_split.items()},
            "n_skipped": len(self.skipped),
            "skipped": [str(b) for b in self.skipped],
            "notes": list(self.notes),
        }

    def to_metadata_csv(self, path: str | os.PathLike, *, relative_to: str | os.PathLike | None = None) -> Path:
        """Write the table as a ``metadata.csv`` that :func:`load_image_set` reads back.

        Paths are written relative to ``relative_to`` (default: the CSV's folder if every image is under
        it, else :attr:`root` if every image is under that, else absolute). Reload with
        ``images_root=relative_to`` unless that is the CSV's folder.
        """
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        paths = [Path(p) for p in self.paths]
        if relative_to is None:
            for cand in (out.parent.resolve(), self.root):
                if cand is not None and all(_inside(p, Path(cand)) for p in paths):
                    relative_to = cand
                    break
        table = self.table.copy()
        if relative_to is not None:
            base = Path(relative_to).resolve()
            table["path"] = [Path(os.path.relpath(p, base)).as_posix() for p in paths]
        table.to_csv(out, index=False)
        return out


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _blank(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _canonical_table(table: pd.DataFrame) -> pd.DataFrame:
    """Canonical column order and types; missing columns are filled (prompt '', ids None, labels NaN)."""
    t = table.reset_index(drop=True).copy()
    n = len(t)
    if "path" not in t.columns:
        raise InputError("An image set table needs a 'path' column.")
    t["path"] = t["path"].astype(str)
    t["prompt"] = t["prompt"].fillna("").astype(str) if "prompt" in t.columns else ""
    for col in ("patient_id", "study_id", "view", "split"):
        values = t[col].tolist() if col in t.columns else [None] * n
        t[col] = pd.Series([None if _blank(v) else str(v) for v in values], dtype=object, index=t.index)
    for p in PATHOLOGIES:
        t[p] = t[p].astype(np.float32) if p in t.columns else np.full(n, np.nan, np.float32)
    extras = [c for c in t.columns if c not in TABLE_COLUMNS]
    return t[list(TABLE_COLUMNS) + extras]


def rows_in_split(df: pd.DataFrame, split: str, *, what: str) -> pd.DataFrame:
    """The rows of ``df`` in ``split`` (its split column found by name, as for image sets; values compared
    case-insensitively, with train/valid/test aliases); an InputError names ``what`` and the fix."""
    col = _find(list(df.columns), SPLIT_COLUMNS)
    if col is None:
        raise InputError(f"{what} has no 'split' column, so split {split!r} cannot be selected; "
                         f"add the column or drop '@{split}'.")
    return df.loc[_split_mask(df[col], split, what=what)]


def _split_mask(col: pd.Series, wanted: str, *, what: str) -> np.ndarray:
    present = [str(s) for s in pd.unique(col.dropna())]
    if not present:
        raise InputError(f"{what} has no split column, so split {wanted!r} cannot be selected; remove '@{wanted}'.")
    key = str(wanted).strip().lower()
    values = col.map(lambda v: None if _blank(v) else str(v).strip().lower())
    mask = (values == key).to_numpy()
    if not mask.any() and key in _SPLIT_ALIASES:
        canon = _SPLIT_ALIASES[key]
        mask = values.map(lambda v: v is not None and _SPLIT_ALIASES.get(v, v) == canon).to_numpy(dtype=bool)
    if not mask.any():
        raise InputError(f"{what} has no split {wanted!r}; available splits: {', '.join(present)}.")
    return mask


# --------------------------------------------------------------------------------------------------
# Specs


def parse_set_spec(spec: str | os.PathLike) -> tuple[str, str | None]:
    """``'PATH@SPLIT'`` -> ``(PATH, SPLIT)``; a plain path (or one that exists with an '@') -> ``(PATH, None)``."""
    if isinstance(spec, os.PathLike):
        return os.fspath(spec), None
    s = str(spec).strip()
    if "@" in s and not Path(s).exists():
        base, _, split = s.rpartition("@")
        if base and split.strip() and "/" not in split and os.sep not in split:
            return base, split.strip()
    return s, None


def max_rows_limit() -> int:
    return settings.int_setting(MAX_ROWS_ENV, MAX_ROWS)


# --------------------------------------------------------------------------------------------------
# Loading


def load_image_set(
    source: str | os.PathLike | ImageSet,
    *,
    images_root: str | os.PathLike | None = None,
    split: str | None = None,
    skip_bad: bool = False,
    verify_images: bool = False,
    name: str | None = None,
    max_rows: int | None = None,
    derive_patient_ids: bool | None = None,
) -> ImageSet:
    """An :class:`ImageSet` from a folder, a CSV, ``PATH@SPLIT`` or ``demo``.

    - ``images_root``: the folder CSV paths are relative to (default: the CSV's folder, or its
      ``images/`` subfolder when the paths are found there). No image may resolve outside it.
    - ``skip_bad``: skip bad rows / files and list them in ``skipped`` instead of raising.
    - ``verify_images``: decode every image now (else bad pixels are found when an image is read;
      missing and empty files are always found at load time).
    - ``max_rows``: refuse larger CSVs (default :data:`MAX_ROWS`, env ``CHEXGEN_MAX_ROWS``).
    - ``derive_patient_ids``: without a patient-id column (or with a blank one), take patient and study ids from
      paths that follow a public dataset's layout (:func:`with_derived_patient_ids`); default: the setting
      ``CHEXGEN_DERIVE_PATIENT_IDS`` (on).
    """
    if isinstance(source, ImageSet):
        out = source.split(split) if split else source
        return _verify(out, skip_bad) if verify_images else out
    path_str, spec_split = parse_set_spec(source)
    if split and spec_split and split != spec_split:
        raise InputError(f"Two splits asked for: {spec_split!r} in {source!r} and split={split!r}; give one.")
    split = split or spec_split
    if path_str == DEMO:
        p = _demo_world_path()
    else:
        if not path_str:
            raise InputError("No image set given; pass a folder, a CSV file, PATH@SPLIT or 'demo'.")
        p = Path(path_str)
        if not p.exists():
            raise InputError(_missing_message(p))
    limit = max_rows_limit() if max_rows is None else int(max_rows)
    if p.is_dir():
        meta = next((p / m for m in METADATA_NAMES if (p / m).is_file()), None)
        if meta is not None:
            out = _load_csv(meta, images_root=images_root or p, split=split, skip_bad=skip_bad, max_rows=limit,
                            default_root_candidates=images_root is None, name=name or p.resolve().name)
            if out.source_format == "metadata":
                out.source_format = "folder"  # a folder with a generic metadata.csv
        else:
            out = _load_folder_or_its_csv(p, images_root=images_root, split=split, skip_bad=skip_bad, name=name,
                                          max_rows=limit)
    elif p.is_file():
        out = _load_csv(p, images_root=images_root, split=split, skip_bad=skip_bad, max_rows=limit,
                        default_root_candidates=images_root is None, name=name)
    else:
        raise InputError(f"{p} is neither a folder nor a regular file; pass a folder of images or a CSV file.")
    from .patient_ids import enabled

    if enabled(derive_patient_ids):
        out = with_derived_patient_ids(out)
    if verify_images:
        out = _verify(out, skip_bad)
    return out


def with_derived_patient_ids(image_set: ImageSet) -> ImageSet:
    """``image_set`` with patient (and, when its study column is blank too, study) ids derived from its paths when
    it has no patient id at all and its paths follow a layout of :mod:`evaluators.patient_ids`; else unchanged."""
    from .patient_ids import match_layout

    if any(p is not None for p in image_set.patient_ids):
        return image_set
    derived = match_layout(image_set.paths)
    if derived is None:
        return image_set
    out = image_set.subset(slice(None))
    out.table["patient_id"] = pd.Series(derived.patient_ids, dtype=object)
    if all(_blank(v) for v in out.table["study_id"].tolist()):
        out.table["study_id"] = pd.Series(derived.study_ids, dtype=object)
    out.patient_ids_source = derived.source
    out.notes.append(derived.note())
    return out


def _missing_message(p: Path) -> str:
    msg = f"Image set {p} does not exist"
    parent = p.parent if str(p.parent) else Path(".")
    try:
        siblings = [c.name for c in parent.iterdir()] if parent.is_dir() else []
    except OSError:
        siblings = []
    close = difflib.get_close_matches(p.name, siblings, n=1, cutoff=0.6)
    if close:
        msg += f"; did you mean {str(parent / close[0])!r}?"
    else:
        msg += "; pass a folder of images, a CSV file, PATH@SPLIT or 'demo'."
    return msg


def _demo_world_path() -> Path:
    try:
        from .demo_world import ensure_demo_world
    except ImportError as exc:
        raise InputError(f"The demo world is not available in this installation ({exc}).") from None
    result = ensure_demo_world()
    for attr in ("root", "path", "folder"):
        if not isinstance(result, str | os.PathLike) and hasattr(result, attr):
            result = getattr(result, attr)
            break
    if result is None:
        raise InputError("The demo world could not be built; run `python -m evaluators` demo commands to see why.")
    return Path(result)


# ---- folders


def _load_folder_or_its_csv(folder: Path, *, images_root, split: str | None, skip_bad: bool, name: str | None,
                            max_rows: int) -> ImageSet:
    """A folder without a METADATA_NAMES file: its only top-level CSV is its metadata when it lists the folder's images
    (prompts.csv, a CheXGenBench CSV...), said in a note; several CSVs, or one that does not list images, are not used,
    and a note says so (a folder of images with prompts must not silently lose its prompts)."""
    csvs = sorted(c for c in folder.glob("*.csv") if c.is_file() and not c.name.startswith("."))
    if len(csvs) == 1:
        try:
            out = _load_csv(csvs[0], images_root=images_root or folder, split=split, skip_bad=skip_bad,
                            max_rows=max_rows, default_root_candidates=images_root is None,
                            name=name or folder.resolve().name)
        except InputError as exc:
            why = f"{csvs[0].name} in the folder was not used as its metadata ({exc})"
        else:
            out.notes.append(f"read {csvs[0].name}, the folder's only CSV, as its metadata (name it metadata.csv, or "
                             "pass the CSV itself, to say so explicitly)")
            return out
    elif csvs:
        why = (f"the folder holds {len(csvs)} CSV files ({', '.join(c.name for c in csvs[:5])}) and none named "
               f"{' / '.join(METADATA_NAMES)}: none was used; pass the one that lists the images instead of the folder")
    out = _load_folder(folder, split=split, skip_bad=skip_bad, name=name, max_rows=max_rows)
    if csvs:
        out.notes.append(why)
    return out


def _load_folder(folder: Path, *, split: str | None, skip_bad: bool, name: str | None, max_rows: int) -> ImageSet:
    from .imageio import sniff_format

    root = folder.resolve()
    found: list[str] = []
    bad: list[BadFile] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            full = Path(dirpath) / fname
            ext = full.suffix.lower()
            if ext not in IMAGE_EXTENSIONS:
                if ext:
                    continue
                try:
                    with open(full, "rb") as fh:
                        if sniff_format(fh.read(132)) is None:
                            continue
                except OSError:
                    continue
            found.append(os.path.abspath(full))
            if len(found) > max_rows:
                raise InputError(
                    f"Folder {folder} holds more than {max_rows:,} images; split it, or raise {MAX_ROWS_ENV}."
                )
    found.sort(key=lambda f: Path(os.path.relpath(f, folder)).parts)
    if not found:
        raise InputError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in folder {folder}; check the folder, or pass a CSV "
            "that lists the images."
        )
    keep: list[str] = []
    checker = _PathChecker(root)
    for f in found:
        reason = checker.problem(f)
        if reason is None:
            keep.append(f)
        elif skip_bad:
            bad.append(BadFile(f, reason))
        else:
            raise InputError(f"{f}: {reason}; remove it or pass skip_bad=True (--skip-bad) to skip such files.")
    if split:
        raise InputError(f"Folder {folder} has no metadata.csv, so it has no splits and {split!r} cannot be selected; "
                         "add a metadata.csv with a 'split' column, or drop '@" + split + "'.")
    if not keep:
        raise InputError(f"No readable images left in folder {folder}: " + "; ".join(str(b) for b in bad[:3]))
    table = pd.DataFrame({"path": keep})
    return ImageSet(table, name=name or root.name, root=root, source_format="folder", labels_source="none",
                    skipped=bad)


class _PathChecker:
    """Cheap per-file checks (escape, missing, folder, empty) with each folder's real path resolved once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_real = os.path.realpath(root)
        self._dirs: dict[str, str] = {}

    def _under_root(self, real: str) -> bool:
        return real == self.root_real or real.startswith(self.root_real.rstrip(os.sep) + os.sep)

    def problem(self, path: str) -> str | None:
        """Why a listed file cannot be used, or None."""
        parent, fname = os.path.split(path)
        parent_real = self._dirs.get(parent)
        if parent_real is None:
            parent_real = self._dirs[parent] = os.path.realpath(parent)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            return f"cannot be opened ({exc.strerror or exc})"
        real = os.path.realpath(path) if st is not None and stat.S_ISLNK(st.st_mode) else os.path.join(parent_real, fname)
        if not self._under_root(real):
            return (f"resolves outside the images root {self.root} (a symlink or '..' path); move the file under "
                    "the root or pass an images root that contains it")
        if st is None:
            return "listed but missing"
        try:
            st = os.stat(path)
        except OSError:
            return "listed but missing (a broken symlink)"
        if stat.S_ISDIR(st.st_mode):
            return "is a folder, not an image file"
        if st.st_size == 0:
            return "is empty (0 bytes)"
        return None


# ---- CSVs


def _read_csv(path: Path, max_rows: int) -> pd.DataFrame:
    from .imageio import sniff_format

    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError as exc:
        raise InputError(f"CSV file {path} cannot be read ({exc.strerror or exc}); check its permissions.") from None
    if not head.strip():
        raise InputError(f"CSV file {path} is empty; it needs a header row (e.g. path,prompt) and one row per image.")
    if sniff_format(head) is not None:
        raise InputError(f"{path} is an image, not a CSV; pass the folder that holds it, or a CSV listing images.")
    if b"\x00" in head:
        raise InputError(f"{path} is binary, not a CSV text file; pass a CSV with a header row (e.g. path,prompt).")
    first_line = head.split(b"\n", 1)[0]
    sep = "\t" if path.suffix.lower() == ".tsv" or (b"\t" in first_line and b"," not in first_line) else ","
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep=sep, nrows=max_rows + 1)
    except pd.errors.EmptyDataError:
        raise InputError(f"CSV file {path} is empty; it needs a header row and one row per image.") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"CSV file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise InputError(f"CSV file {path} cannot be parsed ({str(exc).strip()}); check quoting and separators.") from None
    if len(df) > max_rows:
        raise InputError(f"CSV file {path} has more than {max_rows:,} rows; split it, or raise {MAX_ROWS_ENV}.")
    if len(df) == 0:
        raise InputError(f"CSV file {path} has a header but no rows; add one row per image.")
    df.columns = [str(c).strip() for c in df.columns]
    return df


@dataclass
class _Columns:
    path: str
    prompt: str | None = None
    patient_id: str | None = None
    study_id: str | None = None
    view: str | None = None
    split: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # pathology -> column
    chexpert_dict: str | None = None
    nih: str | None = None
    notes: list[str] = field(default_factory=list)


def _find(columns: Sequence[str], accepted: Sequence[str]) -> str | None:
    by_norm: dict[str, str] = {}
    for c in columns:
        by_norm.setdefault(_norm(c), c)
    for a in accepted:
        if a in by_norm:
            return by_norm[a]
    return None


def _detect_columns(columns: Sequence[str], csv: Path) -> _Columns:
    path_col = _find(columns, PATH_COLUMNS)
    if path_col is None:
        known = {_norm(c): c for c in columns}
        guesses = []
        for cand in PATH_COLUMNS:
            for m in difflib.get_close_matches(cand, list(known), n=1, cutoff=0.75):
                guesses.append((difflib.SequenceMatcher(None, cand, m).ratio(), cand, known[m]))
        hint = ""
        if guesses:
            _, cand, col = max(guesses)
            hint = f" Column {col!r}: did you mean {cand!r}? Rename it to {cand!r}."
        raise InputError(
            f"CSV file {csv} has no image column: none of path, filename, img_savename, Image Index, image_path "
            f"(found: {', '.join(map(repr, columns))}).{hint}"
        )
    cols = _Columns(
        path=path_col,
        prompt=_find(columns, PROMPT_COLUMNS),
        patient_id=_find(columns, PATIENT_COLUMNS),
        study_id=_find(columns, STUDY_COLUMNS),
        view=_find(columns, VIEW_COLUMNS),
        split=_find(columns, SPLIT_COLUMNS),
        chexpert_dict=_find(columns, CHEXPERT_DICT_COLUMNS),
        nih=_find(columns, NIH_COLUMNS),
    )
    norm_labels = {_norm(p): p for p in PATHOLOGIES}
    for c in columns:
        p = norm_labels.get(_norm(c))
        if p is not None and p not in cols.labels:
            cols.labels[p] = c
    used = {v for v in (cols.path, cols.prompt, cols.patient_id, cols.study_id, cols.view, cols.split,
                        cols.chexpert_dict, cols.nih) if v} | set(cols.labels.values())
    wanted = {
        **{a: a for a in ("prompt", "patient_id", "study_id", "split", "chexpert_labels", "finding_labels")},
        **{_norm(p): p for p in PATHOLOGIES if p not in cols.labels},
    }
    for c in columns:
        if c in used:
            continue
        m = difflib.get_close_matches(_norm(c), list(wanted), n=1, cutoff=0.85)
        if m and _norm(c) != m[0]:
            cols.notes.append(f"column {c!r} looks like {wanted[m[0]]!r} but is not used; rename it to use it")
    return cols


def _choose_root(raw_paths: list[str], candidates: list[Path]) -> Path:
    """The candidate folder under which most of the first 50 relative paths exist (first on ties)."""
    sample = [r for r in raw_paths if r and not os.path.isabs(r)][:50]
    if len(candidates) == 1 or not sample:
        return candidates[0]
    scores = [sum(os.path.exists(c / r) for r in sample) for c in candidates]
    return candidates[int(np.argmax(scores))]


def _load_csv(
    csv: Path,
    *,
    images_root: str | os.PathLike | None,
    split: str | None,
    skip_bad: bool,
    max_rows: int,
    default_root_candidates: bool,
    name: str | None,
) -> ImageSet:
    df = _read_csv(csv, max_rows)
    cols = _detect_columns(list(df.columns), csv)
    notes = list(cols.notes)
    if split:
        df = rows_in_split(df, split, what=f"CSV file {csv}")
    rows = df.index.to_numpy()  # original row positions, for messages

    # --- where images live
    raw_paths = [str(v).strip() for v in df[cols.path].tolist()]
    if images_root is not None and not default_root_candidates:
        root = Path(images_root)
        if not root.is_dir():
            raise InputError(f"Images root {root} is not a folder; pass the folder the paths in {csv} are relative to.")
    else:
        base = Path(images_root) if images_root is not None else csv.parent
        candidates = [base] + ([base / "images"] if (base / "images").is_dir() else [])
        root = _choose_root(raw_paths, candidates)
    root = Path(os.path.abspath(root))

    # --- per-row checks; the first problem per row is kept
    problems: dict[int, str] = {}
    resolved: list[str] = []
    checker = _PathChecker(root)
    for k, raw in enumerate(raw_paths):
        if not raw:
            problems[k] = f"column {cols.path!r} is blank"
            resolved.append("")
            continue
        full = os.path.abspath(raw if os.path.isabs(raw) else root / raw)
        resolved.append(full)
        reason = checker.problem(full)
        if reason is not None:
            problems[k] = f"{raw!r} {reason}"
    missing = [k for k, r in problems.items() if "listed but missing" in r]
    if raw_paths and len(missing) == len(raw_paths):
        raise InputError(
            f"None of the {len(raw_paths)} images listed in {csv} (column {cols.path!r}) exist under {root} "
            f"(first: {root / raw_paths[0]}); pass images_root= (--images-root) pointing to the folder the paths "
            "are relative to."
        )

    # duplicates: later rows are the bad ones
    first_seen: dict[str, int] = {}
    for k, full in enumerate(resolved):
        if not full:
            continue
        if full in first_seen:
            problems.setdefault(k, f"duplicate path {raw_paths[k]!r}: also at {_row(rows[first_seen[full]])}")
        else:
            first_seen[full] = k

    labels, labels_source = _labels(df, cols, csv, rows, problems)

    if problems and not skip_bad:
        order = sorted(problems)
        k = order[0]
        more = f" ({len(order) - 1} more rows have problems)" if len(order) > 1 else ""
        raise InputError(
            f"{csv}, {_row(rows[k])}: {problems[k]}{more}. Fix the CSV, or pass skip_bad=True (--skip-bad) to skip "
            "bad rows and list them."
        )
    skipped = [BadFile(resolved[k] or f"{csv} {_row(rows[k])}", f"{_row(rows[k])}: {r}") for k, r in sorted(problems.items())]
    keep = np.array([k not in problems for k in range(len(df))], dtype=bool)
    if not keep.any():
        raise InputError(f"No usable rows left in {csv}: " + "; ".join(str(b) for b in skipped[:3]))

    def col(c: str | None, default: object = None) -> list:
        return df[c].tolist() if c else [default] * len(df)

    table = pd.DataFrame({
        "path": resolved,
        "prompt": col(cols.prompt, ""),
        "patient_id": col(cols.patient_id),
        "study_id": col(cols.study_id),
        "view": col(cols.view),
        "split": col(cols.split),
    })
    for j, p in enumerate(PATHOLOGIES):
        table[p] = labels[:, j]
    for c in df.columns:
        if c not in table.columns:
            table[c] = df[c].to_numpy()
    table = table.loc[keep].reset_index(drop=True)

    if labels_source == "none":
        table, labels_source, note = _label_prompts(table)
        if note:
            notes.append(note)
    if cols.nih:
        fmt = "nih"
    elif cols.chexpert_dict or _norm(cols.prompt or "") == "annotated_prompt":
        fmt = "mimic-llavarad"
    elif _norm(cols.path) == "img_savename":
        fmt = "chexgenbench-synthetic"
    else:
        fmt = "metadata"
    if name is None:
        name = csv.parent.resolve().name if csv.stem.lower() in ("metadata", "labels", "annotations") else csv.stem
    if split:
        name = f"{name}@{split}"
    return ImageSet(table, name=name, root=root, source_format=fmt, labels_source=labels_source,
                    skipped=skipped, notes=notes)


def _parse_cells(values: list, parse, source: str, problems: dict[int, str]):
    """Yield (row, parsed value), parsing each distinct cell once; a bad cell becomes problems[row]."""
    cache: dict = {}
    for k, v in enumerate(values):
        if v not in cache:
            try:
                cache[v] = parse(v, source=source)
            except InputError as exc:
                cache[v] = str(exc)
        val = cache[v]
        if isinstance(val, str):
            problems.setdefault(k, val)
        else:
            yield k, val


def _labels(df: pd.DataFrame, cols: _Columns, csv: Path, rows: np.ndarray,
            problems: dict[int, str]) -> tuple[np.ndarray, str]:
    """[N, 14] labels from label columns, else a chexpert_labels dict column, else NIH finding labels."""
    n = len(df)
    out = np.full((n, N_LABELS), np.nan, dtype=np.float32)
    if cols.labels:
        for p, c in cols.labels.items():
            j = PATHOLOGIES.index(p)
            for k, val in _parse_cells(df[c].tolist(), parse_label_value, f"column {c!r}", problems):
                out[k, j] = val
        return out, "metadata"
    if cols.chexpert_dict or cols.nih:
        c = cols.chexpert_dict or cols.nih
        parse = parse_chexpert_dict if cols.chexpert_dict else _parse_nih
        for k, val in _parse_cells(df[c].tolist(), parse, f"column {c!r}", problems):
            out[k] = val
        return out, "metadata"
    return out, "none"


def parse_chexpert_dict(text: object, *, source: str = "chexpert_labels") -> np.ndarray:
    """A LLaVA-Rad ``chexpert_labels`` cell like ``"{'Atelectasis': 1.0, 'Edema': -1.0}"`` -> [14] labels.

    Parsed with :func:`ast.literal_eval` (never ``eval``); ``nan``/``null`` values are blank; missing keys
    are blank; a blank cell or ``{}`` gives all-blank labels.
    """
    if _blank(text):
        return empty_labels()
    s = str(text).strip()
    if len(s) > _DICT_MAX_CHARS:
        raise InputError(f"{source}: label dict of {len(s)} characters is too long; expected {{'Atelectasis': 1.0, ...}}.")
    try:
        obj = ast.literal_eval(re.sub(r"\b(nan|NaN|NAN|null|None)\b", "None", s))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise InputError(f"{source}: {s[:80]!r} is not a label dict like {{'Atelectasis': 1.0, 'Edema': -1.0}}.") from None
    if not isinstance(obj, dict):
        raise InputError(f"{source}: {s[:80]!r} is not a dict; expected {{'Atelectasis': 1.0, 'Edema': -1.0}}.")
    return labels_from_mapping(obj, source=source)


def _parse_nih(text: object, *, source: str = "finding_labels") -> np.ndarray:
    if _blank(text):
        return empty_labels()
    try:
        return labels_from_nih(str(text))
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None


def _label_prompts(table: pd.DataFrame) -> tuple[pd.DataFrame, str, str | None]:
    """Labels from the prompts by the rule labeler, when the source has prompts but no labels."""
    has_prompt = (table["prompt"].astype(str).str.strip() != "").to_numpy()
    if not has_prompt.any():
        return table, "none", None
    try:
        from .labeler import label_reports
    except ImportError:
        return table, "none", "the set has prompts but no labels, and the prompt labeler is not installed: labels are blank"
    prompts = table["prompt"].astype(str).tolist()
    unique = list(dict.fromkeys(p for p, h in zip(prompts, has_prompt) if h))  # seeds repeat prompts: label once
    arr = _as_label_matrix(label_reports(unique), len(unique))
    row_of = {p: i for i, p in enumerate(unique)}
    labels = np.full((len(table), N_LABELS), np.nan, dtype=np.float32)
    idx = np.flatnonzero(has_prompt)
    labels[idx] = arr[[row_of[prompts[i]] for i in idx]]
    table = table.copy()
    for j, p in enumerate(PATHOLOGIES):
        table[p] = labels[:, j]
    return table, "prompt-labeler", "labels were derived from the prompts by the rule labeler"


def _as_label_matrix(result: object, n: int) -> np.ndarray:
    if isinstance(result, pd.DataFrame):
        result = result[list(PATHOLOGIES)].to_numpy(dtype=np.float32)
    elif isinstance(result, list | tuple) and result and isinstance(result[0], dict):
        result = np.stack([labels_from_mapping(r) for r in result])
    arr = np.asarray(result, dtype=np.float32)
    if arr.shape != (n, N_LABELS):
        raise RuntimeError(f"label_reports returned shape {arr.shape}, expected ({n}, {N_LABELS})")
    return arr


# ---- full decode


def _verify(image_set: ImageSet, skip_bad: bool) -> ImageSet:
    """Decode every image (header size check first); bad ones raise or are skipped and listed."""
    from .imageio import read_image

    def check(path: str) -> str | None:
        try:
            read_image(path)
        except InputError as exc:
            return str(exc)
        return None

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(check, image_set.paths))
    bad = [i for i, r in enumerate(results) if r is not None]
    if not bad:
        return image_set
    if not skip_bad:
        more = f" ({len(bad) - 1} more images are bad)" if len(bad) > 1 else ""
        raise InputError(f"{results[bad[0]]}{more} Pass skip_bad=True (--skip-bad) to skip bad images and list them.")
    keep = np.ones(len(image_set), dtype=bool)
    keep[bad] = False
    if not keep.any():
        raise InputError(f"No readable images in set {image_set.name!r}: {results[bad[0]]}")
    out = image_set.subset(keep)
    out.skipped.extend(BadFile(image_set.paths[i], str(results[i])) for i in bad)
    return out


# --------------------------------------------------------------------------------------------------
# Plain-text report


def format_description(d: dict) -> str:
    """A plain-text report of :meth:`ImageSet.describe` (used by the CLI)."""
    lines = [
        f"set: {d['name']}  ({d['source_format']}; labels from {d['labels_source']})",
        f"root: {d['root']}",
        f"images: {d['n_images']}  patients: {d['n_patients'] if d['n_patients'] is not None else 'unknown'}  "
        f"with prompt: {d['n_with_prompt']}",
        f"patient ids: {d.get('patient_ids_source', 'none')}",
        "splits: " + ", ".join(f"{k} {v}" for k, v in d["splits"].items()),
        "",
        f"{'label':<28}{'pos':>7}{'neg':>7}{'unc':>7}{'blank':>7}",
    ]
    for p, c in d["labels"].items():
        lines.append(f"{p:<28}{c['positive']:>7}{c['negative']:>7}{c['uncertain']:>7}{c['blank']:>7}")
    if len(d["positives_by_split"]) > 1:
        splits = list(d["positives_by_split"])
        lines += ["", "positives by split", f"{'label':<28}" + "".join(f"{s:>9}" for s in splits)]
        for p in d["labels"]:
            lines.append(f"{p:<28}" + "".join(f"{d['positives_by_split'][s][p]:>9}" for s in splits))
    for note in d["notes"]:
        lines.append(f"note: {note}")
    if d["n_skipped"]:
        lines += ["", f"skipped {d['n_skipped']} file(s):"] + [f"  {s}" for s in d["skipped"]]
    return "\n".join(lines)
