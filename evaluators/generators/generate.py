"""Generate a folder of synthetic images + a CheXGenBench-compatible CSV, resumable and multi-process.

File names are a function of (prompt index, seed), so a rerun skips what exists (resume) and N
processes (``accelerate launch -m evaluators generate ...``) write the same files as one. The CSV
(``generations.csv``: prompt, img_savename, seed, model, steps, guidance, 14 label columns) is written
last, by rank 0 only, after every process has finished.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import settings
from ..errors import InputError
from ..pathologies import PATHOLOGIES, label_columns_present, labels_from_mapping, resolve_pathology

CSV_NAME = "generations.csv"
MANIFEST_NAME = "generation.json"
PROMPT_COLUMNS = ("prompt", "annotated_prompt", "report", "text")


def image_name(index: int, seed: int) -> str:
    """Deterministic file name of the image for prompt ``index`` and ``seed``."""
    return f"img_{index:06d}_s{seed}.png"


def read_prompts(csv_path: str | os.PathLike[str], prompt_col: str | None = None) -> tuple[list[str], Any]:
    """Prompts (and the frame, for its label columns) from a CSV; the column is named or guessed.

    ``PATH@SPLIT`` keeps the rows of one split (a ``split`` column), as image sets do: a reference set's
    ``metadata.csv@train`` gives its training prompts with their own labels, CheXGenBench's protocol."""
    import pandas as pd

    from ..imagesets import parse_set_spec, rows_in_split

    spec, split = parse_set_spec(csv_path)
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"Prompt file {path} does not exist.")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"Prompt file {path} is not a readable CSV: {exc}") from exc
    if split is not None:
        frame = rows_in_split(frame, split, what=f"Prompt file {path}").reset_index(drop=True)
    if prompt_col:
        if prompt_col not in frame.columns:
            raise InputError(f"Prompt file {path} has no column {prompt_col!r}; columns: {list(frame.columns)}.")
        col = prompt_col
    else:
        col = next((c for c in PROMPT_COLUMNS if c in frame.columns), None)
        if col is None:
            raise InputError(f"Prompt file {path}: no prompt column (looked for {list(PROMPT_COLUMNS)}); "
                             f"name it with --prompt-col. Columns: {list(frame.columns)}.")
    prompts = frame[col]
    empty = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise InputError(f"Prompt file {path}: column {col!r} is empty on row(s) {[i + 2 for i in empty[:10]]} "
                         "(line numbers in the file); fill or remove them.")
    return [str(p).strip() for p in prompts], frame


def pathology_prompts(pathology: str, n: int, seed: int = 0) -> list[str]:
    """``n`` prompts for one pathology: evaluators.reports.example_prompt if present, else a fixed template."""
    name = resolve_pathology(pathology)
    if n < 1:
        raise InputError(f"--n must be >= 1 (got {n}).")
    try:
        from ..reports import example_prompt  # written by another module; optional
    except ImportError:
        example_prompt = None
    if example_prompt is not None:
        rng = np.random.default_rng(seed)
        return [str(example_prompt(name, rng)) for _ in range(n)]
    if name == "No Finding":
        text = "Frontal chest radiograph. No acute cardiopulmonary abnormality."
    else:
        text = f"Frontal chest radiograph showing {name.lower()}."
    return [text] * n


def _label_fn() -> Callable[[str], Any] | None:
    try:
        from ..labeler import label_report  # written by another module; optional
    except ImportError:
        return None
    return label_report


def _labels_for(prompts: Sequence[str], frame, pathology: str | None) -> list[np.ndarray] | None:
    """Per-prompt 14-label vectors: the input CSV's label columns, else the report labeler, else (for
    --pathology without a labeler) the requested pathology as positive and the rest blank."""
    if frame is not None:
        present = label_columns_present(frame.columns)
        if present:
            return [labels_from_mapping({c: row[c] for c in present}, source="prompt CSV")
                    for _, row in frame.iterrows()]
    label = _label_fn()
    if label is not None:
        out = []
        for p in prompts:
            value = label(p)
            out.append(labels_from_mapping(value, source="labeler") if isinstance(value, dict)
                       else np.asarray(value, dtype=float))
        return out
    if pathology is not None:
        vec = np.full(len(PATHOLOGIES), np.nan)
        vec[PATHOLOGIES.index(resolve_pathology(pathology))] = 1.0
        return [vec.copy() for _ in prompts]
    return None


