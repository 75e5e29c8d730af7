"""Calibration baselines: two 'generators' whose scores bracket what a real model can reach.

- ``reference-oracle`` (best-case fidelity, nothing memorised): the prompt goes through the rule
  labeler; the demo world renders a *fresh* random patient with those labels
  (:func:`evaluators.demo_world.render_for_labels`). Labels the prompt does not mention (NaN) are
  drawn absent; uncertain (-1) findings are drawn faintly, the demo world's own convention for
  uncertain labels. The view is AP when the prompt says "AP" or "portable", else PA.
- ``copycat`` (worst-case privacy): a model that memorised its training set. For a training prompt it
  returns a lightly perturbed copy of *that prompt's* training image (a seeded pick when several
  training images share the prompt's text); for any other prompt, a copy of a training image whose
  labels best match the prompt's. Training set: by default the demo world's train split, the usual
  reference set.

Both are deterministic per (prompt, seed) and batch invariant: each image depends only on a stable hash
of its own (prompt, seed), never on its batch neighbours. ``steps`` and ``guidance`` are ignored.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .. import settings
from ..errors import InputError
from ..pathologies import N_LABELS
from .base import Generator, stable_seed

ORACLE = "reference-oracle"
COPYCAT = "copycat"
COPYCAT_SOURCE_ENV = "CHEXGEN_COPYCAT_SOURCE"
DEFAULT_COPYCAT_SOURCE = "demo@train"
COPYCAT_PERTURBATIONS = ("brightness", "jpeg")  # light: the copy stays near-identical (corr > 0.95)
DEFAULT_SIZE = 128  # the default demo world's size
_AP_RE = re.compile(r"\b(?:AP|portable|supine|semi-upright)\b", re.IGNORECASE)


def prompt_labels(prompt: str) -> np.ndarray:
    """The rule labeler's 14 values for ``prompt`` (1, 0, -1, NaN)."""
    from ..labeler import label_report

    return np.asarray(label_report(str(prompt)), dtype=np.float32)


def prompt_view(prompt: str) -> str:
    """AP when the prompt names an AP / portable / supine film, else PA."""
    text = str(prompt)
    if re.search(r"\bPA\b", text) and not re.search(r"\bAP\b", text):
        return "PA"
    return "AP" if _AP_RE.search(text) else "PA"


def _fit(img: np.ndarray, height: int, width: int) -> np.ndarray:
    from ..imageio import resize

    return resize(np.asarray(img, dtype=np.float32), (int(width), int(height)))


