"""Inspection of generated images on a reference: nearest training images, copy scores, p-values, the one
privacy verdict per image (:func:`evaluators.privacy.verdict.decide`), re-ID scores and the evidence panel.

Everything is computed on a :class:`RunContext` (its index, memorisation search and re-ID choice), so the app's
Generate tab and ``python -m evaluators inspect`` show the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .context import RunContext
from .generate import Generated

Progress = Callable[[int, int, str], None]
CALIBRATION_PERCENTILE = 99.0  # the copy threshold: this percentile of held-out real images' copy scores


def search(ctx: RunContext):
    """The memorisation search inspection uses (calibrated once, cached next to the index)."""
    return ctx.search(percentile=CALIBRATION_PERCENTILE)


def calibration(ctx: RunContext) -> dict:
    """The memorisation threshold and how it was calibrated (computed on first use, cached next to the index)."""
    return search(ctx).calibration


def inspect(ctx: RunContext, gen: Generated, *, k: int = 5, progress: Progress | None = None) -> Generated:
    """Nearest reference images, memorisation flags, map positions and re-ID scores of ``gen``'s images (filled in
    place). The flags come from the engine's memorisation search (the same object the ``privacy`` CLI uses)."""
    from ..features import extract_features
    from ..index import top1_similarity

    index = ctx.index(progress)
    feats = extract_features(list(gen.images), ctx.encoder(), show_progress=False).features
    try:
        found = search(ctx).check(list(gen.images), feats, k)
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
    gen.reid = reid_scores(ctx, gen)
    from ..generators.trained_on import demo_model_note

    note = demo_model_note(gen.model, index)  # a demo-world model judged against a real reference
    if note and note not in gen.notes:
        gen.notes.append(note)
    return gen


def reid_scores(ctx: RunContext, gen: Generated) -> list[float | None]:
    """Re-ID score of each image against its matched training image (else its nearest by encoder)."""
    model = ctx.reid_choice("auto").model
    if model is None or not gen.neighbours:
        return [None] * len(gen)
    from ..privacy.reid import reid_vs_rows

    rows = gen.match_row
    if rows is None:
        rows = np.array([nb[0].row if nb else -1 for nb in gen.neighbours], dtype=np.int64)
    scores = reid_vs_rows(model, ctx.index().meta["path"].astype(str).to_numpy(), list(gen.images), rows)
    return [None if not np.isfinite(s) else float(s) for s in scores]


def reid_calibration(ctx: RunContext) -> dict:
    """The "same patient" re-ID threshold for inspection's search and the default re-ID choice (cached on ctx)."""
    return ctx.reid_calibration(search(ctx), ctx.reid_choice("auto"))


def neighbour_table(gen: Generated, i: int) -> pd.DataFrame:
    rows = [{"rank": rank, "similarity": round(nb.similarity, 4), "patient": nb.patient_id or "",
             "labels": ", ".join(nb.labels) or "(none)", "report": nb.prompt}
            for rank, nb in enumerate(gen.neighbours[i], 1)]
    return pd.DataFrame(rows, columns=["rank", "similarity", "patient", "labels", "report"])


def neighbour_images(gen: Generated, i: int) -> list[tuple[np.ndarray, str]]:
    """The nearest training images of image ``i`` (float [0, 1]) with a caption each."""
    from ..imageio import read_image

    return [(read_image(nb.path), f"#{rank} sim {nb.similarity:.3f} · patient {nb.patient_id}")
            for rank, nb in enumerate(gen.neighbours[i], 1)]


def image_verdict(ctx: RunContext, gen: Generated, i: int):
    """The engine's one verdict for image ``i`` (evaluators.privacy.verdict.decide)."""
    from ..privacy.verdict import decide

    choice = ctx.reid_choice("auto")
    score = gen.reid[i] if i < len(gen.reid) else None
    cal = reid_calibration(ctx) if score is not None else {}
    return decide(reid_threshold=cal.get("threshold") if cal.get("available") else None,
                  copy_score=None if gen.copy_score is None else gen.copy_score[i], threshold=gen.threshold,
                  flagged=None if gen.flags is None else bool(gen.flags[i]),
                  copy_p_value=None if gen.copy_p_value is None else gen.copy_p_value[i], reid_score=score,
                  reid_model=choice.name if choice.available else None, reid_auc=choice.auc)


