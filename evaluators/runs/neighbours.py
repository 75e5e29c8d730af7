""""Search from this image": the nearest training images of any image, so a clinician can follow a suspected copy.

A query is a generated image (an array, or image ``i`` of a :class:`Generated`), a file, or a training image of
the index (by row). Generated images and files get the memorisation search's copy score, p-value and the one
verdict of :mod:`.inspect` (the same numbers as the Generate tab). A training image is searched against the *other*
training images: itself is excluded (and said so); its copy score is taken against other patients' images only
(when the index has patient ids), as the leave-one-out calibration does, so it is comparable with the threshold;
it is not a memorisation verdict (the query is real), but a score above the threshold says another patient's
training image is as close as a copy (a duplicate in the training data). Neighbours of the same patient as the
query (a training query's own patient; for other queries the patient of the matched training image) are flagged
when patient ids exist.

App: the Generate tab's "Search from this image" and the Embedding map; CLI: ``python -m evaluators neighbours``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .context import RunContext
from .generate import Generated


@dataclass
class ImageSearch:
    """One image's nearest training images and what the copy check says about it."""

    kind: str  # "generated", "image" (an array), "file" or "training"
    query: str  # the query in words (for the trail and the report)
    image: np.ndarray  # float [0, 1]
    neighbours: list  # evaluators.index.Neighbour, most similar first
    row: int | None = None  # the training row of a training query
    patient: str | None = None  # the patient the "same patient" column compares with
    same_patient: list[bool | None] = field(default_factory=list)  # per neighbour; None without patient ids
    copy_score: float | None = None
    match_row: int | None = None  # the training row the copy score is against
    threshold: float | None = None
    p_value: float | None = None
    decision: str | None = None  # the verdict (generated / file queries only)
    excluded: list[str] = field(default_factory=list)  # what the search left out, and why
    summary: str = ""  # markdown: the verdict or copy score with its evidence
    key: str | None = None  # the key that names the query in a trail, when it is not the key searched (set:I@RUN)

    def table(self) -> pd.DataFrame:
        rows = [{"rank": r, "row": nb.row, "similarity": round(nb.similarity, 4), "patient": nb.patient_id or "",
                 "same patient": {True: "yes", False: "", None: "?"}[same],
                 "labels": ", ".join(nb.labels) or "(none)", "report": nb.prompt}
                for r, (nb, same) in enumerate(zip(self.neighbours, self.same_patient), 1)]
        return pd.DataFrame(rows, columns=["rank", "row", "similarity", "patient", "same patient", "labels", "report"])

    def as_dict(self) -> dict:
        return {"kind": self.kind, "query": self.query, "row": self.row, "patient": self.patient,
                "copy_score": self.copy_score, "match_row": self.match_row, "threshold": self.threshold,
                "p_value": self.p_value, "verdict": self.decision, "excluded": self.excluded,
                "neighbours": [{**nb.as_dict(), "same_patient": same}
                               for nb, same in zip(self.neighbours, self.same_patient)]}


def _same(neighbours: list, patient: str | None) -> list[bool | None]:
    return [None if patient is None or nb.patient_id is None else nb.patient_id == patient for nb in neighbours]


def _one(gen: Generated, i: int) -> Generated:
    """Image ``i`` of ``gen`` as a one-image Generated with its inspection results."""
    def pick(a):
        return None if a is None else np.asarray(a)[i : i + 1]

    return Generated(model=gen.model, images=[gen.images[i]], prompts=[gen.prompts[i]], seeds=[gen.seeds[i]],
                     settings=gen.settings, neighbours=gen.neighbours[i : i + 1], top1=pick(gen.top1),
                     copy_score=pick(gen.copy_score), match_row=pick(gen.match_row), threshold=gen.threshold,
                     flags=pick(gen.flags), copy_p_value=pick(gen.copy_p_value), umap=pick(gen.umap),
                     reid=gen.reid[i : i + 1], notes=list(gen.notes), session=gen.session)


