"""The fidelity suite: from two image sets (or a reference index) to every fidelity number, overall and per pathology.

Features come from the cache (one encoder pass per image, ever); every metric is a function of them
(:mod:`evaluators.metrics`). Per-pathology rows carry their sample counts, and rows below a minimum count
are reported as skipped with the reason, so a long-tail pathology with 12 images is not read like one
with 5,000. ``bootstrap`` gives a percentile confidence interval for every number.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import InputError, UnavailableError
from .features import Progress, extract_features
from .metrics import bootstrap_ci, fidelity_metrics, multilabel_auc
from .metrics import registry as metric_registry
from .pathologies import INDEX as LABEL_INDEX
from .pathologies import PATHOLOGIES, binarize

MATCH_MODES = ("labels", "prompts")
DEFAULT_MIN_COUNT = 10


class RealSide:
    """The real side of a comparison: an image set (encoded through the cache) or a reference index."""

    def __init__(self, source, name: str | None = None):
        from .index import ReferenceIndex

        self.index = source if isinstance(source, ReferenceIndex) else None
        self.image_set = None if self.index is not None else source
        self._name = name

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        if self.index is not None:
            return f"index:{self.index.dir}"
        return self.image_set.name

    @property
    def table(self):
        return self.index.meta if self.index is not None else self.image_set.table

    @property
    def labels(self) -> np.ndarray:
        return self.table[list(PATHOLOGIES)].to_numpy(dtype=np.float32)

    @property
    def prompts(self) -> list[str]:
        return self.table["prompt"].fillna("").astype(str).tolist()

    def __len__(self) -> int:
        return len(self.table)

    def features(self, encoder, **kw) -> tuple[np.ndarray, dict[str, np.ndarray], bool]:
        """(features, other outputs, from_index) of every real row."""
        if self.index is not None:
            if encoder.cache_key() == self.index.encoder_key:
                return np.array(self.index.features, dtype=np.float32), {}, True  # a writable copy of the memmap
            paths = self.index.meta["path"].tolist()
        else:
            paths = list(self.image_set.paths)
        fs = extract_features(paths, encoder, **kw)
        if len(fs) != len(paths):
            raise InputError(f"{len(paths) - len(fs)} real image(s) could not be read: {fs.skipped[:3]}")
        return fs.features, fs.outputs, False

    def pathology_stats(self, encoder, pathology: str | None):
        if self.index is not None and encoder.cache_key() == self.index.encoder_key:
            st = self.index.feature_stats(pathology)
            if st is not None:
                return st[0], st[1]
        return None


def _dedupe_by_prompt(mask: np.ndarray, prompts: list[str]) -> np.ndarray:
    seen: set[str] = set()
    out = np.zeros_like(mask)
    for i in np.flatnonzero(mask):
        if prompts[i] not in seen:
            seen.add(prompts[i])
            out[i] = True
    return out


def pathology_masks(real: RealSide, synthetic, pathology: str, match: str) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the real and synthetic images that count for one pathology.

    ``labels``: real images positive for it, synthetic images whose labels (metadata, or the prompt labeler
    when only prompts exist) are positive. ``prompts`` (CheXGenBench): real rows positive for it,
    de-duplicated by prompt, and the synthetic images whose prompt is one of those prompts.
    """
    j = LABEL_INDEX[pathology]
    real_pos = real.labels[:, j] == 1.0
    if match == "labels":
        return real_pos, synthetic.labels[:, j] == 1.0
    if match == "prompts":
        real_prompts = real.prompts
        real_mask = _dedupe_by_prompt(real_pos, real_prompts)
        wanted = {real_prompts[i] for i in np.flatnonzero(real_mask)}
        synth_mask = np.array([p in wanted for p in synthetic.prompts], dtype=bool)
        return real_mask, synth_mask
    raise InputError(f"Unknown match mode {match!r}; use one of {', '.join(MATCH_MODES)}.")


