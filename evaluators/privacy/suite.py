"""The privacy suite: memorisation search, re-identification and CheXGenBench's per-prompt protocol.

:func:`run_privacy` asks of a synthetic set "does any image copy a training image?": every synthetic
image is searched against the *whole* training set (a reference index, built once and cached under
``CHEXGEN_HOME/indexes``) by :class:`.search.MemorisationSearch`, flagged above a threshold calibrated
on held-out *patients*, and scored by the re-ID network against its matched training image.

:func:`run_privacy_protocol` is CheXGenBench's protocol: M training prompts, S seeds each, re-ID
score and pixel / latent distances of every generated image against the prompt's real image, plus
the memorisation search over the whole training set.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, UnavailableError
from ..settings import select_device
from . import REID_THRESHOLD
from .memorisation import DEFAULT_PERCENTILE, privacy_summary
from .search import (
    DEFAULT_CALIBRATION_QUERIES,
    DEFAULT_CANDIDATES,
    DEFAULT_MATCH,
    MATCH_MODES,
    MemorisationSearch,
    load_set,
    patient_ids,
)
from .verdict import count as count_verdicts

Progress = Callable[[int, int, str], None]

DEFAULT_SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------------------------------
# Inputs


def _encoder(encoder, device: str, dtype: str, index=None, preprocess: str | None = None):
    """An Encoder object from a name (loaded on ``device`` in ``dtype``), an object, or (None) the index's encoder
    or the best available. ``preprocess``: the mode for an encoder loaded by name (default: the index's, else auto)."""
    from ..encoders import default_encoder, load_encoder

    if encoder is None:
        encoder = index.encoder if index is not None else default_encoder()
    if isinstance(encoder, str):
        mode = preprocess or "auto"
        if preprocess is None and index is not None and encoder == index.encoder:  # the index's mode: features match
            mode = (index.info.get("encoder") or {}).get("preprocess", "clean")
        return load_encoder(encoder, device=device, dtype=dtype, preprocess=mode)
    return encoder


def _is_index_dir(spec) -> bool:
    from ..imagesets import parse_set_spec

    if not isinstance(spec, str | os.PathLike):
        return False
    path, _ = parse_set_spec(spec)
    return Path(path).is_dir() and (Path(path) / "index.json").is_file()


def _train_source(train, encoder, progress, device: str, dtype: str, preprocess: str | None = None):
    """(index, train ImageSet or None, spec string or None, encoder object)."""
    from ..imagesets import ImageSet
    from ..index import ReferenceIndex

    spec = str(train) if isinstance(train, str | os.PathLike) else None
    if isinstance(train, ReferenceIndex) or _is_index_dir(train):
        index = train if isinstance(train, ReferenceIndex) else ReferenceIndex(str(train))
        enc = _encoder(encoder, device, dtype, index, preprocess)
        if enc.cache_key() != index.encoder_key:
            raise InputError(
                f"The reference index at {index.dir} was built with encoder {index.encoder!r} "
                f"({(index.info.get('encoder') or {}).get('preprocess', 'clean')} preprocessing), not {enc.name!r} "
                f"({getattr(enc, 'preprocess_mode', 'clean')}); leave out the encoder and --preprocess, or rebuild "
                f"the index with {enc.name!r}."
            )
        return index, None, spec, enc
    image_set = train if isinstance(train, ImageSet) else load_set(train, "training")
    if len(image_set) == 0:
        raise InputError(f"The training set {image_set.name!r} has no images.")
    enc = _encoder(encoder, device, dtype, preprocess=preprocess)
    from ..index import cached_index

    return cached_index(image_set, enc, progress=progress), image_set, spec, enc


# --------------------------------------------------------------------------------------------------
# Re-identification


def _precheck_reid(reid) -> None:
    """A re-ID file that does not exist fails before any work (InputError); what is unavailable is reported later."""
    if isinstance(reid, str | os.PathLike) and str(reid).lower() not in ("auto", "none"):
        from .reid import resolve_reid_path

        with contextlib.suppress(UnavailableError):
            resolve_reid_path(reid)


def _choose_reid(reid, train, spec: str | None, device: str):
    """(ReidChoice, note or None) for the training set: see :mod:`.reid_choice` (an unavailable model is reported
    with the reason, never replaced by another one)."""
    from .reid_choice import choose_reid

    choice = choose_reid(reid, train, spec=spec, device=device)
    if choice.available:
        return choice, None
    note = choice.reason if reid is None else f"re-ID model unavailable: {choice.reason}"
    return choice, note


def _reid_fields(choice) -> dict:
    """What travels with every re-ID figure: the model and its held-out AUC on this training set."""
    return {"reid_model": choice.name, "reid_auc": choice.auc, "reid_auc_text": choice.auc_text}


def _reid_name(reid, model) -> str | None:
    """How the re-ID model was given, short enough for a settings column: its name or path, else its architecture."""
    if reid is None:
        return None
    if isinstance(reid, str | os.PathLike):
        return str(reid)
    return f"{model.config()['architecture']} (a loaded model)" if model is not None else type(reid).__name__


# --------------------------------------------------------------------------------------------------
# Summaries


def _records(df) -> list[dict] | None:
    if df is None:
        return None
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
            for r in df.to_dict(orient="records")]