def _from_inspected(ctx: RunContext, one: Generated, kind: str, query: str, k: int) -> ImageSearch:
    from . import inspect

    if len(one.neighbours[0]) < min(k, len(ctx.index())):  # fewer kept than asked for: search again
        one.neighbours = []
        inspect.inspect(ctx, one, k=k)
    nbs = one.neighbours[0][:k]
    row = None if one.match_row is None else int(one.match_row[0])
    if row is None or row < 0:
        row = nbs[0].row if nbs else None
    patient = None
    if row is not None:
        pid = ctx.index().meta["patient_id"].iloc[row] if "patient_id" in ctx.index().meta else None
        patient = None if pid is None or pd.isna(pid) else str(pid)
    v = inspect.image_verdict(ctx, one, 0)
    return ImageSearch(kind=kind, query=query, image=one.images[0], neighbours=nbs, patient=patient,
                       same_patient=_same(nbs, patient), copy_score=v.copy_score, match_row=row,
                       threshold=v.threshold, p_value=v.copy_p_value, decision=v.decision,
                       summary=inspect.verdict_text(ctx, one, 0))


def from_generated(ctx: RunContext, gen: Generated, i: int, *, k: int = 5) -> ImageSearch:
    """Generated image ``i`` (already inspected: its neighbours and verdict are reused, not recomputed)."""
    if not 0 <= int(i) < len(gen):
        raise InputError(f"Generated image #{i} does not exist (there are {len(gen)}).")
    i = int(i)
    return _from_inspected(ctx, _one(gen, i), "generated", f"generated #{i} (seed {gen.seeds[i]})", k)


def from_image(ctx: RunContext, image: np.ndarray, *, k: int = 5, query: str = "image",
               kind: str = "image") -> ImageSearch:
    """Any image array (float [0, 1] or 8-bit): inspected like a generated image."""
    from . import inspect

    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    one = Generated(model="(query)", images=[img], prompts=[""], seeds=[-1], settings={})
    inspect.inspect(ctx, one, k=k)
    return _from_inspected(ctx, one, kind, query, k)


def from_file(ctx: RunContext, path: str | Path, *, k: int = 5) -> ImageSearch:
    """An image file (PNG, JPEG, DICOM...; read and checked by :func:`evaluators.imageio.read_image`)."""
    from ..imageio import read_image

    return from_image(ctx, read_image(str(path)), k=k, query=f"file {Path(path).name}", kind="file")


def from_training_row(ctx: RunContext, row: int, *, k: int = 5) -> ImageSearch:
    """Training image ``row`` of the index against the other training images (itself excluded; see the module)."""
    from ..imageio import read_image
    from ..index import patient_ids
    from ..privacy.memorisation import p_values
    from ..privacy.search import copy_scores
    from . import inspect

    index = ctx.index()
    if not 0 <= int(row) < len(index):
        raise InputError(f"Training row {row} is out of range (0..{len(index) - 1}).")
    row = int(row)
    path = str(index.meta["path"].iloc[row])
    pids = patient_ids(index.meta)
    own = pids[row] if pids is not None else None
    extra = 1 + (sum(p == own for p in pids) if pids is not None else 0)
    search = inspect.search(ctx)
    sims, rows = index.search(np.asarray(index.features[row : row + 1], dtype=np.float32),
                              min(len(index), max(k, search.n_cand) + extra))
    keep = (rows[0] >= 0) & (rows[0] != row)
    nbs = index.neighbours_from(sims[:, keep][:, :k], rows[:, keep][:, :k])[0]
    others = keep & np.array([pids is None or pids[int(r)] != own for r in rows[0]])
    excluded = [f"the query itself (training row {row})"]
    out = ImageSearch(kind="training", query=f"training image {Path(path).name} (row {row})",
                      image=read_image(path), neighbours=nbs, row=row, patient=own, same_patient=_same(nbs, own),
                      excluded=excluded)
    try:
        thr = search.threshold
        cs, best = copy_scores([path], sims[:, others][:, : search.n_cand], rows[:, others][:, : search.n_cand],
                               search.match, search.matcher, workers=1)
        out.copy_score, out.match_row, out.threshold = float(cs[0]), int(best[0]), thr
        out.p_value = float(p_values(search.calibration["scores"], cs)[0])
    except InputError as exc:
        out.summary = f"Copy score unavailable: {exc}"
        return out
    out.summary = _training_summary(ctx, out, pids is not None)
    return out