def _with_ci(metrics: dict, fr: np.ndarray, fs: np.ndarray, n_boot: int, seed: int, kw: dict) -> dict:
    if n_boot <= 0:
        return metrics
    # replicates compute only the metrics with intervals (FD_inf, Vendi: Output.ci False) on the same encoder
    ci = bootstrap_ci(lambda r, f: fidelity_metrics(r, f, ci_only=True, **kw), fr, fs, n_boot=n_boot, seed=seed)
    keys = [o.key for o in metric_registry.outputs("fidelity") if o.ci]
    metrics["ci95"] = {k: [ci[k]["low"], ci[k]["high"]] for k in keys if k in ci}
    return metrics


def _classifier_alignment(synthetic, encoders: dict, *, load, progress, batch_size, skip_bad, demo_world=True) -> dict:
    """Per-pathology and macro AUC of a pathology classifier on the synthetic images vs their prompts' labels.

    The demo classifier was trained on demo-world phantoms: it scores alignment only when the reference is the demo
    world (``demo_world``). Elsewhere torchxrayvision's DenseNet (trained on real X-rays) does, or nothing does and
    the reason says how to provide it: an AUC of the demo classifier on real radiographs would mean nothing."""
    names = ("demo", "xrv-densenet") if demo_world else ("xrv-densenet",)
    clf = next((e for e in encoders.values() if getattr(e, "pathologies", None) and "logits" in e.outputs
                and e.name in names), None)
    why = {}
    if clf is None:
        for name in names:
            try:
                clf = load(name)
                break
            except UnavailableError as exc:
                why[name] = str(exc)
                continue
    if clf is None and not demo_world:
        return {"available": False, "reason": (
            "the demo classifier was trained on demo-world phantoms and is not used on this reference (not the demo "
            "world): its AUC on real radiographs would mean nothing; alignment here needs torchxrayvision's DenseNet "
            f"(xrv-densenet): {why.get('xrv-densenet', 'unavailable')}")}
    if clf is None:
        return {"available": False, "reason": "no pathology classifier available (demo encoder or torchxrayvision)"}
    fs = extract_features(list(synthetic.paths), clf, progress=progress, batch_size=batch_size, skip_bad=skip_bad)
    logits = fs.outputs["logits"]
    y = binarize(synthetic.labels[fs.index], "ignore")
    cols, names = [], []
    for j, name in enumerate(clf.pathologies):
        if name in LABEL_INDEX:
            cols.append(j)
            names.append(name)
    scores = logits[:, cols]
    truth = y[:, [LABEL_INDEX[n] for n in names]]
    auc = multilabel_auc(truth, scores, names)
    return {
        "available": True,
        "classifier": clf.name,
        "macro_AUC": auc["macro"],
        "per_pathology_AUC": auc["per_class"],
        "n_synthetic": len(fs),
        "labels_source": getattr(synthetic, "labels_source", ""),
    }


