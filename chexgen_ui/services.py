"""App services: what one running app keeps per session and the checks it adds in front of the engine.

A :class:`Studio` holds the app's run context (:class:`evaluators.runs.RunContext`: the reference set, its index,
encoder, memorisation search and re-ID choice), its loaded generators, the results store, the upload and job
limits (public mode) and the disk quota, and the upload handling. What the app computes is in ``evaluators/``:
generation and inspection (:mod:`evaluators.runs.generate`, :mod:`~evaluators.runs.inspect`,
:mod:`~evaluators.runs.export`, :mod:`~evaluators.runs.embedding_map`), the jobs (:mod:`evaluators.runs`), the
model catalogue (:mod:`evaluators.catalogue`) and the leaderboard (:mod:`evaluators.leaderboard`); the tabs call
those with ``studio.ctx``. Nothing here imports Gradio; every user-facing problem is an :class:`InputError` /
:class:`UnavailableError`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evaluators import leaderboard, limits, settings
from evaluators.errors import InputError, UnavailableError
from evaluators.runs import generate as rgen
from evaluators.runs import inspect
from evaluators.runs.generate import Generated
from evaluators.runs.inspect import CALIBRATION_PERCENTILE
from evaluators.runs.save import session_folder
from evaluators.settings import subdir

from .tables import counts_table, overall_table, per_pathology_table, privacy_image_table

log = logging.getLogger("chexgen_ui")

Progress = Callable[[int, int, str], None]

# Upload limits (zip archives are checked before anything is written).
MAX_UPLOAD_FILES = 5_000
MAX_UPLOAD_BYTES = 2 * 1024**3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff")
MAX_GENERATE = 64  # images per click in the Generate tab
MAX_GENERATE_SET = 2_000  # images per "generate a synthetic set" job
PRDC_K = 5

# Public mode (a Space, or --public): tighter limits, each overridable by an environment variable.
PUBLIC_MAX_FILES = 500  # CHEXGEN_PUBLIC_MAX_FILES: images (files) per upload
PUBLIC_MAX_BYTES = 512 * 1024**2  # CHEXGEN_PUBLIC_MAX_BYTES: bytes per upload once unzipped
PUBLIC_MAX_PIXELS = 4096 * 4096  # CHEXGEN_PUBLIC_MAX_PIXELS: pixels per uploaded image (header checked)
PUBLIC_MAX_GENERATE_SET = 256  # CHEXGEN_PUBLIC_MAX_GENERATE_SET: images per "generate a synthetic set" job


env_int = settings.int_setting  # one whole-number parser for every setting (evaluators.settings)


@dataclass(frozen=True)
class Limits:
    """What one upload or job may hold. Public mode reads the CHEXGEN_PUBLIC_* variables."""

    max_files: int = MAX_UPLOAD_FILES
    max_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int | None = None  # None: only the engine's own guard (CHEXGEN_MAX_PIXELS) at read time
    max_generate_set: int = MAX_GENERATE_SET

    @classmethod
    def for_mode(cls, public: bool) -> Limits:
        if not public:
            return cls()
        return cls(
            max_files=env_int("CHEXGEN_PUBLIC_MAX_FILES", PUBLIC_MAX_FILES),
            max_bytes=env_int("CHEXGEN_PUBLIC_MAX_BYTES", PUBLIC_MAX_BYTES),
            max_pixels=env_int("CHEXGEN_PUBLIC_MAX_PIXELS", PUBLIC_MAX_PIXELS),
            max_generate_set=env_int("CHEXGEN_PUBLIC_MAX_GENERATE_SET", PUBLIC_MAX_GENERATE_SET),
        )


@dataclass
class FidelityRun:
    """A finished fidelity job: the engine's result, its tables, files and the store id."""

    result: dict
    overall: pd.DataFrame
    per_pathology: pd.DataFrame
    counts: pd.DataFrame
    csv_path: Path
    json_path: Path
    run_id: int | None


@dataclass
class PrivacyRun:
    """A finished privacy job: summary, per-pathology rates, the most similar images, files, store id."""

    result: dict
    per_pathology: pd.DataFrame
    top: pd.DataFrame
    json_path: Path
    run_id: int | None


# --------------------------------------------------------------------------------------------------
# Safe upload handling