def verdict_text(ctx: RunContext, gen: Generated, i: int, reid_line: str | None = None) -> str:
    """One memorisation / re-ID verdict for image ``i`` with its evidence (markdown)."""
    from .privacy import reid_status

    v = image_verdict(ctx, gen, i)
    lines = [f"**Verdict: {v.decision}.** {v.reason[0].upper() + v.reason[1:]}"]
    top1 = float(gen.top1[i]) if gen.top1 is not None else float("nan")
    if gen.threshold is not None and gen.copy_score is not None:
        match = ""
        if gen.match_row is not None and gen.match_row[i] >= 0:
            row = ctx.index().meta.iloc[int(gen.match_row[i])]
            match = f" against training image {Path(str(row['path'])).name} (patient {row.get('patient_id', '')})"
        cal = calibration(ctx)
        pv = "" if v.copy_p_value is None else f", p-value {v.copy_p_value:.3g}"
        lines.append(
            f"- Copy score {gen.copy_score[i]:.4f}{match}{pv}; threshold {gen.threshold:.4f} (conformal "
            f"{cal.get('percentile', CALIBRATION_PERCENTILE):g}th percentile of {cal.get('n', '?')} calibration "
            f"scores: {cal.get('source', 'held-out real images')}). Nearest by encoder: similarity {top1:.4f}.")
    else:
        lines.append(f"- Nearest training image similarity {top1:.4f}; no calibrated threshold ("
                     + "; ".join(gen.notes) + ").")
    choice = ctx.reid_choice("auto")
    if v.reid_score is None:
        lines.append("- " + (reid_line or reid_status(choice)) + ".")
    else:
        used = "" if v.reid_used else " (not used for the verdict)"
        rc = reid_calibration(ctx)
        thr = (f"; same patient above {rc['threshold']:.3f} (from {rc['n']} held-out patients' images)"
               if rc.get("available") else "")
        lines.append(f"- Re-ID score {v.reid_score:.3f} against the matched training image by {choice.name}, "
                     f"verification AUC {choice.auc_text} on held-out patients of this training set{thr}{used}.")
    from ..generators.trained_on import demo_model_note

    model_note = demo_model_note(gen.model, ctx.index())  # "new" here says nothing about the model's training data
    lines += [f"- {n}" for n in ([model_note] if model_note else []) + ctx.domain_notes()]
    return "\n".join(lines)


def evidence_image(ctx: RunContext, gen: Generated, i: int) -> np.ndarray | None:
    """synthetic | matched training image aligned | overlay | difference (evaluators.privacy.evidence)."""
    from ..imageio import read_image
    from ..privacy.evidence import evidence_panel

    row = -1 if gen.match_row is None else int(gen.match_row[i])
    if row < 0 and gen.neighbours and gen.neighbours[i]:
        row = int(gen.neighbours[i][0].row)
    if row < 0:
        return None
    return evidence_panel(gen.images[i], read_image(str(ctx.index().meta["path"].iloc[row])))


MAX_IMAGES = 1_000  # inspection reads every image into memory; whole sets go through the privacy job


def from_image_set(image_set) -> Generated:
    """An image set (generated elsewhere) as a :class:`Generated` to inspect: its images, prompts and row numbers as
    seeds."""
    n = len(image_set)
    if n > MAX_IMAGES:
        raise InputError(f"{image_set.name} holds {n} images; inspection reads at most {MAX_IMAGES}. Inspect a "
                         "subset, or run `python -m evaluators privacy` on the whole set.")
    return Generated(model=image_set.name, images=[image_set.image(i) for i in range(n)],
                     prompts=[p if isinstance(p, str) else "" for p in image_set.prompts], seeds=list(range(n)),
                     settings={})


def records(ctx: RunContext, gen: Generated) -> list[dict]:
    """One JSON-ready record per inspected image: its verdict (with evidence numbers) and nearest training images."""
    return [{"image": i, "prompt": gen.prompts[i], "verdict": image_verdict(ctx, gen, i).to_dict(),
             "neighbours": neighbour_table(gen, i).to_dict("records")} for i in range(len(gen))]