def run_fidelity(
    real,
    synthetic,
    *,
    encoders: list[str] | None = None,
    per_pathology: bool = False,
    match: str = "labels",
    bootstrap: int = 0,
    min_count: int = DEFAULT_MIN_COUNT,
    k: int = 5,
    kid_subsets: int = 100,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 64,
    skip_bad: bool = False,
    alignment: bool = True,
    progress: Progress | None = None,
    load_encoder: Callable | None = None,
    preprocess: str = "auto",
    real_name: str | None = None,
    include: tuple[str, ...] | list[str] = (),
) -> dict:
    """Every fidelity metric of ``synthetic`` against ``real`` (an ImageSet or a ReferenceIndex).

    Encoders named in ``encoders`` load on ``device`` in ``dtype`` (half precision only on CUDA). ``preprocess``:
    ``auto`` (chexgenbench for raddino and inception, clean for the others), ``clean`` or ``chexgenbench``
    (:mod:`evaluators.encoders.chexgenbench`); each encoder's mode is in the result. Every metric comes from
    :mod:`evaluators.metrics.registry`. ``real_name``: how the result names the real side (default: the set's
    name, or ``index:<folder>``). ``include``: opt-in metrics of the registry to compute too
    (:func:`evaluators.metrics.registry.opt_in`)."""
    from . import encoders as registry

    if match not in MATCH_MODES:
        raise InputError(f"Unknown match mode {match!r}; use one of {', '.join(MATCH_MODES)}.")
    if len(synthetic) == 0:
        raise InputError(f"The synthetic set {synthetic.name!r} has no images.")
    load = load_encoder or (lambda name: registry.load_encoder(name, device=device, dtype=dtype))
    real_side = RealSide(real, real_name)
    optional: set[str] = set()  # encoders added on their own: a refused weights file skips them with a note
    if encoders is None:
        encoders = [real_side.index.encoder] if real_side.index is not None else [registry.default_encoder()]
        if "inception" not in encoders and registry.availability("inception").local:
            encoders.append("inception")
            optional.add("inception")
        if _default_frd(real_side):  # FRD: the one fidelity number valid on real X-rays with no downloaded weights
            encoders.append("radiomics")
            optional.add("radiomics")
    from .encoders.chexgenbench import describe, run_modes, source_notes

    modes, mode_notes = run_modes(preprocess, encoders)
    t0 = time.perf_counter()
    loaded, skipped_encoders = {}, {}
    for name in encoders:
        try:
            loaded[name] = load(name).with_preprocess(modes[name])
        except (InputError, UnavailableError) as exc:
            if name not in optional:
                raise
            skipped_encoders[name] = str(exc)  # its metrics (FRD for radiomics) are unavailable: say why
    modes = {name: modes[name] for name in loaded}
    # the preprocessing choice (clean / chexgenbench) concerns the image encoders; an encoder that one metric claims
    # (radiomics: FRD) has its own fixed pipeline and is left out of the preprocessing listing and columns
    chain_modes = {n: m for n, m in modes.items() if n not in metric_registry.claimed_encoders()} or modes
    kw = {"progress": progress, "batch_size": batch_size, "skip_bad": skip_bad}
    metric_kw = {"k": k, "kid_subsets": kid_subsets, "seed": seed}
    if include:
        unknown = sorted(set(include) - {m.name for m in metric_registry.metrics("fidelity")})
        if unknown:
            raise InputError(f"Unknown metric(s) {unknown}; opt-in metrics: {', '.join(metric_registry.opt_in())}.")
        metric_kw["include"] = tuple(include)

    result: dict = {
        "overall": {},
        "per_pathology": [],
        "encoders": {name: enc.metadata() for name, enc in loaded.items()},
        "settings": {
            "per_pathology": per_pathology,
            "match": match,
            "bootstrap": bootstrap,
            "min_count": min_count,
            "k": k,
            "kid_subsets": kid_subsets,
            "kid_subset_size": "min(n_real, n_synthetic)",
            "seed": seed,
            "preprocess": describe(chain_modes),
            "preprocess_requested": preprocess,
            **({"include": list(include)} if include else {}),
        },
        "preprocess": chain_modes,
        "real": {"name": real_side.name, "n": len(real_side)},
        # kept apart from encoder_notes (the comparability notes by encoder, below), which used to overwrite them
        **({"encoders_skipped": skipped_encoders} if skipped_encoders else {}),
        "synthetic": {
            "name": synthetic.name,
            "n": len(synthetic),
            "labels_source": getattr(synthetic, "labels_source", ""),
        },
    }
    if "chexgenbench" in modes.values():
        real_items = real_side.table["path"].tolist() if real_side.index is not None else list(real_side.image_set.paths)
        mode_notes += [f"real: {n}" for n in source_notes(real_items)]
        mode_notes += [f"synthetic: {n}" for n in source_notes(list(synthetic.paths))]
    if mode_notes:
        result["preprocess_notes"] = mode_notes
    from .domain import encoder_note  # the demo encoder on images that are not the demo world: not comparable

    real_src = real_side.index if real_side.index is not None else real_side.image_set
    notes = {n: encoder_note(n, real_src) for n in loaded}
    if any(notes.values()):
        result["encoder_notes"] = {n: v for n, v in notes.items() if v}
    for name, enc in loaded.items():
        fr, _, _ = real_side.features(enc, **kw)
        fset = extract_features(list(synthetic.paths), enc, **kw)
        if fset.skipped:
            result.setdefault("skipped_files", []).extend(str(b) for b in fset.skipped)
        fs = fset.features
        keep_s = fset.index
        enc_kw = {**metric_kw, "encoder": name}  # the metrics that apply to this encoder (FRD: radiomics only)
        overall = fidelity_metrics(fr, fs, real_stats=real_side.pathology_stats(enc, None), **enc_kw)
        result["overall"][name] = _with_ci(overall, fr, fs, bootstrap, seed, enc_kw)
        for metric in metric_registry.metrics("fidelity", inputs=("synthetic_logits",)):  # Inception Score
            if "logits" in fset.outputs and metric.applies_to(name):
                result[metric.name] = metric.compute({"synthetic_logits": fset.outputs["logits"]}, metric_kw)
        if per_pathology:
            need = max(min_count, k + 1)  # PRDC's k-th neighbour needs k + 1 images on each side
            synth_sub = _SubsetView(synthetic, keep_s)
            for p in PATHOLOGIES:
                rm, sm = pathology_masks(real_side, synth_sub, p, match)
                row = {"pathology": p, "encoder": name, "n_real": int(rm.sum()), "n_synthetic": int(sm.sum())}
                if row["n_real"] < need or row["n_synthetic"] < need:
                    side = "real" if row["n_real"] < need else "synthetic"
                    row["skipped"] = (
                        f"only {row[f'n_{side}']} {side} image(s) positive for {p} (minimum {need}; "
                        + ("lower it with --min-count)" if need == min_count else f"PRDC with k={k} needs k+1)")
                    )
                    result["per_pathology"].append(row)
                    continue
                stats = real_side.pathology_stats(enc, p) if match == "labels" else None
                m = fidelity_metrics(fr[rm], fs[sm], real_stats=stats, pathology=True, **enc_kw)
                m = _with_ci(m, fr[rm], fs[sm], bootstrap, seed, {**enc_kw, "pathology": True})
                row.update({o.key: m.get(o.key) for o in metric_registry.outputs("fidelity")})
                row.update(metric_notes(m))  # why a number is withheld (FD_inf below 10 x D images), next to it
                if "ci95" in m:
                    row["ci95"] = m["ci95"]
                result["per_pathology"].append(row)
    result["Intra-prompt MS-SSIM"] = intra_prompt_diversity(synthetic_view(synthetic, skipped=result))
    if alignment:
        try:
            from .domain import is_demo_world

            result["alignment"] = _classifier_alignment(
                synthetic, loaded, load=load, progress=progress, batch_size=batch_size, skip_bad=skip_bad,
                demo_world=is_demo_world(real_src),
            )
        except InputError as exc:
            result["alignment"] = {"available": False, "reason": str(exc)}
        bio = registry.availability("biovil")
        result["alignment"]["biovil"] = (
            {"available": False, "reason": bio.reason, "how_to_provide": bio.how_to_provide}
            if not bio.available
            else {"available": True, "note": "BioViL-T image-text alignment is computed by `alignment` runs"}
        )
    result["wall_time_s"] = round(time.perf_counter() - t0, 3)
    return result