def _distributed_state():
    """accelerate's PartialState when launched with several processes, else None."""
    if settings.get("WORLD_SIZE") <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    tmp = path.with_name(path.name + ".part")
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").save(tmp, format="PNG")
    os.replace(tmp, path)


def generate_to_folder(
    model: str,
    prompts: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    seeds: Sequence[int] = (0,),
    batch_size: int = 4,
    steps: int | None = None,
    guidance: float | None = None,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    labels: Sequence[np.ndarray] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    offload: str | None = None,
    attention_slicing: bool = False,
    vae_tiling: bool = False,
    files: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> Path:
    """Write one PNG per (prompt, seed) under ``out_dir`` and the CSV; returns the CSV path.

    Existing images are kept (resume); a folder made with other settings is refused.
    """
    from ..settings import select_device
    from .pipelines import get_entry, load_generator

    prompts = list(prompts)
    seeds = [int(s) for s in seeds]
    if not prompts:
        raise InputError("No prompts to generate from.")
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"Seeds must be a non-empty list without repeats (got {seeds}).")
    entry = get_entry(model, files)
    p = entry.presets
    steps = int(steps if steps is not None else p["steps"])
    guidance = float(guidance if guidance is not None else p["guidance"])
    height = int(height if height is not None else p["height"])
    width = int(width if width is not None else (p["width"] if height == p["height"] else height))
    negative_prompt = negative_prompt if negative_prompt is not None else p["negative_prompt"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    manifest = {"model": entry.name, "weights": entry.weights, "lora": entry.lora.weights if entry.lora else None,
                "steps": steps, "guidance": guidance, "height": height, "width": width,
                "negative_prompt": negative_prompt}
    mpath = out / MANIFEST_NAME
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        changed = {k: (old.get(k), v) for k, v in manifest.items() if old.get(k) != v}
        if changed:
            raise InputError(f"{out} holds images made with other settings {changed} (old, new); use a new "
                             f"--out folder or delete {mpath} and its images.")

    jobs = [(i, s) for i in range(len(prompts)) for s in seeds]
    pending = [(i, s) for i, s in jobs if not (out / image_name(i, s)).is_file()]

    state = _distributed_state()
    if state is not None:
        state.wait_for_everyone()  # every rank has listed `pending` before anyone writes
    is_main = state is None or state.is_main_process
    if is_main:
        mpath.write_text(json.dumps(manifest, indent=2))
    mine = pending
    if state is not None:
        with state.split_between_processes(pending) as part:
            mine = list(part)
        device = device or str(state.device)

    if mine:
        gen = load_generator(entry.name, device=select_device(device), dtype=dtype, offload=offload,
                             attention_slicing=attention_slicing, vae_tiling=vae_tiling, files=files)
        step = max(1, batch_size) * 4  # save every few batches so an interrupted run keeps its work
        done = 0
        for start in range(0, len(mine), step):
            part = mine[start:start + step]
            images = gen.generate([prompts[i] for i, _ in part], [s for _, s in part], steps=steps,
                                  guidance=guidance, height=height, width=width, batch_size=batch_size,
                                  negative_prompt=negative_prompt, on_message=on_message)
            for (i, s), image in zip(part, images):
                _save_png(image, out / image_name(i, s))
            done += len(part)
            if progress is not None:
                progress(done, len(mine))
    if state is not None:
        state.wait_for_everyone()
    csv_path = out / CSV_NAME
    if is_main:
        _write_csv(csv_path, prompts, seeds, entry.name, steps, guidance, labels)
    return csv_path


def _write_csv(path: Path, prompts, seeds, model, steps, guidance, labels) -> None:
    import pandas as pd

    rows = []
    for i, prompt in enumerate(prompts):
        for s in seeds:
            row: dict[str, Any] = {"prompt": prompt, "img_savename": image_name(i, s), "seed": s, "model": model,
                                   "steps": steps, "guidance": guidance}
            if labels is not None:
                for name, value in zip(PATHOLOGIES, labels[i]):
                    row[name] = None if value is None or math.isnan(float(value)) else int(value)
            rows.append(row)
    tmp = path.with_name(path.name + ".part")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    os.replace(tmp, path)
