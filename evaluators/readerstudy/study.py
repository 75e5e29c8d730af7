"""Blinded reader studies: create a study, give readers codes, serve blinded images, save answers as given.

Everything lives in ``CHEXGEN_HOME/reader_studies/``: ``studies.sqlite`` (WAL; one row per (reader, image)
answer, updated field by field as the reader answers, so a closed tab or a restarted server loses nothing)
and ``<study id>/<opaque id>.png``, the re-encoded images.

Blinding: every image of a study is read, resampled (bicubic, :func:`evaluators.imageio.resize`) to one
``size x size`` for real and synthetic alike (non-square images cut to their central square first), and written as an 8-bit gray PNG with no text, time or EXIF
chunk under a random opaque id (``secrets.token_urlsafe``). The truth (source set, path, labels, native
size) is kept in the database and never reaches a reader; a reader's code opens only their own study and
their own answers (:class:`Reader`).
"""

from __future__ import annotations

import io
import json
import re
import secrets
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..pathologies import PATHOLOGIES, resolve_pathology
from ..settings import subdir

QUESTIONS = ("real_synthetic", "findings", "quality", "comment")
DEFAULT_SIZE = 256
MAX_IMAGES = 2000
MAX_READERS = 50

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created TEXT NOT NULL, settings TEXT NOT NULL, notes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    study_id TEXT NOT NULL, item_id TEXT NOT NULL, truth TEXT NOT NULL, source TEXT NOT NULL, model TEXT,
    source_path TEXT NOT NULL, labels TEXT NOT NULL, native_w INTEGER, native_h INTEGER,
    PRIMARY KEY (study_id, item_id)
);
CREATE TABLE IF NOT EXISTS readers (
    code TEXT PRIMARY KEY, study_id TEXT NOT NULL, name TEXT NOT NULL, item_order TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    code TEXT NOT NULL, item_id TEXT NOT NULL, call TEXT, confidence INTEGER, findings TEXT, quality INTEGER,
    comment TEXT, updated TEXT NOT NULL, PRIMARY KEY (code, item_id)
);
"""


def studies_dir() -> Path:
    return subdir("reader_studies")


def _connect() -> sqlite3.Connection:
    con = sqlite3.connect(studies_dir() / "studies.sqlite", timeout=30.0)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")  # an answer acknowledged is on disk
    con.execute("PRAGMA busy_timeout=30000")
    con.row_factory = sqlite3.Row
    con.executescript(SCHEMA)
    return con


def parse_mix(spec: str | dict | None) -> dict[str, float]:
    """``"Cardiomegaly=0.25,Pleural Effusion=0.25"`` (or a dict) -> {pathology: fraction}; fractions sum <= 1."""
    if not spec:
        return {}
    items = spec.items() if isinstance(spec, dict) else (
        part.split("=", 1) if "=" in part else (part, "") for part in str(spec).split(",") if part.strip())
    mix: dict[str, float] = {}
    for name, frac in items:
        p = resolve_pathology(str(name).strip())
        try:
            f = float(frac)
        except (TypeError, ValueError):
            raise InputError(f"Pathology mix entry {name!r} needs a fraction, e.g. '{p}=0.25'.") from None
        if not 0 < f <= 1:
            raise InputError(f"Pathology mix fraction for {p} is {f}; use a number in (0, 1].")
        mix[p] = f
    if sum(mix.values()) > 1 + 1e-9:
        raise InputError(f"Pathology mix fractions sum to {sum(mix.values()):.2f}; they must sum to at most 1.")
    return mix


def _draw(image_set, n: int, mix: dict[str, float], rng: np.random.Generator, what: str) -> list[int]:
    """``n`` row indices of ``image_set``: round(frac * n) positives of each mixed pathology, the rest at random."""
    if n > len(image_set):
        raise InputError(f"The {what} set {image_set.name!r} has {len(image_set)} images; the study asks for {n} "
                         "from it. Lower --n-images or add images.")
    labels = image_set.labels
    chosen: list[int] = []
    free = np.ones(len(image_set), dtype=bool)
    for p, frac in mix.items():
        k = round(frac * n)
        pool = np.flatnonzero(free & (labels[:, PATHOLOGIES.index(p)] == 1))
        if k > pool.size:
            raise InputError(f"The {what} set {image_set.name!r} has {pool.size} unused images positive for {p}; "
                             f"the mix asks for {k}. Lower the fraction or --n-images.")
        pick = rng.choice(pool, size=k, replace=False).tolist()
        chosen += pick
        free[pick] = False
    rest = n - len(chosen)
    chosen += rng.choice(np.flatnonzero(free), size=rest, replace=False).tolist()
    return [int(i) for i in chosen]


def center_square(img: np.ndarray) -> np.ndarray:
    """The central square of an image (its shorter side): non-square sources must not stand out by shape,
    and stretching would distort anatomy."""
    h, w = img.shape
    k = min(h, w)
    top, left = (h - k) // 2, (w - k) // 2
    return img[top:top + k, left:left + k]


def png_bytes(img: np.ndarray) -> bytes:
    """8-bit gray PNG with no ancillary chunks (PIL writes none unless given pnginfo/exif)."""
    from PIL import Image

    from ..imageio import to_uint8

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def create_study(reference, synthetic: list, *, n_images: int = 40, readers: int | list[str] = 2,
                 mix: str | dict | None = None, questions: tuple[str, ...] = QUESTIONS, size: int | None = None,
                 seed: int = 0, name: str | None = None, models: list[str] | None = None,
                 reference_name: str | None = None) -> dict:
    """Draw a balanced, shuffled, blinded sample and register readers; returns the study with reader codes.

    ``n_images`` (even): half real images from ``reference``, half synthetic split as evenly as possible over the
    ``synthetic`` sets. ``mix`` applies to each side. ``size``: the one served size (default: the largest square
    side in the sample, so no image is shrunk below another's detail). ``models``: a model name per synthetic
    set (default: the set's name), used for the results-store row. ``reference_name``: how the study records the
    reference (default: its path or spec; the app passes its reference spec, so the leaderboard lines the study up
    with the app's automatic runs on the same reference). Each reader sees the images in their own seeded order.
    """
    from ..imageio import resize
    from ..imagesets import load_image_set

    if not isinstance(synthetic, list | tuple) or not synthetic:
        raise InputError("Give one or more synthetic sets (folders, CSV files or PATH@SPLIT).")
    if not isinstance(n_images, int) or n_images < 2 or n_images % 2 or n_images > MAX_IMAGES:
        raise InputError(f"--n-images must be an even number from 2 to {MAX_IMAGES} (half real, half synthetic); "
                         f"got {n_images!r}.")
    bad = [q for q in questions if q not in QUESTIONS]
    if bad or not questions:
        raise InputError(f"Unknown question(s) {bad}; choose from {', '.join(QUESTIONS)}.")
    names = [f"reader {i + 1}" for i in range(readers)] if isinstance(readers, int) else [str(r) for r in readers]
    if not 1 <= len(names) <= MAX_READERS or len(set(names)) != len(names):
        raise InputError(f"Give 1 to {MAX_READERS} readers with distinct names; got {names!r}.")
    if models is not None and len(models) != len(synthetic):
        raise InputError(f"{len(models)} model name(s) for {len(synthetic)} synthetic set(s); give one per set.")
    if size is not None and not 16 <= int(size) <= 4096:
        raise InputError(f"--size must be from 16 to 4096 pixels; got {size}.")
    mixd = parse_mix(mix)
    rng = np.random.default_rng(seed)
    ref = load_image_set(reference)
    syn_sets = [load_image_set(s) for s in synthetic]
    half = n_images // 2
    picks = [("real", ref, ref.name, None, i) for i in _draw(ref, half, mixd, rng, "reference")]
    shares = [half // len(syn_sets) + (j < half % len(syn_sets)) for j in range(len(syn_sets))]
    src_names = [s.name if [t.name for t in syn_sets].count(s.name) == 1 else f"{s.name} ({j + 1})"
                 for j, s in enumerate(syn_sets)]  # two sets both called 'images' stay apart in the results
    for j, (s, k) in enumerate(zip(syn_sets, shares, strict=True)):
        model = models[j] if models else src_names[j]
        picks += [("synthetic", s, src_names[j], model, i) for i in _draw(s, k, mixd, rng, "synthetic")]
    images = [(truth, s, src, model, i, s.image(i)) for truth, s, src, model, i in picks]
    natives = {(img.shape[1], img.shape[0]) for *_, img in images}
    side = int(size) if size else max(min(w, h) for w, h in natives)
    study_id = secrets.token_urlsafe(9)
    folder = studies_dir() / study_id
    folder.mkdir(parents=True, exist_ok=False)
    notes = [f"Every image is served at {side}x{side} px (bicubic resample of both real and synthetic images; "
             f"native sizes in this sample: {', '.join(f'{w}x{h}' for w, h in sorted(natives))}; non-square images "
             "are cut to their central square first), as an 8-bit gray "
             "PNG without text or EXIF chunks, under a random id."]
    if len(natives) > 1:
        notes.append("Native sizes differ between images: the resample hides size, but up-sampled images can look "
                      "softer than native ones; compare accuracy per source.")
    rows = []
    try:
        for truth, s, src, model, i, img in images:
            item = secrets.token_urlsafe(12)
            (folder / f"{item}.png").write_bytes(png_bytes(resize(center_square(img), side)))
            lab = {p: (None if np.isnan(v) else int(v)) for p, v in zip(PATHOLOGIES, s.labels[i].tolist(), strict=True)}
            rows.append((study_id, item, truth, src, model, s.paths[i], json.dumps(lab), img.shape[1], img.shape[0]))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no half-written study left behind
        raise
    settings = {"reference": reference_name or _spec(reference), "synthetic": [_spec(s) for s in synthetic],
                "models": models,
                "n_images": n_images, "mix": mixd, "questions": list(questions), "size": side, "seed": seed}
    study_name = name or f"study {time.strftime('%Y-%m-%d %H:%M')}"
    codes = {}
    with closing(_connect()) as con, con:
        con.execute("INSERT INTO studies VALUES (?, ?, ?, ?, ?)", (study_id, study_name, time.strftime(
            "%Y-%m-%d %H:%M:%S"), json.dumps(settings), json.dumps(notes)))
        con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        ids = [r[1] for r in rows]
        for rd in names:
            code = secrets.token_urlsafe(16)
            order = [ids[k] for k in rng.permutation(len(ids))]
            con.execute("INSERT INTO readers VALUES (?, ?, ?, ?)", (code, study_id, rd, json.dumps(order)))
            codes[rd] = code
    return {"study_id": study_id, "name": study_name, "n_images": len(rows), "size": side, "readers": codes,
            "settings": settings, "notes": notes}


def _spec(image_set) -> str:
    """A set as the study records it: the path/spec given, or a loaded set's folder (its name without one)."""
    if isinstance(image_set, str | Path):
        return str(image_set)
    root = getattr(image_set, "root", None)
    return str(root) if root is not None else str(getattr(image_set, "name", image_set))


def study_info(study_id: str) -> dict:
    """The study lead's view: settings, notes and per-reader progress (no codes)."""
    with closing(_connect()) as con:
        st = con.execute("SELECT * FROM studies WHERE id = ?", (study_id,)).fetchone()
        if st is None:
            raise InputError(f"No reader study {study_id!r}; `python -m evaluators reader-study list` lists them.")
        n = con.execute("SELECT COUNT(*) FROM items WHERE study_id = ?", (study_id,)).fetchone()[0]
        prog = con.execute(
            "SELECT r.name, COUNT(a.item_id) FROM readers r LEFT JOIN answers a ON a.code = r.code AND a.call IS NOT "
            "NULL WHERE r.study_id = ? GROUP BY r.code ORDER BY r.name", (study_id,)).fetchall()
    return {"study_id": study_id, "name": st["name"], "created": st["created"], "settings": json.loads(st["settings"]),
            "notes": json.loads(st["notes"]), "n_images": n, "progress": {r[0]: r[1] for r in prog}}


def list_studies() -> list[dict]:
    with closing(_connect()) as con:
        rows = con.execute("SELECT id, name, created FROM studies ORDER BY created DESC").fetchall()
    return [dict(r) for r in rows]


def answer_rows(study_id: str) -> list[dict]:
    """Every answer joined with its truth (for the study lead and :func:`results.compute_results`)."""
    study_info(study_id)
    with closing(_connect()) as con:
        rows = con.execute(
            "SELECT r.name AS reader, a.item_id AS item, i.truth, i.source, i.model, i.labels, a.call, a.confidence, "
            "a.findings, a.quality, a.comment, a.updated FROM answers a JOIN readers r ON r.code = a.code "
            "JOIN items i ON i.study_id = r.study_id AND i.item_id = a.item_id WHERE r.study_id = ? "
            "ORDER BY r.name, a.item_id", (study_id,)).fetchall()
    out = []
    for r in rows:
        d = dict(r)
        d["labels"] = json.loads(d["labels"])
        d["findings"] = None if d["findings"] is None else json.loads(d["findings"])
        out.append(d)
    return out


_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class Reader:
    """What one reader's code opens: their study's blinded images, in their order, and their own answers."""

    def __init__(self, code: str):
        code = str(code or "").strip()
        row = None
        if _CODE_RE.match(code):
            with closing(_connect()) as con:
                row = con.execute("SELECT * FROM readers WHERE code = ?", (code,)).fetchone()
        if row is None:
            raise InputError("This reader code is not known; check it with the study lead.")
        self.code = code
        self.study_id = row["study_id"]
        self.name = row["name"]
        self.order: list[str] = json.loads(row["item_order"])
        self._items = set(self.order)
        with closing(_connect()) as con:
            st = con.execute("SELECT settings FROM studies WHERE id = ?", (self.study_id,)).fetchone()
        self.questions = tuple(json.loads(st["settings"])["questions"])

    def _check(self, item_id: str) -> str:
        if item_id not in self._items:
            raise InputError("This image is not part of your study.")
        return item_id

    def image_png(self, item_id: str) -> bytes:
        return (studies_dir() / self.study_id / f"{self._check(item_id)}.png").read_bytes()

    def answers(self) -> dict[str, dict]:
        with closing(_connect()) as con:
            rows = con.execute("SELECT * FROM answers WHERE code = ?", (self.code,)).fetchall()
        out = {}
        for r in rows:
            d = {k: r[k] for k in ("call", "confidence", "quality", "comment", "updated")}
            d["findings"] = None if r["findings"] is None else json.loads(r["findings"])
            out[r["item_id"]] = d
        return out

    def progress(self) -> tuple[int, int]:
        done = sum(1 for a in self.answers().values() if a["call"] is not None or "real_synthetic" not in self.questions)
        return done, len(self.order)

    def next_item(self) -> str | None:
        """The first image in this reader's order without a real/synthetic call (None when done): resume point."""
        ans = self.answers()
        key = "call" if "real_synthetic" in self.questions else "updated"
        return next((i for i in self.order if ans.get(i, {}).get(key) is None), None)

    def answer(self, item_id: str, *, call: str | None = None, confidence: int | None = None,
               findings: list[str] | None = None, quality: int | None = None, comment: str | None = None) -> None:
        """Save the fields given now (others keep their saved value); committed before returning."""
        self._check(item_id)
        if call is not None and call not in ("real", "synthetic"):
            raise InputError(f"Answer 'real' or 'synthetic', not {call!r}.")
        for label, v in (("confidence", confidence), ("quality", quality)):
            if v is not None and (not isinstance(v, int | np.integer) or not 1 <= int(v) <= 5):
                raise InputError(f"{label} must be a whole number from 1 to 5, not {v!r}.")
        f_json = None
        if findings is not None:
            f_json = json.dumps(sorted({resolve_pathology(str(f)) for f in findings}))
        if comment is not None:
            comment = str(comment)[:2000]
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        with closing(_connect()) as con, con:
            con.execute(
                "INSERT INTO answers (code, item_id, call, confidence, findings, quality, comment, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (code, item_id) DO UPDATE SET "
                "call = COALESCE(excluded.call, call), confidence = COALESCE(excluded.confidence, confidence), "
                "findings = COALESCE(excluded.findings, findings), quality = COALESCE(excluded.quality, quality), "
                "comment = COALESCE(excluded.comment, comment), updated = excluded.updated",
                (self.code, item_id, call, None if confidence is None else int(confidence), f_json,
                 None if quality is None else int(quality), comment, now))