def metric_notes(values: dict) -> dict[str, str]:
    """``{"<output>_note": reason}`` of one row's withheld numbers: a metric that returns None for an output it
    cannot give validly (FD_inf with too few images) says why under ``<output key>_note`` beside it."""
    return {f"{o.key}_note": values[f"{o.key}_note"] for o in metric_registry.outputs("fidelity")
            if values.get(f"{o.key}_note")}


def notes_text(values: dict, *, short: bool = False) -> list[str]:
    """``"FD_inf withheld: ..."`` for each withheld number of one row (``short``: up to the first ``"; "``, the
    counts without the rule; the JSON keeps the whole note)."""
    out = []
    for key, note in metric_notes(values).items():
        o = metric_registry.output(key[: -len("_note")])
        out.append(f"{o.label if o else key} {note.split('; ')[0] if short else note}")
    return out


def _default_frd(real_side: RealSide) -> bool:
    """FRD (the ``radiomics`` encoder) joins the default encoders when the reference is not the demo world (its
    phantoms' radiomics say nothing) and PyRadiomics is installed."""
    from .domain import is_demo_world
    from .encoders.registry import availability, names

    if "radiomics" not in names() or not availability("radiomics").local:
        return False
    return not is_demo_world(real_side.index if real_side.index is not None else real_side.image_set)