def _training_summary(ctx: RunContext, s: ImageSearch, ids: bool) -> str:
    against = "other patients' training images (its own patient excluded, as in calibration)" if ids else \
        ("the other training images (no patient ids: its own patient's other studies may be among them and "
         "raise the score)")
    match = ""
    if s.match_row is not None and s.match_row >= 0:
        m = ctx.index().meta.iloc[s.match_row]
        match = f", best match {Path(str(m['path'])).name} (row {s.match_row}, patient {m.get('patient_id', '')})"
    above = s.copy_score > s.threshold
    lines = [f"**A training image, searched against {against}.** No memorisation verdict: the query is real.",
             f"- Copy score {s.copy_score:.4f}{match}, p-value {s.p_value:.3g}; threshold {s.threshold:.4f}: "
             + ("**above**: another patient's training image is as close as a copy (a duplicate in the training "
                "data?)." if above and ids else "above the threshold." if above else "below the threshold."),
             f"- Left out: {'; '.join(s.excluded)}."]
    lines += [f"- {n}" for n in ctx.domain_notes()]
    return "\n".join(lines)


def from_set_image(ctx: RunContext, images, key: str, *, k: int = 5) -> ImageSearch:
    """Image ``set:I`` of a C_T run's synthetic set (the Embedding map's stars; ``images``:
    :class:`evaluators.runs.ct_map.SetImages`): inspected like a file; its key names the run (``set:I@RUN``)."""
    from ..imageio import read_image
    from .ct_map import set_path

    i, path = set_path(images, key)
    s = from_image(ctx, read_image(path), k=k, query=f"synthetic #{i} of {images.source} ({Path(path).name})",
                   kind="file")
    s.key = images.key(i)
    return s


def search_key(ctx: RunContext, key: str, gen: Generated | None = None, *, k: int = 5,
               synthetic=None) -> ImageSearch:
    """The search of a point key as the app names images: ``gen:I`` (image I of ``gen``), ``ref:ROW``, or ``set:I``
    (image I of the C_T run's synthetic set ``synthetic``, :class:`evaluators.runs.ct_map.SetImages`)."""
    if str(key).startswith("set:"):
        return from_set_image(ctx, synthetic, key, k=k)
    kind, _, num = str(key).partition(":")
    try:
        n = int(num)
    except ValueError:
        raise InputError(f"Unrecognised image {key!r}: expected gen:N or ref:N.") from None
    if kind == "gen":
        if gen is None:
            raise InputError("Generate images first.")
        return from_generated(ctx, gen, n, k=k)
    if kind == "ref":
        return from_training_row(ctx, n, k=k)
    raise InputError(f"Unrecognised image {key!r}: expected gen:N or ref:N.")


def neighbour_images(s: ImageSearch) -> list[tuple[np.ndarray, str]]:
    """The neighbours' images (float [0, 1]) with a caption each (rank, similarity, patient, same patient)."""
    from ..imageio import read_image

    return [(read_image(nb.path), f"#{r} row {nb.row} · sim {nb.similarity:.3f} · patient {nb.patient_id}"
             + (" · SAME PATIENT" if same else ""))
            for r, (nb, same) in enumerate(zip(s.neighbours, s.same_patient), 1)]


def format_text(s: ImageSearch) -> str:
    """The search as plain text (the CLI's output)."""
    table = s.table().drop(columns=["report"]).to_string(index=False)
    return f"query: {s.query}\n{table}\n\n{s.summary.replace('**', '')}"
