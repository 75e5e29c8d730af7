"""A tiny reference world and a copying generator for the app's tests (fast on 2 CPU cores).

The world: ``patients`` patients with two studies each, 64x64 synthetic chest-like images whose
findings change the picture (effusion: a bright lung base; cardiomegaly: a wide heart), report-style
prompts from :func:`evaluators.reports.write_report`, and a patient-disjoint train/valid/test split.
The generator ``ui-test-copier`` returns training images (with a little noise): a memorising model, so
the app's memorisation check has something to flag.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from evaluators.pathologies import INDEX, PATHOLOGIES

FINDINGS = ("Pleural Effusion", "Cardiomegaly", "Atelectasis", "Lung Opacity", "No Finding")
COPIER = "ui-test-copier"


def _image(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    lungs = np.exp(-(((xx - 0.3) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2)) + np.exp(
        -(((xx - 0.7) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    img = 0.75 - 0.45 * lungs
    heart_w = 0.16 if labels[INDEX["Cardiomegaly"]] == 1 else 0.09
    img += 0.35 * np.exp(-(((xx - 0.52) / heart_w) ** 2 + ((yy - 0.62) / 0.13) ** 2))
    if labels[INDEX["Pleural Effusion"]] == 1:
        img += 0.35 * (yy > 0.72) * np.exp(-(((xx - 0.3) / 0.15) ** 2))
    if labels[INDEX["Lung Opacity"]] == 1:
        img += 0.25 * np.exp(-(((xx - 0.68) / 0.07) ** 2 + ((yy - 0.4) / 0.07) ** 2))
    if labels[INDEX["Atelectasis"]] == 1:
        img += 0.2 * (np.abs(yy - 0.65) < 0.02) * (np.abs(xx - 0.3) < 0.12)
    img += rng.normal(0, 0.03, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def make_world(root: str | Path, patients: int = 30, size: int = 64, seed: int = 0) -> Path:
    """Write the tiny world under ``root``; returns the path of its ``metadata.csv``."""
    from evaluators.reports import write_report

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        split = "train" if p < int(patients * 0.6) else ("valid" if p < int(patients * 0.8) else "test")
        for s in range(2):
            labels = np.zeros(len(PATHOLOGIES), dtype=np.float32)
            k = rng.integers(0, len(FINDINGS))
            labels[INDEX[FINDINGS[k]]] = 1.0
            if FINDINGS[k] != "No Finding" and rng.random() < 0.3:
                labels[INDEX[FINDINGS[(k + 1) % 4]]] = 1.0
            name = f"images/p{p:03d}_s{s}.png"
            Image.fromarray((_image(rng, labels, size) * 255).astype(np.uint8)).save(root / name)
            row = {"path": name, "prompt": write_report(labels, rng), "patient_id": f"P{p:03d}",
                   "study_id": f"P{p:03d}-S{s}", "view": "PA", "split": split}
            row.update({name: float(v) for name, v in zip(PATHOLOGIES, labels)})
            rows.append(row)
    csv = root / "metadata.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def register_copier(csv: str | Path) -> None:
    """Register ``ui-test-copier``: image i = training image (seed mod n) plus faint noise."""
    from evaluators.generators import Generator, register_builtin
    from evaluators.imagesets import load_image_set

    train = load_image_set(f"{csv}@train")

    class Copier(Generator):
        def _run_batch(self, prompts, seeds, *, steps, guidance, height, width, negative_prompt):
            out = []
            for s in seeds:
                img = train.image(int(s) % len(train))
                out.append(np.clip(img + np.random.default_rng(s).normal(0, 0.005, img.shape), 0, 1))
            return np.stack(out).astype(np.float32)

    register_builtin(COPIER, lambda device="cpu", dtype=None: Copier(COPIER, {"steps": 1, "guidance": 0.0,
                                                                                "height": 64, "width": 64}),
                     {"steps": 1, "guidance": 0.0, "height": 64, "width": 64}, label="test copier",
                     notes="returns training images: a memorising model for tests")


def copier_world(root: str | Path, patients: int = 30) -> Path:
    """The app tests' world (30 patients, 64 px) under ``root``, with ``ui-test-copier`` registered on it.

    The memorisation check calibrates at 1% only with at least 99 training images: 85 patients (102)."""
    csv = make_world(root, patients=patients, size=64)
    register_copier(csv)
    return csv