def _summary(scores, flags, labels, cal: dict, reid_note: str | None, choice=None) -> dict:
    s = privacy_summary(scores, flags, labels)
    out = dict(s["overall"])
    out["reid_available"] = scores is not None
    if scores is not None and choice is not None:
        out.update(_reid_fields(choice), reid_auc_source=choice.auc_source)
    if reid_note:
        out["reid_note"] = reid_note
    out["memorisation_threshold"] = cal["threshold"]
    out["expected_fraction_flagged"] = expected = 1 - cal["percentile"] / 100
    out["excess_over_expected"] = float(out["fraction_flagged"] / expected) if expected > 0 else None
    out["per_pathology"] = _records(s["per_pathology"])
    if scores is not None and choice is not None and out["per_pathology"]:
        out["per_pathology"] = [{**r, **_reid_fields(choice)} for r in out["per_pathology"]]
    return out


def _domain_notes(result: dict, enc, train) -> None:
    """The demo encoder on images that are not the demo world: say so in the summary and the encoder section."""
    from ..domain import encoder_note

    note = encoder_note(getattr(enc, "name", None), train)
    if note:
        result["summary"]["encoder_note"] = note
        result["encoder"]["comparability"] = note


def _encoder_meta(enc) -> dict:
    try:
        return dict(enc.metadata())
    except Exception:  # metadata is informative only
        return {"name": getattr(enc, "name", str(enc))}


# --------------------------------------------------------------------------------------------------
# The suite