def safe_extract_zip(
    archive: str | os.PathLike, dest: str | os.PathLike, *, max_files: int = MAX_UPLOAD_FILES,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> Path:
    """Extract a zip of images (+ optional CSV) into ``dest`` after checking every member.

    Refused (InputError, nothing written): absolute paths, ``..`` components, symlinks, more than
    ``max_files`` members, more than ``max_bytes`` when expanded, and files that are not a zip.
    """
    archive, dest = Path(archive), Path(dest)
    if not zipfile.is_zipfile(archive):
        raise InputError(f"{archive.name} is not a zip archive; upload a .zip of images (and a CSV) or a CSV.")
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > max_files:
            raise InputError(f"{archive.name} holds {len(members)} files; the limit is {max_files}.")
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise InputError(
                f"{archive.name} expands to {total / 1e6:.0f} MB; the limit is {max_bytes / 1e6:.0f} MB."
            )
        for m in zf.infolist():
            name = m.filename.replace("\\", "/")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                raise InputError(f"{archive.name}: member {m.filename!r} has an absolute or '..' path; refused.")
            mode = (m.external_attr >> 16) & 0o170000
            if mode == stat.S_IFLNK:
                raise InputError(f"{archive.name}: member {m.filename!r} is a symbolic link; refused.")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for m in members:
            target = (dest / m.filename).resolve()
            if root not in target.parents:
                raise InputError(f"{archive.name}: member {m.filename!r} would land outside the upload folder.")
            if any(len(part.encode()) > 200 for part in Path(m.filename).parts) or len(m.filename) > 1000:
                raise InputError(f"{archive.name}: a member's name is longer than 200 characters; shorten the "
                                 "file names and upload the zip again.")
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(m) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > m.file_size:  # a member lying about its size
                            raise InputError(f"{archive.name}: member {_short_name(m.filename)!r} is larger than "
                                             "its header says; re-create the zip and upload it again.")
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                log.warning("zip member %r refused: %s", m.filename, exc)
                raise InputError(f"{archive.name}: member {_short_name(m.filename)!r} is damaged or uses an "
                                 "unsupported compression or encryption; re-create the zip (no password) and "
                                 "upload it again.") from None
    return dest


def _short_name(name: str) -> str:
    return name if len(name) <= 60 else name[:28] + "..." + name[-28:]


def _find_csv(folder: Path) -> Path | None:
    csvs = sorted(p for p in folder.rglob("*.csv") if not p.name.startswith("._"))
    for name in ("metadata.csv", "labels.csv"):
        for p in csvs:
            if p.name == name:
                return p
    return csvs[0] if csvs else None


# --------------------------------------------------------------------------------------------------
# The studio


class Studio:
    """Per-app state (run context, generators, store), limits, quota and upload handling; the engine does the rest."""

    def __init__(self, reference: str = "demo@train", *, public: bool = False, encoder: str | None = None,
                 device: str | None = None, store_path: str | os.PathLike | None = None, umap: bool = True):
        self.reference = reference
        self.umap = umap
        self.public = public
        self.limits = Limits.for_mode(public)
        from .quotas import DiskQuota

        self.quota = DiskQuota(public)  # public mode: disk quotas, deletion of finished inputs, expiry
        from evaluators.runs import RunContext

        # the reference side (set, encoder, index, memorisation search, re-ID), shared with the CLI's run layer
        self.ctx = RunContext(reference, encoder=encoder or settings.get("CHEXGEN_APP_ENCODER") or None,
                              device=device, umap=umap, fallback=True)
        self._store_path = store_path
        self._generators = rgen.Generators(lambda: self.device)

    # ---- basics (the reference side lives in self.ctx: evaluators.runs.RunContext)
    @property
    def device(self) -> str:
        return self.ctx.device

    def store(self):
        from evaluators.store import ResultsStore

        return ResultsStore(self._store_path)

    def reference_set(self):
        return self.ctx.reference_set()

    def encoder(self):
        """The encoder of the reference index: CHEXGEN_APP_ENCODER, else the best available one (falling back to
        ``pixels`` with a note on the Setup tab when the best one cannot load here)."""
        return self.ctx.encoder()

    def index(self, progress: Progress | None = None):
        """The reference index, built on first use (visible progress) and loaded from disk afterwards."""
        if not self.ctx.index_built:
            log.info("loading or building the reference index for %s under %s", self.reference, self.ctx.index_dir())
        return self.ctx.index(progress)

    # ---- generation (evaluators.runs.generate / .inspect: this session's limits and quota checked here)
    def generate(self, model: str, prompt: str, n: int = 4, seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, *, k: int = 5, session: str | None = None,
                 progress: Progress | None = None) -> Generated:
        """Generate ``n`` images for one prompt (seeds seed..seed+n-1) and inspect each against the reference."""
        prompt = (prompt or "").strip()
        if not prompt:
            raise InputError("The prompt is empty; pick a pathology to fill an example or type a report.")
        n = int(n)
        if not 1 <= n <= MAX_GENERATE:
            raise InputError(f"Number of images must be between 1 and {MAX_GENERATE} (got {n}).")
        n, k = limits.check("n_generate", n, self.public), limits.check("k", k, self.public)
        steps = limits.check("steps", steps, self.public) if steps else None
        if not model:
            raise InputError("Choose a model first (the Setup tab lists them).")
        self.quota.check(session, 0, "Generating images")
        out = rgen.generate(self._generators.get(model), model, prompt, [int(seed) + i for i in range(n)],
                            steps=int(steps) if steps else None,
                            guidance=float(guidance) if guidance is not None else None, device=self.device,
                            session=session, progress=progress)
        return inspect.inspect(self.ctx, out, k=k, progress=progress)

    # ---- re-ID (engine: evaluators.runs.RunContext)
    def reid_status(self, short: bool = False) -> str:
        from evaluators.runs.privacy import reid_status

        choice = self.ctx.reid_choice("auto")
        if self.public and not choice.available:  # how to provide a model is the operator's business, not a visitor's
            return "re-ID: unavailable on this public app (no re-identification model for this reference set)"
        return reid_status(choice, short)

    def train_reid(self, *, epochs: int = 5, progress: Progress | None = None, **settings) -> dict:
        """Train a re-ID model on the reference set's patients where the default choice finds it (resumable: a
        stopped run continues from its last epoch); the app uses it from then on unless a preferred one exists."""
        from evaluators.privacy.reid import train_reid

        result = train_reid(self.reference_set(), epochs=int(epochs), device=self.device, progress=progress,
                            **settings)  # settings: train_reid's (pairs_per_epoch, batch_size, backbone...)
        self.ctx.forget_reid()
        return result

    # ---- export (evaluators.runs.export)
    def export_zip(self, gen: Generated, out_dir: str | os.PathLike | None = None) -> Path:
        """A zip with one PNG per generated image and ``metadata.csv``, in the session's exports folder."""
        from evaluators.runs.export import export_zip

        return export_zip(self.ctx, gen, out_dir or subdir("exports") / session_folder(gen.session))

    # ---- synthetic sets
    def synthetic_from_upload(self, files: Sequence[str | os.PathLike], *, session: str | None = None) -> object:
        """An ImageSet from uploaded files: one zip (images + optional CSV), or a CSV plus image files.

        Files land in ``uploads/<session>/<time>-<id>/``; a refused upload is deleted again. Limits:
        :attr:`limits` (file count, expanded bytes and, in public mode, pixels per image from the header).
        """
        files = [Path(f) for f in (files or []) if f]
        if not files:
            raise InputError("Upload a zip of images (optionally with a CSV of prompts), or a CSV plus its images.")
        from .quotas import upload_bytes

        incoming = upload_bytes(files)
        if incoming <= self.limits.max_bytes:  # a bigger upload is refused below by the per-upload limit
            self.quota.check(session, incoming, "This upload")
        dest = subdir("uploads") / session_folder(session) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        try:
            return self._load_upload(files, dest)
        except (InputError, UnavailableError):
            shutil.rmtree(dest, ignore_errors=True)
            raise
        except Exception as exc:  # a damaged archive or file: one sentence, no exception text
            shutil.rmtree(dest, ignore_errors=True)
            log.warning("upload refused: %s: %s", type(exc).__name__, exc)
            raise InputError("The upload could not be read (a damaged zip or image file); re-create the zip "
                             "from the original images and upload it again.") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def _load_upload(self, files: list[Path], dest: Path) -> object:
        from evaluators.imagesets import load_image_set

        lim = self.limits
        zips = [f for f in files if f.suffix.lower() == ".zip"]
        if len(zips) > 1:
            raise InputError("Upload one zip at a time.")
        if zips:
            safe_extract_zip(zips[0], dest, max_files=lim.max_files, max_bytes=lim.max_bytes)
            self._check_pixels(dest)
            csv_path = _find_csv(dest)
            if csv_path is not None:
                return load_image_set(str(csv_path), images_root=str(csv_path.parent))
            return load_image_set(str(dest))
        if len(files) > lim.max_files:
            raise InputError(f"{len(files)} files uploaded; the limit is {lim.max_files}.")
        total = sum(f.stat().st_size for f in files)
        if total > lim.max_bytes:
            raise InputError(f"The upload holds {total / 1e6:.0f} MB; the limit is {lim.max_bytes / 1e6:.0f} MB.")
        dest.mkdir(parents=True)
        csvs = [f for f in files if f.suffix.lower() == ".csv"]
        for f in files:
            if f.suffix.lower() not in (*IMAGE_SUFFIXES, ".csv"):
                raise InputError(f"{f.name}: not an image or CSV; upload PNG/JPEG/DICOM/TIFF images, a CSV or a zip.")
            shutil.copy(f, dest / f.name)
        if len(csvs) > 1:
            raise InputError("Upload one CSV (the prompts/labels of the images).")
        self._check_pixels(dest)
        if csvs:
            return load_image_set(str(dest / csvs[0].name), images_root=str(dest))
        return load_image_set(str(dest))

    def _check_pixels(self, folder: Path) -> None:
        """Public mode: refuse any uploaded image above the public pixel limit, from its header (no decoding)."""
        limit = self.limits.max_pixels
        if limit is None:
            return
        from evaluators.imageio import image_size

        for p in sorted(folder.rglob("*")):
            if not p.is_file() or p.suffix.lower() == ".csv" or p.name.startswith("._"):
                continue
            try:
                w, h = image_size(p)
            except InputError as exc:  # unreadable, or beyond Pillow's own bomb guard
                raise InputError(f"{p.relative_to(folder)}: {exc}") from None
            if w * h > limit:
                raise InputError(
                    f"{p.relative_to(folder)} is {w}x{h} = {w * h:,} pixels; this public app accepts at most "
                    f"{limit:,} pixels per image (CHEXGEN_PUBLIC_MAX_PIXELS). Downscale the image and upload again."
                )

    def synthetic_from_folder(self, folder: str) -> object:
        """A server folder or CSV (local mode only)."""
        if self.public:
            raise InputError("Server paths are disabled in public mode; upload a zip or a CSV with images.")
        from evaluators.imagesets import load_image_set

        if not folder or not str(folder).strip():
            raise InputError("Type the path of a folder of images or a CSV on this machine.")
        return load_image_set(str(folder).strip())

    def synthetic_from_model(self, model: str, n: int, seed: int = 0, steps: int | None = None,
                             guidance: float | None = None, *, session: str | None = None,
                             progress: Progress | None = None) -> object:
        """Generate ``n`` images from ``model`` with reference prompts; write PNGs + metadata.csv; load them."""
        n = int(n)
        if not 1 <= n <= self.limits.max_generate_set:
            raise InputError(f"Number of images must be between 1 and {self.limits.max_generate_set} (got {n}).")
        steps = limits.check("steps", steps, self.public) if steps else None
        self.quota.check(session, 0, "Generating a synthetic set")
        return rgen.synthetic_set(self.ctx, self._generators.get(model), model, n,
                                  subdir("synthetic") / session_folder(session), seed=seed, steps=steps,
                                  guidance=guidance, progress=progress)

    # ---- fidelity, privacy (evaluators.runs: the same jobs and the same save as the CLI)
    def run_fidelity(self, synthetic, *, model: str | None = None, per_pathology: bool = True,
                     bootstrap: int = 0, min_count: int = 10, kid_subsets: int = 100, session: str | None = None,
                     progress: Progress | None = None, preprocess: str = "auto", fd_inf: bool = False) -> FidelityRun:
        """Fidelity of ``synthetic`` against the reference index; saved to the results store and to files.
        ``preprocess``: auto / clean / chexgenbench (:mod:`evaluators.encoders.chexgenbench`); ``fd_inf``: the
        opt-in FD_inf too."""
        from evaluators.runs import FidelityConfig, fidelity

        bootstrap = limits.check("bootstrap", bootstrap, self.public)
        kid_subsets = limits.check("kid_subsets", min(int(kid_subsets), limits.maximum("kid_subsets", self.public))
                                   if kid_subsets == 100 else kid_subsets, self.public)  # the default fits any limit
        if int(min_count) < 1:
            raise InputError(f"Min images per pathology must be at least 1; got {min_count}.")
        self.quota.check(session, 0, "This fidelity job")
        config = FidelityConfig(per_pathology=per_pathology, bootstrap=int(bootstrap), min_count=int(min_count),
                                kid_subsets=int(kid_subsets), k=PRDC_K, preprocess=preprocess or "auto",
                                include=("FD_inf",) if fd_inf else ())
        with self.partial_on_failure("fidelity", synthetic, model=model, session=session, settings=config.settings()):
            run = fidelity.run(self.ctx, synthetic, config, progress=progress)
        saved = self._save(run, synthetic, model=model, session=session, csv=True)
        result = run.data
        return FidelityRun(result, overall_table(result), per_pathology_table(result), counts_table(result),
                           saved.csv_path, saved.json_path, saved.run_id)

    def run_privacy(self, synthetic, *, model: str | None = None, session: str | None = None,
                    progress: Progress | None = None) -> PrivacyRun:
        """The engine's privacy suite (memorisation search + re-ID) on a synthetic set; saved to the store."""
        from evaluators.runs import PrivacyConfig, privacy

        self.quota.check(session, 0, "This privacy job")
        config = PrivacyConfig(percentile=CALIBRATION_PERCENTILE)
        with self.partial_on_failure("privacy", synthetic, model=model, session=session, settings={}):
            run = privacy.run(self.ctx, synthetic, config, progress=progress)
        saved = self._save(run, synthetic, model=model, session=session)
        result = run.data
        per_path = pd.DataFrame(result["summary"].get("per_pathology") or [])
        if per_path.empty:  # an empty table would show Gradio's placeholder headers "1 2 3": say why instead
            per_path = pd.DataFrame({"note": ["no per-pathology rates: no synthetic image is labelled positive for a "
                                              "pathology (a set without label columns or prompts has no labels)"]})
        top = privacy_image_table(result)
        return PrivacyRun(result, per_path.round(4), top.round(4), saved.json_path, saved.run_id)

    def ct_cells(self, *, run_id: int | None = None, session: str | None = None, progress: Progress | None = None):
        """The C_T cells of privacy run ``run_id`` (default: the newest on this reference that ``session`` sees) for
        the Embedding map (:func:`evaluators.runs.ct_map.from_store`)."""
        from evaluators.runs import ct_map

        return ct_map.from_store(self.ctx, self.store(), self.reference, session=self._visible_session(session),
                                 run_id=run_id, progress=progress)

    def _save(self, run, synthetic, *, model: str | None, session: str | None, csv: bool = False):
        """The run layer's one save: ``runs/<session>/<kind>-<time>/<kind>.json`` (+ CSV) and a store row."""
        from evaluators.runs import run_folder, save

        out = run_folder(run.kind, session)
        return save(run, json_path=out / f"{run.kind}.json", csv_path=out / f"{run.kind}.csv" if csv else None,
                    store=self.store(), model=model or "upload", synthetic=synthetic.name, reference=self.reference,
                    session=session)

    def partial_on_failure(self, kind: str, synthetic, *, model: str | None, session: str | None, settings: dict,
                           note: str | None = None):
        """A job that fails or is cancelled leaves a ``partial`` row in the results store (evaluators.runs.save)."""
        from evaluators.runs import partial_on_failure
        from evaluators.runs.save import PARTIAL_NOTE

        return partial_on_failure(kind, synthetic, store=self.store(), model=model or "upload",
                                  reference=self.reference, session=session, settings=settings,
                                  note=note or PARTIAL_NOTE)

    # ---- leaderboard
    def _visible_session(self, session: str | None) -> str | None:
        """Public mode: a session sees its own runs plus the shared ones (saved without a session, e.g. the
        operator's CLI runs); a request without a session sees only the shared ones. Local mode: everything."""
        if not self.public:
            return None
        return session or "\0no-session"

    def leaderboard(self, kind: str | None = None, session: str | None = None) -> pd.DataFrame:
        return leaderboard.leaderboard(self.store(), kind, self._visible_session(session))

    def compare_runs(self, a: int, b: int, session: str | None = None) -> pd.DataFrame:
        """Two runs side by side (public mode: only runs this session sees)."""
        return leaderboard.compare_runs(self.store(), a, b, self._visible_session(session))

    # ---- setup
    def reference_summary(self) -> str:
        from evaluators.runs.summary import reference_summary

        return "\n\n".join(reference_summary(self.ctx, "public mode" if self.public else None))
