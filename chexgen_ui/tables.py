"""Display tables and status lines built from the engine's result JSON (fidelity and privacy runs).

Pure functions of a result dict; no Gradio. The app's tabs and :class:`chexgen_ui.services.Studio` call them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evaluators.store import finite


def privacy_verdict_line(result: dict) -> str:
    """The privacy run's verdict counts and comparability note, as markdown to append to a status line."""
    summ = result.get("summary") or {}
    counts = summ.get("verdicts") or {}
    out = ""
    if counts:
        from evaluators.privacy.verdict import counts_text

        out += "\n\nVerdicts (one per image): " + counts_text(counts) + "."
    if result.get("data_copying"):
        from evaluators.privacy.data_copying import format_line

        line = format_line(result["data_copying"])
        out += f"\n\n{line[:1].upper()}{line[1:]}."
    if summ.get("encoder_note"):
        out += f"\n\nEncoder note: results {summ['encoder_note']}."
    if summ.get("patient_ids_source"):
        out += f"\n\nTraining patient ids: {summ['patient_ids_source']}."
    return out


def fidelity_note_line(result: dict) -> str:
    """The fidelity run's set-level diversity (intra-prompt MS-SSIM, when prompts repeat) and comparability notes (the
    demo encoder on images that are not the demo world), then what is unavailable or withheld and why (an encoder
    that did not load, a number withheld for too few images, MS-SSIM without repeated prompts): all read from the
    result, as the CLI's summary reads them."""
    notes = result.get("encoder_notes") or {}
    ms = result.get("Intra-prompt MS-SSIM") or {}
    diversity = (f"\n\nIntra-prompt MS-SSIM {ms['MS_SSIM']:.3f} ({ms['note']})." if ms.get("available") else "")
    return (diversity + "".join(f"\n\nEncoder note ({name}): results {note}." for name, note in notes.items())
            + "".join(f"\n\n{line}" for line in unavailable_lines(result)))


def unavailable_lines(result: dict) -> list[str]:
    """What a fidelity run could not give, each with its reason (from the result JSON)."""
    from evaluators.fidelity import notes_text, pathology_note_lines

    out = [f"{name} not used: {why}." for name, why in (result.get("encoders_skipped") or {}).items()]
    out += [f"{t[:1].upper()}{t[1:]} ({enc})." for enc, vals in (result.get("overall") or {}).items()
            for t in notes_text(vals)]
    out += [f"{line.removeprefix('note: ')}." for line in pathology_note_lines(result)]
    ms = result.get("Intra-prompt MS-SSIM") or {}
    if ms and not ms.get("available"):
        out.append(f"Intra-prompt MS-SSIM unavailable: {ms.get('reason', 'no reason given')}.")
    return out


def fidelity_status_line(result: dict, run_id=None, what: str = "Fidelity") -> str:
    """One status line for a fidelity run: images on each side, each encoder with its preprocessing, pathologies
    evaluated, the run id, then :func:`fidelity_note_line` (comparability notes, unavailable and withheld numbers)."""
    from evaluators.metrics.registry import claimed_encoders

    modes = result.get("preprocess") or {}
    claimed = claimed_encoders()
    encs = ", ".join(f"{e} ({'its own pipeline, FRD only' if e in claimed else modes.get(e, 'clean') + ' preprocessing'})"
                     for e in (result.get("overall") or {}))
    rows = result.get("per_pathology") or []
    evaluated = {r["pathology"] for r in rows if not r.get("skipped")}
    seen = {r["pathology"] for r in rows}
    pp = (f"; {len(evaluated)} of {len(seen)} pathologies evaluated (the others are below the minimum count: see "
          "the skipped column)" if len(evaluated) < len(seen) else f"; all {len(seen)} pathologies evaluated") \
        if seen else ""
    saved = f"; saved as run #{run_id}" if run_id is not None else ""
    return (f"{what} done in {result.get('wall_time_s', 0):.1f} s: {(result.get('synthetic') or {}).get('n', 0)} "
            f"synthetic vs {(result.get('real') or {}).get('n', 0)} reference images; encoders: {encs or 'none'}{pp}"
            f"{saved}." + fidelity_note_line(result))


def privacy_image_table(result: dict, limit: int = 50) -> pd.DataFrame:
    """One row per synthetic image with its one verdict and the evidence (from the engine's privacy JSON):
    memorised first, then same patient, then by copy score; at most ``limit`` rows."""
    order = {"memorised": 0, "same patient": 1, "new": 2, "unknown": 3}
    rows = []
    for smp in result["samples"]:
        match = smp.get("match") or {}
        v = smp.get("verdict") or {}
        row = {"synthetic": Path(str(smp["synthetic"])).name, "verdict": v.get("decision", ""),
               "copy_score": match.get("copy_score")}
        if smp.get("copy_p_value") is not None:
            row["copy p-value"] = smp["copy_p_value"]
        row["matched training image"] = Path(str(match.get("path", ""))).name
        row["reid_score"] = smp.get("reid_score")
        if smp.get("reid_score") is not None:
            row["re-ID model (AUC)"] = f"{smp.get('reid_model')} ({smp.get('reid_auc_text', 'unknown')})"
        row["why"] = v.get("reason", "")
        rows.append(row)
    rows.sort(key=lambda r: (order.get(r["verdict"], 9), -(r["copy_score"] if r["copy_score"] is not None else -1.0)))
    df = pd.DataFrame(rows[:limit])
    if "reid_score" in df and df["reid_score"].isna().all():  # re-ID not computed: the summary says why
        df = df.drop(columns="reid_score")
    return df