MS_SSIM_PROMPTS, MS_SSIM_IMAGES = 50, 8  # at most this many prompts, and images of one prompt, are compared


def synthetic_view(synthetic, skipped: dict):
    """The synthetic set less the files the run skipped as unreadable."""
    bad = {str(b) for b in skipped.get("skipped_files", [])}
    if not bad:
        return synthetic
    keep = np.array([str(p) not in bad for p in synthetic.paths])
    return synthetic.subset(keep) if hasattr(synthetic, "subset") else synthetic


def intra_prompt_diversity(synthetic) -> dict:
    """RoentGen's diversity measure: mean pairwise MS-SSIM among the images of one prompt (several seeds), over the
    prompts that have 2 or more images (at most :data:`MS_SSIM_PROMPTS` prompts, the most repeated first, and
    :data:`MS_SSIM_IMAGES` images each). Lower is more diverse. Unavailable, with the reason, when no prompt repeats."""
    from .metrics.diversity import intra_prompt_ms_ssim

    groups: dict[str, list[int]] = {}
    for i, p in enumerate(synthetic.prompts):
        if p:
            groups.setdefault(p, []).append(i)
    repeated = sorted(((p, rows) for p, rows in groups.items() if len(rows) >= 2), key=lambda kv: -len(kv[1]))
    if not repeated:
        return {"available": False, "reason": "no prompt has 2 or more images; generate several seeds per prompt"}
    chosen = repeated[:MS_SSIM_PROMPTS]
    try:
        out = intra_prompt_ms_ssim({p: [synthetic.image(i) for i in rows[:MS_SSIM_IMAGES]] for p, rows in chosen})
    except InputError as exc:
        return {"available": False, "reason": str(exc)}
    return {"available": True, **out, "n_prompts_with_repeats": len(repeated),
            "note": f"{len(chosen)} prompt(s), at most {MS_SSIM_IMAGES} images each; lower is more diverse"}


class _SubsetView:
    """Labels and prompts of the synthetic rows that have features (skipped files removed)."""

    def __init__(self, image_set, index: np.ndarray):
        self.labels = image_set.labels[index]
        prompts = image_set.prompts
        self.prompts = [prompts[i] for i in index.tolist()]


# -------------------------------------------------------------------------------------------------
# CheXGenBench-compatible CSV


def _column(output, encoder: str) -> str:
    """CheXGenBench's column names: a per-encoder number (FID, KID) is bare on Inception, suffixed on the others
    ("FID (RadDino)"); a number taken from the PRDC encoder (Precision...) is bare."""
    name = output.csv_column
    if not output.column_per_encoder or encoder == "inception" or encoder in metric_registry.claimed_encoders():
        return name  # a claimed encoder's metric is bare too: "FRD", not "FRD (radiomics)"
    return f"{name} ({'RadDino' if encoder == 'raddino' else encoder})"


def _preprocessing_column(result: dict, encoders: list[str]) -> str:
    """Which chain produced a CSV row's numbers (CheXGenBench's columns are comparable only in chexgenbench mode)."""
    modes = result.get("preprocess") or {}
    parts = {e: modes.get(e, "clean") for e in encoders}
    text = next(iter(parts.values())) if len(set(parts.values())) == 1 else ", ".join(f"{e}: {m}" for e, m in parts.items())
    if any(m == "clean" and e in ("raddino", "inception") for e, m in parts.items()):
        text += " (not CheXGenBench's chain: not comparable with its published table)"
    return text


