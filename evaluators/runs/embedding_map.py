"""The reference set on its embedding map (the index's UMAP): one row per reference image with a colour group,
and one reference image with its caption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..pathologies import positives
from .context import RunContext


def map_group(pos: list[str]) -> str:
    """The colour group of an image with positive labels ``pos``: its one finding, else Multiple findings /
    No Finding / Other."""
    findings = [p for p in pos if p not in ("No Finding", "Support Devices")]
    if len(findings) == 1:
        return findings[0]
    if findings:
        return "Multiple findings"
    return "No Finding" if "No Finding" in pos else "Other / unlabelled"


def map_points(ctx: RunContext, *, need_map: bool = True) -> pd.DataFrame:
    """The reference images on the map: x, y, a colour group, the labels, the report, the patient and the path.
    ``need_map=False``: x and y are NaN (not an error) when the index was built without a UMAP map."""
    index = ctx.index()
    meta = index.meta
    xy = index.umap_coords if need_map or index.has_umap else np.full((len(index), 2), np.nan)
    pos = [positives(row) for row in index.labels]
    return pd.DataFrame({
        "x": xy[:, 0], "y": xy[:, 1], "group": [map_group(p) for p in pos],
        "labels": [", ".join(p) or "(none)" for p in pos],
        "report": meta["prompt"].fillna("").astype(str).tolist(),
        "patient": meta["patient_id"].fillna("").astype(str).tolist(),
        "path": meta["path"].astype(str).tolist(),
    })


def reference_image(ctx: RunContext, row: int) -> tuple[np.ndarray, str]:
    """Reference image ``row`` of the index (float [0, 1]) and its caption (patient, labels, report)."""
    from ..imageio import read_image

    index = ctx.index()
    if not 0 <= int(row) < len(index):
        raise InputError(f"Reference row {row} is out of range (0..{len(index) - 1}).")
    m = index.meta.iloc[int(row)]
    labels = ", ".join(positives(index.labels[int(row)])) or "(none)"
    report = m["prompt"] if isinstance(m["prompt"], str) and m["prompt"].strip() else "(no report in the reference set)"
    caption = f"reference #{row} · {Path(str(m['path'])).name} · patient {m['patient_id']} · {labels}\n\n{report}"
    return read_image(str(m["path"])), caption
