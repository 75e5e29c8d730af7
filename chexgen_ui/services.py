"""App services: thin wrappers around the engine that the Gradio callbacks (and the CLI) call.

A :class:`Studio` holds what one running app shares between sessions: the reference set, its reference
index (built lazily on first use, under a lock, under ``CHEXGEN_HOME/indexes``), the encoder that built it,
loaded generators, the memorisation search with its calibrated threshold, and the results store.
Nothing here imports Gradio; every user-facing problem is an :class:`InputError` / :class:`UnavailableError`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import stat
import threading
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evaluators import limits, settings
from evaluators.errors import InputError, UnavailableError
from evaluators.pathologies import INDEX as LABEL_INDEX
from evaluators.pathologies import PATHOLOGIES, positives
from evaluators.runs.save import session_folder
from evaluators.settings import chexgen_home, subdir
from evaluators.store import finite

from .display import to_uint8
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
CALIBRATION_PERCENTILE = 99.0

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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "set"


@dataclass
class Generated:
    """Images from one Generate click, with everything the inspection views show about them."""

    model: str
    images: list[np.ndarray]
    prompts: list[str]
    seeds: list[int]
    settings: dict
    neighbours: list[list] = field(default_factory=list)  # per image: list[Neighbour]
    top1: np.ndarray | None = None  # encoder cosine similarity to the nearest training image
    copy_score: np.ndarray | None = None  # the memorisation search's copy score (aligned pixel match)
    match_row: np.ndarray | None = None  # the training row it matched (index row), -1 for none
    threshold: float | None = None
    flags: np.ndarray | None = None
    copy_p_value: np.ndarray | None = None  # the search's p-value per image, when the engine gives one
    umap: np.ndarray | None = None  # [N, 2] map positions, or None when the index has no map
    reid: list[float | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    session: str | None = None  # whose images these are (exports go to that session's folder)

    def __len__(self) -> int:
        return len(self.images)


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
    """Everything the app computes, behind small methods with plain inputs and outputs."""

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
        self._gen_lock = threading.Lock()
        self._generators: dict[str, object] = {}

    # ---- basics (the reference side lives in self.ctx: evaluators.runs.RunContext)
    @property
    def device(self) -> str:
        return self.ctx.device

    @property
    def notes(self) -> list[str]:
        return self.ctx.notes

    def store(self):
        from evaluators.store import ResultsStore

        return ResultsStore(self._store_path)

    def reference_set(self):
        return self.ctx.reference_set()

    def encoder(self):
        """The encoder of the reference index: CHEXGEN_APP_ENCODER, else the best available one (falling back to
        ``pixels`` with a note on the Setup tab when the best one cannot load here)."""
        return self.ctx.encoder()

    def index_dir(self) -> Path:
        return self.ctx.index_dir()

    def index(self, progress: Progress | None = None):
        """The reference index, built on first use (visible progress) and loaded from disk afterwards."""
        if not self.ctx.index_built:
            log.info("loading or building the reference index for %s under %s", self.reference, self.index_dir())
        return self.ctx.index(progress)

    # ---- catalogue
    def models(self) -> list[dict]:
        from evaluators.generators import list_models

        return list_models()

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for a dropdown; unavailable models are labelled as such. Available first."""
        rows = sorted(self.models(), key=lambda r: (not r["available"], r["kind"] != "builtin", r["name"]))
        return [(f"{r['name']}" + ("" if r["available"] else " (unavailable)"), r["name"]) for r in rows]

    def default_model(self) -> str | None:
        rows = self.models()
        for pref in ("demo", "reference-oracle", "copycat"):
            if any(r["name"] == pref and r["available"] for r in rows):
                return pref
        ready = [r for r in rows if r["available"] and r["kind"] == "builtin"]
        ready = ready or [r for r in rows if r["available"]]
        return ready[0]["name"] if ready else (rows[0]["name"] if rows else None)

    def model_presets(self, name: str) -> dict:
        for r in self.models():
            if r["name"] == name:
                return dict(r["presets"] or {})
        raise InputError(f"Unknown model {name!r}; choose one from the list (see the Setup tab).")

    def model_status(self, name: str) -> str:
        for r in self.models():
            if r["name"] == name:
                if r["available"]:
                    return f"**{name}** is available ({r['reason'] or r['kind']})."
                how = f" To provide it: {r['how_to_provide']}" if r.get("how_to_provide") else ""
                return f"**{name}** is unavailable: {r['reason']}.{how}"
        return f"Unknown model {name!r}."

    def models_table(self) -> pd.DataFrame:
        rows = [{"model": r["name"], "kind": r["kind"], "available": "yes" if r["available"] else "no",
                 "reason": r["reason"], "how to provide": r.get("how_to_provide", ""),
                 "weights": r.get("weights") or "", "defined in": r.get("source", "")} for r in self.models()]
        return pd.DataFrame(rows)

    def encoders_table(self) -> pd.DataFrame:
        from evaluators.encoders import list_encoders

        rows = [{"encoder": r["name"], "available": "yes" if r["available"] else "no", "dim": r["dim"],
                 "reason": r["reason"], "how to provide": r["how_to_provide"], "description": r["description"]}
                for r in list_encoders()]
        return pd.DataFrame(rows)

    # ---- prompts
    def example_prompts(self, pathology: str, n_reference: int = 3, seed: int = 0) -> list[str]:
        """A composed report-style prompt for ``pathology``, then up to ``n_reference`` real reference reports
        positive for it (the model was trained on text like these)."""
        from evaluators.pathologies import resolve_pathology
        from evaluators.reports import example_prompt

        name = resolve_pathology(pathology)
        rng = np.random.default_rng(seed)
        out = [example_prompt(name, rng)]
        try:
            ref = self.reference_set()
        except (InputError, UnavailableError):
            return out
        pos = np.flatnonzero(ref.labels[:, LABEL_INDEX[name]] == 1.0)
        prompts = ref.prompts
        seen: set[str] = set(out)
        for i in rng.permutation(pos):
            p = prompts[int(i)]
            if isinstance(p, str) and p.strip() and p not in seen:
                seen.add(p)
                out.append(p)
            if len(out) > n_reference:
                break
        return out

    # ---- generation
    def generator(self, name: str):
        """A loaded generator (cached). A model that fails to load raises UnavailableError with the reason;
        the failure is not cached, so the app keeps serving the other models and a retry tries again."""
        with self._gen_lock:
            if name not in self._generators:
                from evaluators.generators import load_generator

                try:
                    self._generators[name] = load_generator(name, device=self.device)
                except (InputError, UnavailableError):
                    raise
                except Exception as exc:  # a broken checkpoint, missing package, out of memory...
                    log.exception("model %s failed to load", name)
                    raise UnavailableError(
                        f"Model {name!r} failed to load: {type(exc).__name__}: {exc}. The other models still "
                        "work; check the model's files and entry (Setup tab lists where they are looked for)."
                    ) from exc
            return self._generators[name]

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
        gen = self.generator(model)
        seeds = [int(seed) + i for i in range(n)]
        steps = int(steps) if steps else None
        guidance = float(guidance) if guidance is not None else None

        def gen_progress(done: int, total: int) -> None:
            if progress:
                progress(done, total, f"generating with {model}")

        images = gen.generate([prompt], seeds, steps=steps, guidance=guidance, progress=gen_progress)
        settings = {"prompt": prompt, "seeds": seeds, "steps": steps or gen.presets.get("steps"),
                    "guidance": guidance if guidance is not None else gen.presets.get("guidance"),
                    "device": self.device}
        out = Generated(model=model, images=images, prompts=[prompt] * n, seeds=seeds, settings=settings,
                        notes=list(getattr(gen, "messages", []) or []), session=session)
        self.inspect(out, k=k, progress=progress)
        return out

    def inspect(self, gen: Generated, *, k: int = 5, progress: Progress | None = None) -> Generated:
        """Nearest reference images, memorisation flags, UMAP positions and re-ID scores of generated images.

        The flags come from the engine's memorisation search (the same object the ``privacy`` CLI uses).
        """
        from evaluators.features import extract_features
        from evaluators.index import top1_similarity

        index = self.index(progress)
        feats = extract_features(list(gen.images), self.encoder(), show_progress=False).features
        try:
            found = self.search().check(list(gen.images), feats, k)
            gen.neighbours = found.neighbours
            gen.copy_score, gen.match_row = found.copy_score, found.match_row
            gen.threshold, gen.flags = found.threshold, found.flagged
            pv = getattr(found, "p_values", None)
            gen.copy_p_value = None if pv is None else np.asarray(pv, dtype=np.float64)
        except InputError as exc:
            gen.neighbours = index.neighbours(feats, k)
            gen.notes.append(f"memorisation threshold unavailable: {exc}")
        gen.top1 = top1_similarity(gen.neighbours)
        gen.umap = index.umap_transform(feats) if index.has_umap else None
        gen.reid = self.reid_scores(gen)
        return gen

    # ---- memorisation search and re-ID (engine: evaluators.runs.RunContext)
    def search(self):
        """The engine's memorisation search for this reference (calibrated once, cached next to the index)."""
        return self.ctx.search(percentile=CALIBRATION_PERCENTILE)

    def calibration(self) -> dict:
        """The memorisation threshold and how it was calibrated (the engine's calibration dict)."""
        return self.search().calibration

    def reid_choice(self):
        """The engine's re-ID choice for the reference set (evaluators.privacy.reid_choice): the demo model only on
        the demo world; else CheXGenBench's checkpoint, else one trained on the reference; with its held-out AUC."""
        return self.ctx.reid_choice("auto")

    def reid_model(self):
        """The chosen re-ID model, or None with :meth:`reid_status` saying why."""
        return self.reid_choice().model

    def reid_status(self, short: bool = False) -> str:
        from evaluators.runs.privacy import reid_status

        return reid_status(self.reid_choice(), short)

    def reid_calibration(self) -> dict:
        """The re-ID threshold of a "same patient" verdict (evaluators.privacy.reid_choice.calibrate_reid), cached."""
        return self.ctx.reid_calibration(self.search(), self.reid_choice())

    def train_reid(self, *, epochs: int = 5, progress: Progress | None = None, **settings) -> dict:
        """Train a re-ID model on the reference set's patients where the default choice finds it (resumable: a
        stopped run continues from its last epoch); the app uses it from then on unless a preferred one exists."""
        from evaluators.privacy.reid import train_reid

        result = train_reid(self.reference_set(), epochs=int(epochs), device=self.device, progress=progress,
                            **settings)  # settings: train_reid's (pairs_per_epoch, batch_size, backbone...)
        self.ctx.forget_reid()
        return result

    def domain_notes(self) -> list[str]:
        """What makes this app's numbers incomparable elsewhere (the demo encoder on images that are not the demo
        world), from evaluators.domain."""
        return self.ctx.domain_notes()

    def reid_scores(self, gen: Generated) -> list[float | None]:
        """Re-ID score of each image against its matched training image (else its nearest by encoder)."""
        model = self.reid_model()
        if model is None or not gen.neighbours:
            return [None] * len(gen)
        from evaluators.privacy.suite import reid_vs_rows

        index = self.index()
        rows = gen.match_row
        if rows is None:
            rows = np.array([nb[0].row if nb else -1 for nb in gen.neighbours], dtype=np.int64)
        scores = reid_vs_rows(model, index.meta["path"].astype(str).to_numpy(), list(gen.images), rows)
        return [None if not np.isfinite(s) else float(s) for s in scores]

    # ---- per-image views
    def neighbour_table(self, gen: Generated, i: int) -> pd.DataFrame:
        rows = []
        for rank, nb in enumerate(gen.neighbours[i], 1):
            rows.append({"rank": rank, "similarity": round(nb.similarity, 4), "patient": nb.patient_id or "",
                         "labels": ", ".join(nb.labels) or "(none)", "report": nb.prompt})
        return pd.DataFrame(rows, columns=["rank", "similarity", "patient", "labels", "report"])

    def neighbour_images(self, gen: Generated, i: int) -> list[tuple[np.ndarray, str]]:
        from evaluators.imageio import read_image

        out = []
        for rank, nb in enumerate(gen.neighbours[i], 1):
            out.append((to_uint8(read_image(nb.path)), f"#{rank} sim {nb.similarity:.3f} · patient {nb.patient_id}"))
        return out

    def image_verdict(self, gen: Generated, i: int):
        """The engine's one verdict for image ``i`` (evaluators.privacy.verdict.decide)."""
        from evaluators.privacy.verdict import decide

        choice = self.reid_choice()
        score = gen.reid[i] if i < len(gen.reid) else None
        cal = self.reid_calibration() if score is not None else {}
        return decide(reid_threshold=cal.get("threshold") if cal.get("available") else None,copy_score=None if gen.copy_score is None else gen.copy_score[i], threshold=gen.threshold,
                      flagged=None if gen.flags is None else bool(gen.flags[i]),
                      copy_p_value=None if gen.copy_p_value is None else gen.copy_p_value[i], reid_score=score,
                      reid_model=choice.name if choice.available else None, reid_auc=choice.auc)

    def verdict(self, gen: Generated, i: int) -> str:
        """One memorisation / re-ID verdict for image ``i`` with its evidence (markdown)."""
        v = self.image_verdict(gen, i)
        lines = [f"**Verdict: {v.decision}.** {v.reason[0].upper() + v.reason[1:]}"]
        top1 = float(gen.top1[i]) if gen.top1 is not None else float("nan")
        if gen.threshold is not None and gen.copy_score is not None:
            match = ""
            if gen.match_row is not None and gen.match_row[i] >= 0:
                row = self.index().meta.iloc[int(gen.match_row[i])]
                match = f" against training image {Path(str(row['path'])).name} (patient {row.get('patient_id', '')})"
            cal = self.calibration()
            pv = "" if v.copy_p_value is None else f", p-value {v.copy_p_value:.3g}"
            lines.append(
                f"- Copy score {gen.copy_score[i]:.4f}{match}{pv}; threshold {gen.threshold:.4f} (conformal "
                f"{cal.get('percentile', CALIBRATION_PERCENTILE):g}th percentile of {cal.get('n', '?')} calibration "
                f"scores: {cal.get('source', 'held-out real images')}). Nearest by encoder: similarity {top1:.4f}.")
        else:
            lines.append(f"- Nearest training image similarity {top1:.4f}; no calibrated threshold ("
                         + "; ".join(gen.notes) + ").")
        choice = self.reid_choice()
        if v.reid_score is None:
            lines.append("- " + self.reid_status() + ".")
        else:
            used = "" if v.reid_used else " (not used for the verdict)"
            rc = self.reid_calibration()
            thr = (f"; same patient above {rc['threshold']:.3f} (from {rc['n']} held-out patients' images)"
                   if rc.get("available") else "")
            lines.append(f"- Re-ID score {v.reid_score:.3f} against the matched training image by {choice.name}, "
                         f"verification AUC {choice.auc_text} on held-out patients of this training set{thr}{used}.")
        lines += [f"- {n}" for n in self.domain_notes()]
        return "\n".join(lines)

    def evidence_image(self, gen: Generated, i: int) -> np.ndarray | None:
        """synthetic | matched training image aligned | overlay | difference (evaluators.privacy.evidence)."""
        from evaluators.imageio import read_image
        from evaluators.privacy.evidence import evidence_panel

        row = -1 if gen.match_row is None else int(gen.match_row[i])
        if row < 0 and gen.neighbours and gen.neighbours[i]:
            row = int(gen.neighbours[i][0].row)
        if row < 0:
            return None
        return evidence_panel(gen.images[i], read_image(str(self.index().meta["path"].iloc[row])))

    def export_zip(self, gen: Generated, out_dir: str | os.PathLike | None = None) -> Path:
        """A zip with one PNG per generated image and ``metadata.csv`` (prompt, seed, model, settings, checks)."""
        from PIL import Image

        out = Path(out_dir) if out_dir else subdir("exports") / session_folder(gen.session)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{_slug(gen.model)}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.zip"
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["img_savename", "prompt", "seed", "model", "steps", "guidance", "nearest_similarity",
                    "nearest_patient", "copy_score", "memorisation_flag", "reid_score", "reid_model", "reid_auc",
                    "verdict"])
        choice = self.reid_choice()
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for i, img in enumerate(gen.images):
                name = f"{i:04d}_seed{gen.seeds[i]}.png"
                png = io.BytesIO()
                Image.fromarray(to_uint8(img)).save(png, format="PNG")
                zf.writestr(name, png.getvalue())
                nb = gen.neighbours[i][0] if gen.neighbours and gen.neighbours[i] else None
                w.writerow([name, gen.prompts[i], gen.seeds[i], gen.model, gen.settings.get("steps"),
                            gen.settings.get("guidance"), f"{nb.similarity:.6f}" if nb else "",
                            nb.patient_id if nb else "",
                            f"{gen.copy_score[i]:.6f}" if gen.copy_score is not None else "",
                            bool(gen.flags[i]) if gen.flags is not None else "",
                            "" if not gen.reid or gen.reid[i] is None else f"{gen.reid[i]:.6f}",
                            choice.name if choice.available else "", choice.auc_text if choice.available else "",
                            self.image_verdict(gen, i).decision])
            zf.writestr("metadata.csv", buf.getvalue())
        return path

    # ---- embedding map
    def map_points(self) -> pd.DataFrame:
        """The reference images on the UMAP map: x, y, a colour group, the labels and the report."""
        index = self.index()
        xy = index.umap_coords
        labels = index.labels
        meta = index.meta
        groups, label_text = [], []
        for row in labels:
            pos = positives(row)
            label_text.append(", ".join(pos) or "(none)")
            findings = [p for p in pos if p not in ("No Finding", "Support Devices")]
            groups.append(findings[0] if len(findings) == 1 else ("Multiple findings" if findings else
                          ("No Finding" if "No Finding" in pos else "Other / unlabelled")))
        return pd.DataFrame({
            "x": xy[:, 0], "y": xy[:, 1], "group": groups, "labels": label_text,
            "report": meta["prompt"].fillna("").astype(str).tolist(),
            "patient": meta["patient_id"].fillna("").astype(str).tolist(),
            "path": meta["path"].astype(str).tolist(),
        })

    def reference_image(self, row: int) -> tuple[np.ndarray, str]:
        from evaluators.imageio import read_image

        index = self.index()
        if not 0 <= int(row) < len(index):
            raise InputError(f"Reference row {row} is out of range (0..{len(index) - 1}).")
        m = index.meta.iloc[int(row)]
        labels = ", ".join(positives(index.labels[int(row)])) or "(none)"
        caption = f"reference #{row} · patient {m['patient_id']} · {labels}\n\n{m['prompt']}"
        return to_uint8(read_image(str(m["path"]))), caption

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

    def reference_prompts(self, n: int, seed: int = 0) -> pd.DataFrame:
        """``n`` reference rows (prompt + labels) drawn without replacement (with, once exhausted)."""
        ref = self.reference_set()
        rng = np.random.default_rng(seed)
        rows = rng.permutation(len(ref))
        if n > len(rows):
            rows = np.concatenate([rows, rng.integers(0, len(ref), n - len(rows))])
        return ref.table.iloc[rows[:n]].reset_index(drop=True)

    def synthetic_from_model(self, model: str, n: int, seed: int = 0, steps: int | None = None,
                             guidance: float | None = None, *, session: str | None = None,
                             progress: Progress | None = None) -> object:
        """Generate ``n`` images from ``model`` with reference prompts; write PNGs + metadata.csv; load them."""
        from PIL import Image

        from evaluators.imagesets import load_image_set

        n = int(n)
        if not 1 <= n <= self.limits.max_generate_set:
            raise InputError(f"Number of images must be between 1 and {self.limits.max_generate_set} (got {n}).")
        steps = limits.check("steps", steps, self.public) if steps else None
        self.quota.check(session, 0, "Generating a synthetic set")
        gen = self.generator(model)
        rows = self.reference_prompts(n, seed)
        prompts = rows["prompt"].fillna("").astype(str).tolist()
        seeds = [int(seed) + i for i in range(n)]

        def gen_progress(done: int, total: int) -> None:
            if progress:
                progress(done, total, f"generating {total} images with {model}")

        images = gen.generate(prompts, seeds, steps=int(steps) if steps else None,
                              guidance=float(guidance) if guidance is not None else None, progress=gen_progress)
        out = subdir("synthetic") / session_folder(session) / f"{_slug(model)}-n{n}-seed{seed}-{uuid.uuid4().hex[:6]}"
        out.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame({"path": [f"{i:05d}.png" for i in range(n)], "prompt": prompts, "seed": seeds})
        for p in PATHOLOGIES:
            table[p] = rows[p].to_numpy()
        for name, img in zip(table["path"], images):
            Image.fromarray(to_uint8(img)).save(out / name)
        table.to_csv(out / "metadata.csv", index=False)
        return load_image_set(str(out / "metadata.csv"), images_root=str(out))

    # ---- fidelity, privacy (evaluators.runs: the same jobs and the same save as the CLI)
    def run_fidelity(self, synthetic, *, model: str | None = None, per_pathology: bool = True,
                     bootstrap: int = 0, min_count: int = 10, kid_subsets: int = 100, session: str | None = None,
                     progress: Progress | None = None, preprocess: str = "auto") -> FidelityRun:
        """Fidelity of ``synthetic`` against the reference index; saved to the results store and to files.
        ``preprocess``: auto / clean / chexgenbench (:mod:`evaluators.encoders.chexgenbench`)."""
        from evaluators.runs import FidelityConfig, fidelity

        bootstrap = limits.check("bootstrap", bootstrap, self.public)
        kid_subsets = limits.check("kid_subsets", min(int(kid_subsets), limits.maximum("kid_subsets", self.public))
                                   if kid_subsets == 100 else kid_subsets, self.public)  # the default fits any limit
        if int(min_count) < 1:
            raise InputError(f"Min images per pathology must be at least 1; got {min_count}.")
        self.quota.check(session, 0, "This fidelity job")
        config = FidelityConfig(per_pathology=per_pathology, bootstrap=int(bootstrap), min_count=int(min_count),
                                kid_subsets=int(kid_subsets), k=PRDC_K, preprocess=preprocess or "auto")
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
        top = privacy_image_table(result)
        return PrivacyRun(result, per_path.round(4), top.round(4), saved.json_path, saved.run_id)

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
        rows = []
        for r in self.store().runs(kind=kind or None, session=self._visible_session(session)):
            s = r["settings"] or {}
            row = {"id": r["id"], "date": r["created"], "kind": r["kind"], "model": r["model"] or "",
                   "synthetic": r["synthetic"] or "", "status": r["status"], "preprocess": r.get("preprocess") or "",
                   "settings": ", ".join(f"{k}={v}" for k, v in s.items() if not isinstance(v, dict | list))}
            row.update({k: finite(v) for k, v in (r["metrics"] or {}).items()})
            rows.append(row)
        return pd.DataFrame(rows)

    @staticmethod
    def run_choices(board: pd.DataFrame) -> tuple[list[tuple[str, int]], int | None, int | None]:
        """(picker choices, run A, run B) for the side-by-side view: every run in the table, newest first,
        named by id, kind, model and date. Preselected: the newest run that has an earlier run of its kind
        (B) and that earlier run (A), the pair a user most often compares; with no such pair, the newest
        run as B and A left empty (runs of different kinds share few fields)."""
        if board.empty:
            return [], None, None
        runs = board.sort_values("id", ascending=False)
        choices = [(f"#{r.id} {r.kind} · {r.model or '-'} · {str(r.date)[:16]}", int(r.id)) for r in runs.itertuples()]
        paired = runs[runs.duplicated("kind", keep="last")]  # newest first: runs with an earlier run of their kind
        if paired.empty:
            return choices, None, int(runs["id"].iloc[0])
        b = paired.iloc[0]
        a = runs[(runs["kind"] == b["kind"]) & (runs["id"] < b["id"])].iloc[0]
        return choices, int(a["id"]), int(b["id"])

    def compare_runs(self, a: int, b: int, session: str | None = None) -> pd.DataFrame:
        """Two runs side by side: every setting and metric as a row (public mode: only runs this session sees)."""
        store = self.store()
        ra, rb = store.get(int(a)), store.get(int(b))
        visible = self._visible_session(session)
        for rid, r in ((a, ra), (b, rb)):
            if r is None or (visible is not None and r["session"] not in (None, visible)):
                raise InputError(f"No run with id {rid} in the results store ({store.path}).")
        keys = ["kind", "model", "synthetic", "reference", "created", "status"]
        rows = [{"field": k, f"run {a}": ra[k], f"run {b}": rb[k]} for k in keys]
        for k in dict.fromkeys([*ra["settings"], *rb["settings"]]):
            rows.append({"field": f"setting: {k}", f"run {a}": str(ra["settings"].get(k, "")),
                         f"run {b}": str(rb["settings"].get(k, ""))})
        for k in dict.fromkeys([*ra["metrics"], *rb["metrics"]]):
            rows.append({"field": k, f"run {a}": ra["metrics"].get(k), f"run {b}": rb["metrics"].get(k)})
        return pd.DataFrame(rows).astype({f"run {a}": object, f"run {b}": object})

    # ---- setup
    def reference_summary(self) -> str:
        lines = [f"Reference set: `{self.reference}`"]
        try:
            d = self.reference_set().describe()
            lines.append(f"Images: {d['n_images']}; patients: {d['n_patients']}; splits: {d['splits']}")
        except (InputError, UnavailableError) as exc:
            lines.append(f"Not loaded: {exc}")
        if self.ctx.index_built:
            index = self.index()
            lines.append(f"Index: `{index.dir}` (encoder {index.encoder}, {len(index)} images)")
        else:
            lines.append("Index folder: (not built yet)")
        from evaluators.space import hf_token, zero_gpu

        lines.append(f"CHEXGEN_HOME: `{chexgen_home()}` · device: {self.device}"
                     + (" (ZeroGPU)" if zero_gpu() else "")
                     + f" · Hub token (HF_TOKEN, for gated models): {'set' if hf_token() else 'not set'}"
                     + (" · public mode" if self.public else ""))
        return "\n\n".join(lines + [f"Note: {n}" for n in self.notes])