class OracleGenerator(Generator):
    """Renders fresh demo-world patients with the prompt's labels (see the module docstring)."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(ORACLE, {"steps": 1, "guidance": 0.0, "height": DEFAULT_SIZE, "width": DEFAULT_SIZE},
                         device)

    def render(self, prompt: str, seed: int, height: int, width: int) -> np.ndarray:
        from ..demo_world import render_for_labels

        labels = prompt_labels(prompt)
        labels = np.where(np.isnan(labels), 0.0, labels).astype(np.float32)
        side = max(32, min(1024, max(int(height), int(width))))
        img = render_for_labels(labels, seed=stable_seed(prompt, seed, ORACLE), size=side, view=prompt_view(prompt))
        return _fit(np.asarray(img, dtype=np.float32) / 255.0, height, width)

    def _run_batch(self, prompts, seeds, *, steps, guidance, height, width, negative_prompt):
        return np.stack([self.render(p, s, height, width) for p, s in zip(prompts, seeds, strict=True)])


def _states(labels: np.ndarray) -> np.ndarray:
    """1 / 0 / -1 with blank (NaN) counted as absent (0), for matching."""
    arr = np.asarray(labels, dtype=np.float32)
    return np.where(np.isnan(arr), 0.0, arr)


def best_matches(prompt_lab: np.ndarray, train_labels: np.ndarray) -> np.ndarray:
    """Indices of the training rows with the fewest label disagreements with the prompt (blank = absent)."""
    mismatches = (_states(train_labels) != _states(prompt_lab)[None, :]).sum(axis=1)
    return np.flatnonzero(mismatches == mismatches.min())


class CopycatGenerator(Generator):
    """Returns a lightly perturbed training image whose labels best match the prompt's."""

    def __init__(self, source: Any = None, device: str = "cpu",
                 perturbations: tuple[str, ...] = COPYCAT_PERTURBATIONS) -> None:
        from ..imagesets import ImageSet, load_image_set

        spec = source if source is not None else (settings.get(COPYCAT_SOURCE_ENV)
                                                  or DEFAULT_COPYCAT_SOURCE)
        self.images = spec if isinstance(spec, ImageSet) else load_image_set(spec)
        if len(self.images) == 0:
            raise InputError(f"copycat: the training set {spec!r} has no images; give a set with images "
                             f"(set {COPYCAT_SOURCE_ENV}=FOLDER_OR_CSV[@split]).")
        self.train_labels = self.images.labels
        if self.train_labels.shape[1] != N_LABELS or not np.isfinite(self.train_labels).any():
            raise InputError(f"copycat: the training set {spec!r} has no labels to match prompts against; "
                             "give a set with the 14 label columns or prompts.")
        self.by_prompt: dict[str, np.ndarray] = {}
        if "prompt" in self.images.table.columns:
            texts = self.images.table["prompt"].fillna("").astype(str).map(lambda t: " ".join(t.split()))
            for text, rows in texts.groupby(texts).indices.items():
                if text:
                    self.by_prompt[text] = np.asarray(rows, dtype=np.int64)
        self.perturbations = tuple(perturbations)
        first = self.images.image(0)
        super().__init__(COPYCAT, {"steps": 1, "guidance": 0.0, "height": first.shape[0], "width": first.shape[1]},
                         device)

    def choose(self, prompt: str, seed: int) -> int:
        """Index of the training image copied for (prompt, seed): a seeded pick among the training images
        with exactly this prompt, else among those whose labels match it best."""
        candidates = self.by_prompt.get(" ".join(str(prompt).split()))
        if candidates is None:
            candidates = best_matches(prompt_labels(prompt), self.train_labels)
        rng = np.random.default_rng(stable_seed(prompt, seed, COPYCAT))
        return int(candidates[rng.integers(len(candidates))])

    def copy(self, prompt: str, seed: int, height: int, width: int) -> np.ndarray:
        from ..privacy.perturb import perturb_chain

        idx = self.choose(prompt, seed)
        img = _fit(self.images.image(idx), height, width)
        rng = np.random.default_rng([stable_seed(prompt, seed, COPYCAT), 1])
        return np.clip(perturb_chain(img, self.perturbations, rng), 0.0, 1.0).astype(np.float32)

    def _run_batch(self, prompts, seeds, *, steps, guidance, height, width, negative_prompt):
        return np.stack([self.copy(p, s, height, width) for p, s in zip(prompts, seeds, strict=True)])


def load_oracle(device: str = "cpu", dtype: Any = None, **_: Any) -> OracleGenerator:
    return OracleGenerator(device=device)


def load_copycat(device: str = "cpu", dtype: Any = None, **_: Any) -> CopycatGenerator:
    return CopycatGenerator(device=device)


def register() -> None:
    from .registry import register_builtin

    presets = {"steps": 1, "guidance": 0.0, "resolution": DEFAULT_SIZE}
    register_builtin(
        ORACLE, load_oracle, presets, label="Reference oracle (calibration)",
        notes="Best-case fidelity baseline: the prompt's labels (rule labeler) rendered on fresh demo-world "
              "patients; nothing is memorised. Blank labels drawn absent, uncertain ones faintly. Steps and "
              "guidance are ignored.",
    )
    register_builtin(
        COPYCAT, load_copycat, presets, label="Copycat (calibration)",
        notes="Worst-case privacy baseline, a model that memorised its training set: returns a lightly perturbed "
              "(brightness + JPEG) copy of the training image of the prompt (or, for a new prompt, of one whose "
              f"labels best match it). Training set: {DEFAULT_COPYCAT_SOURCE} (the reference set) or "
              f"${COPYCAT_SOURCE_ENV}. Steps and guidance are ignored.",
    )


register()