def rounded(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """A copy for display with every float cell at ``digits`` significant digits (the store keeps full precision)."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = [v if v is None or not np.isfinite(v) else float(f"{v:.{digits}g}") for v in out[c]]
    return out


def _fmt_ci(ci, key):
    if not ci or key not in ci or ci[key] is None:
        return ""
    lo, hi = ci[key]
    return "" if lo is None or hi is None else f"[{lo:.4g}, {hi:.4g}]"


def shown_metrics() -> list[str]:
    """The fidelity numbers the app shows, in the registry's order (FID, KID, Precision, ... and any new metric)."""
    from evaluators.metrics.registry import outputs

    return [o.key for o in outputs("fidelity", shown_only=True)]


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Round metrics to 4 significant digits and drop CI columns that are empty (no bootstrap)."""
    for c in df.columns:
        if c.endswith("95% CI") and not df[c].astype(str).str.len().gt(0).any():
            df = df.drop(columns=c)
        elif c in shown_metrics():
            df[c] = [None if v is None or not np.isfinite(v) else float(f"{v:.4g}") for v in
                     pd.to_numeric(df[c], errors="coerce").astype(float)]
    return df


def _run_metrics(result: dict) -> list[str]:
    """The shown metrics this run computed (no empty column for opt-in FD_inf, or FRD without radiomics)."""
    have = {k for vals in (result.get("overall") or {}).values() for k in vals}
    return [m for m in shown_metrics() if m in have] if have else shown_metrics()


def overall_table(result: dict) -> pd.DataFrame:
    rows = []
    for enc, vals in result.get("overall", {}).items():
        row = {"encoder": enc, "preprocess": (result.get("preprocess") or {}).get(enc, "clean"),
               "n_real": vals.get("n_real"), "n_synthetic": vals.get("n_synthetic")}
        for m in _run_metrics(result):
            row[m] = finite(vals.get(m))
            row[f"{m} 95% CI"] = _fmt_ci(vals.get("ci95"), m)
        rows.append(_with_notes(row, vals))
    return _drop_empty_notes(_tidy(pd.DataFrame(rows)))


def per_pathology_table(result: dict) -> pd.DataFrame:
    """One row per (pathology, encoder); the skip reason sits next to the name, where a reader looks first."""
    rows = []
    for r in result.get("per_pathology", []):
        row = {"pathology": r["pathology"], "skipped": _short_skip(r.get("skipped") or "", r["pathology"]),
               "n_real": r["n_real"],
               "n_synthetic": r["n_synthetic"], "encoder": r["encoder"],
               "preprocess": (result.get("preprocess") or {}).get(r["encoder"], "clean")}
        for m in _run_metrics(result):
            row[m] = finite(r.get(m))
            row[f"{m} 95% CI"] = _fmt_ci(r.get("ci95"), m)
        rows.append(_with_notes(row, r))
    return _drop_empty_notes(_tidy(pd.DataFrame(rows)))


def _with_notes(row: dict, values: dict) -> dict:
    """The row's withheld numbers and why, short ("FD_inf withheld: 40 synthetic and 52 real image(s) for 1024-d
    features"): the cell is empty, this says why (the status line and the JSON give the rule)."""
    from evaluators.fidelity import notes_text

    row["notes"] = "; ".join(notes_text(values, short=True))
    return row


def _drop_empty_notes(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns="notes") if "notes" in df and not df["notes"].astype(str).str.len().gt(0).any() else df


def _short_skip(reason: str, pathology: str) -> str:
    """The skip reason, short enough to sit beside the name ("only 4 synthetic image(s)"); CSV/JSON keep it whole."""
    return reason.split(" (")[0].replace(f" positive for {pathology}", "").strip()


def counts_table(result: dict) -> pd.DataFrame:
    """Long-tail counts: real and synthetic positives per pathology, rarest real first."""
    seen: dict[str, dict] = {}
    for r in result.get("per_pathology", []):
        seen.setdefault(r["pathology"], {"pathology": r["pathology"], "n_real": r["n_real"],
                                         "n_synthetic": r["n_synthetic"],
                                         "evaluated": "no" if r.get("skipped") else "yes"})
    df = pd.DataFrame(list(seen.values()), columns=["pathology", "n_real", "n_synthetic", "evaluated"])
    return df.sort_values("n_real", kind="stable").reset_index(drop=True)