def csv_rows(result: dict) -> list[dict]:
    """One row for all images and one per pathology, with CheXGenBench's column names.

    Precision/Recall/Density/Coverage come from RadDino features when present (as CheXGenBench), else from
    the first encoder; the column ``PRDC encoder`` says which.
    """
    encoders = list(result["overall"])
    prdc_enc = "raddino" if "raddino" in encoders else encoders[0]

    def row_for(values_by_enc: dict[str, dict], pathology: str) -> dict:
        row: dict = {"Pathology": pathology}
        shown = metric_registry.outputs("fidelity", shown_only=True)
        for enc, vals in values_by_enc.items():
            for o in shown:
                if o.column_per_encoder and o.key in vals:
                    row[_column(o, enc)] = vals[o.key]
        for o in shown:
            if not o.column_per_encoder and o.key in values_by_enc.get(prdc_enc, {}):
                row[o.csv_column] = values_by_enc[prdc_enc][o.key]
        row["PRDC encoder"] = prdc_enc
        row["Preprocessing"] = _preprocessing_column(result, list(values_by_enc))
        first = next(iter(values_by_enc.values()))
        row["n_real"], row["n_synthetic"] = first["n_real"], first["n_synthetic"]
        skipped = [v.get("skipped") for v in values_by_enc.values() if v.get("skipped")]
        if skipped:
            row["Skipped"] = skipped[0]
        notes = [f"{_column(o, enc)}: {vals[o.key + '_note']}" for enc, vals in values_by_enc.items()
                 for o in metric_registry.outputs("fidelity") if vals.get(o.key + "_note")]
        if notes:  # a withheld number's reason beside its empty cell (FD_inf with too few images)
            row["Notes"] = " | ".join(notes)
        return row

    rows = [row_for(result["overall"], "All")]
    if (result.get("Intra-prompt MS-SSIM") or {}).get("available"):
        rows[0]["Intra-prompt MS-SSIM"] = result["Intra-prompt MS-SSIM"]["MS_SSIM"]
    for metric in metric_registry.metrics("fidelity", inputs=("synthetic_logits",)):  # set-level: Inception Score
        for o in metric.outputs:
            if o.shown and metric.name in result:
                rows[0][o.csv_column] = result[metric.name].get(o.key)
    by_p: dict[str, dict[str, dict]] = {}
    for r in result["per_pathology"]:
        by_p.setdefault(r["pathology"], {})[r["encoder"]] = r
    rows += [row_for(v, p) for p, v in by_p.items()]
    return rows


def write_csv(result: dict, path: str | Path) -> Path:
    rows = csv_rows(result)
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


# -------------------------------------------------------------------------------------------------
# CLI


def load_real(spec: str, images_root: str | None = None, skip_bad: bool = False):
    """A reference index folder (has index.json) or any image set spec."""
    from .imagesets import load_image_set, parse_set_spec
    from .index import ReferenceIndex

    path, _ = parse_set_spec(spec)
    if Path(path).is_dir() and (Path(path) / "index.json").is_file():
        return ReferenceIndex(path)
    return load_image_set(spec, images_root=images_root, skip_bad=skip_bad)