def run_privacy(
    train,
    synthetic,
    *,
    encoder=None,
    reid="auto",
    k: int = 5,
    percentile: float = DEFAULT_PERCENTILE,
    heldout=None,
    match: str = DEFAULT_MATCH,
    candidates: int = DEFAULT_CANDIDATES,
    calibration_queries: int | None = DEFAULT_CALIBRATION_QUERIES,
    search: MemorisationSearch | None = None,
    device: str | None = None,
    encoder_dtype: str = "float32",
    encoder_preprocess: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Memorisation search + re-ID of a synthetic set against a training set (ImageSet, spec or index).

    Returns ``{"summary", "samples", "calibration", "settings", "encoder", "reid"}``; ``samples[i]``
    holds synthetic image i's path, its k nearest training images, its re-ID score against the
    matched one (None without a re-ID model) with that model's name and AUC, its memorisation flag and its
    one verdict (:func:`.verdict.decide`).

    ``reid``: ``"auto"`` (default: the demo model on demo-world sets only, else CheXGenBench's checkpoint, else a
    model trained on this training set, else unavailable; see :mod:`.reid_choice`), a name, a weights file, a
    ReIDModel, a ReidChoice or None.

    ``match="registered"`` (default): the ``candidates`` nearest training images by encoder cosine are
    re-ranked by :class:`.matcher.CopyMatcher` (registered, contrast-invariant), whose best score is the
    copy score; ``"aligned"``: the older shift/crop matcher; ``"cosine"``: the top-1 encoder cosine.
    Either way the threshold is calibrated on the same score (leave-one-out over the training index, at
    most ``calibration_queries`` queries, or ``heldout``) and each image gets its p-value.
    ``search``: a ready :class:`MemorisationSearch` (the app keeps one); it replaces ``train``'s index,
    ``encoder``, ``percentile``, ``heldout``, ``match``, ``candidates`` and ``k``. ``device``: where encoders and
    re-ID models given by name run (default: the best present), ``encoder_dtype`` the encoder's precision
    (half precision: CUDA only); objects stay where they are.
    """
    if search is not None:
        train, encoder, k, percentile = search.index, search.encoder, search.k, search.percentile
        match, candidates = search.match, search.n_cand
    _check(k, percentile, match, candidates)
    from ..features import extract_features

    t0 = time.perf_counter()
    device = select_device(device)  # an unusable device fails before any work
    _precheck_reid(reid)  # and so does a bad path
    syn = load_set(synthetic, "synthetic")
    if len(syn) == 0:
        raise InputError(f"The synthetic set {syn.name!r} has no images.")
    if search is None:
        index, train_set, spec, enc = _train_source(train, encoder, progress, device, encoder_dtype, encoder_preprocess)
        search = MemorisationSearch(index, enc, train_set=train_set, spec=spec, heldout=heldout,
                                    percentile=percentile, match=match, candidates=candidates, k=k,
                                    max_queries=calibration_queries)
    index, enc = search.index, search.encoder
    train_obj = search.train_set if search.train_set is not None else index
    choice, reid_note = _choose_reid(reid, train_obj, search.spec, device)
    model = choice.model
    cal = search.calibration
    feats = extract_features(list(syn.paths), enc, show_progress=False, progress=progress)
    syn_paths = [syn.paths[j] for j in feats.index]
    found = search.check(syn_paths, feats.features)
    neighbours, copy, rows, flags = found.neighbours, found.copy_score, found.match_row, found.flagged
    train_paths, n_cand = search.train_paths, search.n_cand
    if model is not None:
        from .reid import reid_vs_rows
    scores = None if model is None else reid_vs_rows(model, train_paths, syn_paths, rows)

    labels = syn.labels[feats.index] if syn.has_labels else None
    summary = _summary(scores, flags, labels, cal, reid_note, choice)
    summary["patient_ids_source"] = patient_ids_source(search.train_set, index)
    summary["top1_cosine_mean"] = float(np.nanmean(found.top1))
    summary["copy_score_mean"] = float(copy.mean())
    summary["copy_score_max"] = float(copy.max())
    summary["distinct_train_images_flagged"] = int(np.unique(rows[flags]).size)
    pids = patient_ids(index.meta)
    if pids is not None:
        summary["distinct_train_patients_flagged"] = int(np.unique(np.asarray(pids)[rows[flags]]).size)
    samples = [
        {
            "synthetic": path,
            "neighbours": [{"path": n.path, "similarity": n.similarity, "patient_id": n.patient_id} for n in nb],
            "match": {"path": str(train_paths[rows[i]]), "copy_score": float(copy[i])} if rows[i] >= 0 else None,
            "reid_score": None if scores is None else float(scores[i]),
            **(_reid_fields(choice) if scores is not None else {}),
            "flagged": bool(flags[i]),
            "copy_p_value": float(found.p_values[i]),
        }
        for i, (path, nb) in enumerate(zip(syn_paths, neighbours))
    ]
    reid_cal = reid_verdict_calibration(search, choice)
    _add_verdicts(samples, getattr(found, "p_values", None), found.threshold, choice, reid_cal)
    if reid_cal.get("available"):
        summary["reid_verdict_threshold"] = reid_cal["threshold"]
    summary["verdicts"] = count_verdicts(s["verdict"] for s in samples)
    from .data_copying import data_copying, summary_numbers

    copying = data_copying(search, feats.features, progress=progress,  # C_T, AuthPct (registry, privacy axis)
                           synthetic_paths=[str(p) for p in syn_paths])
    summary.update(summary_numbers(copying))
    result = {
        "kind": "privacy",
        "summary": summary,
        "samples": samples,
        "calibration": cal,
        "settings": {"k": int(k), "percentile": float(percentile), "match": match, "candidates": n_cand,
                     "calibration_queries": search.max_queries,
                     "reid": choice.name if model is not None else _reid_name(reid, None),
                     "reid_threshold": REID_THRESHOLD, "train": _describe(train, index),
                     "synthetic": syn.name, "n_train": len(index), "n_synthetic": len(syn),
                     "index": str(index.dir), "seconds": round(time.perf_counter() - t0, 2)},
        "encoder": _encoder_meta(enc),
        "reid": {**_reid_section(choice, reid_note), "verdict_calibration": reid_cal},
        "data_copying": copying,
    }
    _domain_notes(result, enc, train_obj)
    return result


def _reid_section(choice, note) -> dict:
    out = choice.info()
    if note:
        out["note"] = note
    return out


def reid_verdict_calibration(search, choice) -> dict:
    """The re-ID threshold of a "same patient" verdict, from held-out patients (:func:`.reid_choice.calibrate_reid`)."""
    if not choice.available:
        return {"available": False, "reason": "no re-ID model"}
    from .reid_choice import calibrate_reid

    try:
        return calibrate_reid(search, choice)
    except InputError as exc:
        return {"available": False, "reason": str(exc)}


def _add_verdicts(samples: list[dict], p_values, threshold: float, choice, reid_cal: dict) -> None:
    """One verdict per image (:func:`.verdict.decide`), from its copy check and its re-ID score."""
    from .verdict import decide

    for i, smp in enumerate(samples):
        if p_values is not None and "copy_p_value" not in smp:
            with contextlib.suppress(TypeError, IndexError, ValueError):
                smp["copy_p_value"] = float(p_values[i])
        match = smp.get("match") or {}
        v = decide(copy_score=match.get("copy_score"), threshold=threshold, flagged=smp["flagged"],
                   copy_p_value=smp.get("copy_p_value", match.get("p_value")), reid_score=smp.get("reid_score"),
                   reid_model=choice.name if choice.available else None, reid_auc=choice.auc,
                   reid_threshold=reid_cal.get("threshold") if reid_cal.get("available") else None)
        smp["verdict"] = {"decision": v.decision, "reason": v.reason}


def _check(k, percentile, match, candidates) -> None:
    if int(k) < 1:
        raise InputError(f"k must be at least 1 (got {k}).")
    if not 0 < float(percentile) <= 100:
        raise InputError(f"Percentile must be in (0, 100], got {percentile}.")
    if match not in MATCH_MODES:
        raise InputError(f"Unknown match {match!r}; use one of {', '.join(MATCH_MODES)}.")
    if int(candidates) < 1:
        raise InputError(f"candidates must be at least 1 (got {candidates}).")


def patient_ids_source(train_set, index) -> str:
    """Where the training set's patient ids come from: ``column``, ``derived from ... layout)`` (file paths,
    :mod:`evaluators.patient_ids`) or ``none``; ``column (some blank: not used)`` when the calibration cannot use them."""
    ref = (getattr(index, "info", None) or {}).get("reference") or {}
    source = getattr(train_set, "patient_ids_source", None) or ref.get("patient_ids_source") or "column"
    if patient_ids(index.meta) is not None:
        return source
    has_any = index.meta["patient_id"].notna().any() if "patient_id" in index.meta.columns else False
    return f"{source} (some blank: not used)" if has_any else "none"


def _describe(train, index) -> str:
    if isinstance(train, str | os.PathLike):
        return str(train)
    return str(getattr(train, "name", index.dir))


# --------------------------------------------------------------------------------------------------
# CheXGenBench's protocol


def _pick_prompts(train_set, m: int, seed: int) -> np.ndarray:
    """Rows of ``m`` distinct non-empty training prompts, drawn with ``seed``."""
    prompts = train_set.table["prompt"].fillna("").astype(str).str.strip()
    ok = np.flatnonzero((prompts != "").to_numpy())
    if ok.size == 0:
        raise InputError(f"The training set {train_set.name!r} has no prompts; the protocol generates from them.")
    rng = np.random.default_rng(seed)
    seen, rows = set(), []
    for r in rng.permutation(ok):
        p = prompts.iat[int(r)]
        if p not in seen:
            seen.add(p)
            rows.append(int(r))
        if len(rows) == m:
            break
    return np.asarray(rows, dtype=np.int64)


def run_privacy_protocol(
    model,
    train,
    *,
    m_prompts: int = 20,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    encoder=None,
    reid="auto",
    size: int | None = None,
    k: int = 5,
    percentile: float = DEFAULT_PERCENTILE,
    heldout=None,
    match: str = DEFAULT_MATCH,
    candidates: int = DEFAULT_CANDIDATES,
    calibration_queries: int | None = DEFAULT_CALIBRATION_QUERIES,
    prompt_seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    batch_size: int = 4,
    device: str | None = None,
    encoder_dtype: str = "float32",
    encoder_preprocess: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """CheXGenBench's privacy protocol for a generator (name or Generator) on a training set.

    M distinct training prompts (drawn with ``prompt_seed``), S ``seeds`` each. Per prompt: mean and
    max re-ID score of its S images against the prompt's real image, mean / min pixel distance
    (float in [0, 1], equal size) and latent distance (encoder features, RMSE). Summary: means over
    prompts, per pathology (prompt labels), and the fraction flagged by the whole-set memorisation search.
    """
    from ..features import extract_features
    from .distances import as_gray01, per_prompt_distances

    _check(k, percentile, match, candidates)
    if int(m_prompts) < 1:
        raise InputError(f"The protocol needs at least 1 prompt (got {m_prompts}).")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise InputError("The protocol needs at least 1 seed.")
    t0 = time.perf_counter()
    device = select_device(device)
    _precheck_reid(reid)
    train_set = load_set(train, "training")
    if len(train_set) == 0:
        raise InputError(f"The training set {train_set.name!r} has no images.")
    rows = _pick_prompts(train_set, int(m_prompts), prompt_seed)
    choice, reid_note = _choose_reid(reid, train_set, str(train) if isinstance(train, str | os.PathLike) else None,
                                     device)
    reid_model = choice.model
    prompts = [str(train_set.table["prompt"].iat[int(r)]) for r in rows]
    gen = model
    if isinstance(model, str):
        from ..generators import load_generator

        gen = load_generator(model, device=device)
    gen_name = getattr(gen, "name", str(model))
    S = len(seeds)
    all_prompts = [p for p in prompts for _ in seeds]
    all_seeds = seeds * len(prompts)
    images = gen.generate(all_prompts, all_seeds, steps=steps, guidance=guidance, height=size, width=size,
                          batch_size=batch_size,
                          progress=(lambda d, t: progress(d, t, "generating")) if progress else None)
    images = [as_gray01(im, name=f"generated image {i}") for i, im in enumerate(images)]
    generated = [images[i * S : (i + 1) * S] for i in range(len(prompts))]
    real = [train_set.image(int(r)) for r in rows]

    index, _, _, enc = _train_source(train_set, encoder, progress, device, encoder_dtype, encoder_preprocess)
    spec = str(train) if isinstance(train, str | os.PathLike) else None
    search = MemorisationSearch(index, enc, train_set=train_set, spec=spec, heldout=heldout,
                                percentile=percentile, match=match, candidates=candidates, k=k,
                                max_queries=calibration_queries)
    cal, n_cand = search.calibration, search.n_cand
    f_gen = extract_features(images, enc, show_progress=False).features
    f_real = extract_features(real, enc, show_progress=False).features
    table = per_prompt_distances(prompts, real, generated, real_features=f_real,
                                 generated_features=[f_gen[i * S : (i + 1) * S] for i in range(len(prompts))])
    found = search.check(images, f_gen)
    copy, flags = found.copy_score, found.flagged

    scores = None
    if reid_model is not None:
        from .reid import embed, score_pairs

        fr = embed(reid_model, real)
        fg = embed(reid_model, images)
        scores = score_pairs(reid_model, fg, np.repeat(fr, S, axis=0))
        per = scores.reshape(len(prompts), S)
        table["Mean_reid_score"] = per.mean(axis=1)
        table["Max_reid_score"] = per.max(axis=1)
        table["Reidentified_fraction"] = (per > REID_THRESHOLD).mean(axis=1)
        for key, value in _reid_fields(choice).items():
            table[key] = value
    flag_per = flags.reshape(len(prompts), S)
    table["Flagged_fraction"] = flag_per.mean(axis=1)
    table["Min_copy_p_value"] = found.p_values.reshape(len(prompts), S).min(axis=1)
    table["train_path"] = [train_set.paths[int(r)] for r in rows]
    table["train_patient_id"] = [train_set.patient_ids[int(r)] for r in rows]

    labels = np.repeat(train_set.labels[rows], S, axis=0) if train_set.has_labels else None
    summary = _summary(scores, flags, labels, cal, reid_note, choice)
    summary["patient_ids_source"] = patient_ids_source(train_set, index)
    summary.update(
        n_prompts=len(prompts), n_seeds=S, n_images=len(images),
        mean_pixel_distance=float(table["Mean_pixel_distance"].mean()),
        min_pixel_distance=float(table["Min_pixel_distance"].min()),
        mean_latent_distance=float(table["Mean_latent_distance"].mean()),
        min_latent_distance=float(table["Min_latent_distance"].min()),
        copy_score_mean=float(copy.mean()),
    )
    if scores is not None:
        summary["mean_of_prompt_max_reid"] = float(table["Max_reid_score"].mean())
    result = {
        "kind": "privacy-protocol",
        "summary": summary,
        "per_prompt": _records(table),
        "calibration": cal,
        "settings": {"model": gen_name, "m_prompts": len(prompts), "seeds": seeds, "size": size,
                     "match": match, "candidates": n_cand, "prompt_seed": prompt_seed, "steps": steps, "guidance": guidance, "k": int(k),
                     "percentile": float(percentile), "reid": choice.name if reid_model is not None else
                     (None if reid is None else str(reid)),
                     "reid_threshold": REID_THRESHOLD, "train": _describe(train, index),
                     "pixel_distance": "RMSE of float [0,1] images at equal size",
                     "latent_distance": "RMSE of encoder features", "index": str(index.dir),
                     "seconds": round(time.perf_counter() - t0, 2)},
        "encoder": _encoder_meta(enc),
        "reid": _reid_section(choice, reid_note),
    }
    _domain_notes(result, enc, train_set)
    return result


# --------------------------------------------------------------------------------------------------
# CLI


def format_summary(result: dict) -> str:
    """A few lines for the terminal."""
    s, cal = result["summary"], result["calibration"]

    def f(v) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"

    lines = [
        f"images: {s['n']}  flagged as memorised: {f(s['fraction_flagged'])} "
        f"(expected for new images: {f(s['expected_fraction_flagged'])})",
        f"threshold: {cal['match']} copy score {f(cal['threshold'])} = conformal {cal['percentile']:g}th percentile of "
        f"{cal['n']} calibration images ({cal['source']}); smallest supported level {cal.get('smallest_level', 0):.4g}",
        f"encoder: {(result.get('encoder') or {}).get('name', '?')}, "
        f"{(result.get('encoder') or {}).get('preprocess', 'clean')} preprocessing",
    ]
    if s.get("patient_ids_source"):
        lines.append(f"training patient ids: {s['patient_ids_source']}")
    if cal.get("patient_ids_used") is False:
        lines.append("NOTE: the training set has no patient ids, so the threshold is conservative (near copies can "
                     "be missed); add a patient_id column or give --heldout a folder of other patients' images to "
                     "calibrate exactly (see the calibration notes in the JSON).")
    if s["reid_available"]:
        lines.append(f"re-ID by {s.get('reid_model')} (verification AUC {s.get('reid_auc_text', 'unknown')} on "
                     f"held-out patients of this training set): mean {f(s['mean_reid'])}  max {f(s['max_reid'])}  "
                     f"re-identified (> {REID_THRESHOLD}) {f(s['fraction_reidentified'])}")
        if s.get("reid_auc_source"):
            lines.append(f"  AUC {s['reid_auc_source']}")
    else:
        lines.append(f"re-ID: not computed ({s.get('reid_note', 'no model')})")
    if "verdicts" in s:
        lines.append("verdicts: " + ", ".join(f"{k} {v}" for k, v in s["verdicts"].items() if v or k != "unknown")
                     + " (see the README's decision rule)")
        rc = (result.get("reid") or {}).get("verdict_calibration") or {}
        if rc.get("available"):
            lines.append(f"  same patient: re-ID > {f(rc['threshold'])}, the larger of {REID_THRESHOLD} and the "
                         f"{rc['percentile']:g}th percentile of {rc['n']} held-out patients' re-ID against their "
                         f"matched training image ({f(rc['fraction_above_0.5'])} of them score > {REID_THRESHOLD})")
        elif s["reid_available"]:
            lines.append(f"  re-ID not used for verdicts: {rc.get('reason', 'no calibrated threshold')}")
    if result.get("data_copying"):
        from .data_copying import format_line

        lines.append(format_line(result["data_copying"]))
    if s.get("encoder_note"):
        lines.append(f"note: {s['encoder_note']}")
    if "mean_pixel_distance" in s:
        lines.append(f"pixel distance: mean {f(s['mean_pixel_distance'])}  min {f(s['min_pixel_distance'])}; "
                     f"latent distance: mean {f(s['mean_latent_distance'])}  min {f(s['min_latent_distance'])}")
    return "\n".join(lines)
