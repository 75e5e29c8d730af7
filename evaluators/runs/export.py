"""Export of inspected generated images: one zip with a PNG per image and ``metadata.csv`` (prompt, seed, model,
settings, nearest training image, copy score, flag, re-ID score and the verdict)."""

from __future__ import annotations

import csv
import io
import time
import uuid
import zipfile
from pathlib import Path

from .context import RunContext
from .generate import Generated, slug
from .inspect import image_verdict

COLUMNS = ["img_savename", "prompt", "seed", "model", "steps", "guidance", "nearest_similarity", "nearest_patient",
           "copy_score", "memorisation_flag", "reid_score", "reid_model", "reid_auc", "verdict"]


def metadata_rows(ctx: RunContext, gen: Generated) -> list[list]:
    """One CSV row (:data:`COLUMNS`) per image of ``gen``."""
    choice = ctx.reid_choice("auto")
    rows = []
    for i in range(len(gen)):
        nb = gen.neighbours[i][0] if gen.neighbours and gen.neighbours[i] else None
        rows.append([f"{i:04d}_seed{gen.seeds[i]}.png", gen.prompts[i], gen.seeds[i], gen.model,
                     gen.settings.get("steps"), gen.settings.get("guidance"), f"{nb.similarity:.6f}" if nb else "",
                     nb.patient_id if nb else "", f"{gen.copy_score[i]:.6f}" if gen.copy_score is not None else "",
                     bool(gen.flags[i]) if gen.flags is not None else "",
                     "" if not gen.reid or gen.reid[i] is None else f"{gen.reid[i]:.6f}",
                     choice.name if choice.available else "", choice.auc_text if choice.available else "",
                     image_verdict(ctx, gen, i).decision])
    return rows


def export_zip(ctx: RunContext, gen: Generated, out_dir: str | Path) -> Path:
    """Write ``<model>-<time>-<id>.zip`` under ``out_dir``: the PNGs and ``metadata.csv``; returns its path."""
    from PIL import Image

    from ..imageio import to_uint8

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{slug(gen.model)}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.zip"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for row, img in zip(metadata_rows(ctx, gen), gen.images):
            png = io.BytesIO()
            Image.fromarray(to_uint8(img)).save(png, format="PNG")
            zf.writestr(row[0], png.getvalue())
            w.writerow(row)
        zf.writestr("metadata.csv", buf.getvalue())
    return path