def format_summary(result: dict) -> str:
    lines = [f"note: {n} skipped: {why}" for n, why in (result.get("encoders_skipped") or {}).items()]
    modes = result.get("preprocess") or {}
    for enc, m in result["overall"].items():
        lines.append(f"[{enc}, {modes.get(enc, 'clean')} preprocessing] {_numbers(m, long=True)}  "
                     f"(n_real {m['n_real']}, n_synthetic {m['n_synthetic']})")
        lines += [f"note [{enc}]: {t}" for t in notes_text(m)]
    for metric in metric_registry.metrics("fidelity", inputs=("synthetic_logits",)):
        if metric.name in result:
            v, enc = result[metric.name], (metric.encoders or ("",))[0]
            lines.append(f"{metric.name} {v[metric.outputs[0].key]:.3f} ± {v.get('std', float('nan')):.3f}"
                         f" ({modes.get(enc, 'clean')} preprocessing)")
    ms = result.get("Intra-prompt MS-SSIM") or {}
    if ms.get("available"):
        lines.append(f"Intra-prompt MS-SSIM {ms['MS_SSIM']:.3f} ({ms['note']})")
    al = result.get("alignment") or {}
    if al.get("available"):
        auc = al["macro_AUC"]
        lines.append(f"alignment ({al['classifier']} classifier): macro AUC "
                     + (f"{auc:.3f}" if auc is not None else
                        "n/a (no label has both positive and negative synthetic images; AUC needs both)"))
    elif al.get("reason"):
        lines.append(f"alignment: not computed ({al['reason']})")
    for note in result.get("preprocess_notes") or []:
        lines.append(f"note: {note}")
    for enc, note in (result.get("encoder_notes") or {}).items():
        lines.append(f"note [{enc}]: results {note}")
    for row in result["per_pathology"]:
        if "skipped" in row:
            lines.append(f"  {row['pathology']:<27} [{row['encoder']}, {modes.get(row['encoder'], 'clean')}] "
                         f"skipped: {row['skipped']}")
        else:
            withheld = "".join(f"  ({t})" for t in notes_text(row, short=True))
            lines.append(f"  {row['pathology']:<27} [{row['encoder']}, {modes.get(row['encoder'], 'clean')}] "
                         f"{_numbers(row)}  n {row['n_real']}/{row['n_synthetic']}{withheld}")
    return "\n".join(lines + pathology_note_lines(result))


def pathology_note_lines(result: dict) -> list[str]:
    """One line per withheld per-pathology number: on how many rows, and the rule (each row shows its counts)."""
    by_key: dict[str, list[str]] = {}
    for r in result.get("per_pathology", []):
        for key, note in metric_notes(r).items():
            by_key.setdefault(key, []).append(note)
    out = []
    for key, notes in by_key.items():
        o = metric_registry.output(key[: -len("_note")])
        head, _, why = notes[0].partition("; ")
        out.append(f"note: {o.label if o else key} {head.split(':')[0]} on {len(notes)} per-pathology row(s): "
                   f"{why or head}")
    return out + small_sample_note_lines(result)


def small_sample_note_lines(result: dict) -> list[str]:
    """Why per-pathology rows are missing or weak on real data: a synthetic set without labels (every row skipped
    for 0 synthetic images), and FIDs from fewer images than the features' dimensions (biased upward by the small
    sample, so rows of different n do not compare)."""
    rows = result.get("per_pathology") or []
    out = []
    if rows and (result.get("synthetic") or {}).get("labels_source") == "none":
        out.append("note: No per-pathology numbers for this synthetic set: it has no labels or prompts (add a "
                   "metadata.csv with a 'prompt' column or the 14 label columns)")
    dims = {name: e.get("dim") for name, e in (result.get("encoders") or {}).items() if isinstance(e, dict)}
    small = [r for r in rows if r.get("FID") is not None and dims.get(r.get("encoder"))
             and min(int(r.get("n_real") or 0), int(r.get("n_synthetic") or 0)) < int(dims[r["encoder"]])]
    if small:
        d = sorted({int(dims[r["encoder"]]) for r in small})
        out.append(f"note: FID on {len(small)} per-pathology row(s) comes from fewer images than the "
                   f"{'/'.join(map(str, d))} feature dimensions: FID is biased upward by small samples, so compare "
                   "rows of similar n_real / n_synthetic only")
    return out


_SHORT = {"Precision": "P", "Recall": "R", "Density": "D", "Coverage": "C"}


def _numbers(values: dict, long: bool = False) -> str:
    """The registry's shown numbers of one row ("FID 1.234  KID 0.00012±0.00003  P 0.812 ..."); a ``<key>_std``
    output is shown as its metric's ± in the long form."""
    parts = []
    for o in metric_registry.outputs("fidelity", shown_only=True):
        v = values.get(o.key)
        if v is None:
            continue
        digits = 5 if o.key.startswith("KID") else 3
        text = f"{_SHORT.get(o.key, o.label)} {v:.{digits}f}"
        std = values.get(f"{o.key}_std")
        if long and std is not None:
            text += f"±{std:.{digits}f}"
        parts.append(text)
    return "  ".join(parts)
