"""Generation on a reference: images for one prompt (kept in memory with what inspection adds to them), and
synthetic sets generated from the reference's own prompts (a folder of PNGs + ``metadata.csv``).

:class:`Generators` caches loaded models; a model that fails to load is reported unavailable with the reason
and is not cached, so a retry tries again.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UnavailableError
from .context import RunContext

log = logging.getLogger("evaluators.runs")
Progress = Callable[[int, int, str], None]


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (model names in folder and zip names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "set"


@dataclass
class Generated:
    """Images from one prompt, with everything inspection (:mod:`.inspect`) adds about them."""

    model: str
    images: list[np.ndarray]
    prompts: list[str]
    seeds: list[int]
    settings: dict
    neighbours: list[list] = field(default_factory=list)  # per image: list[Neighbour]
    top1: np.ndarray | None = None  # encoder cosine similarity to the nearest training image
    copy_score: np.ndarray | None = None  # the memorisation search's copy score (aligned pixel match)
    match_row: np.ndarray | None = None  # the training row it matched (index row), -1 for none
    threshold: float | None = None
    flags: np.ndarray | None = None
    copy_p_value: np.ndarray | None = None  # the search's p-value per image, when the engine gives one
    umap: np.ndarray | None = None  # [N, 2] map positions, or None when the index has no map
    reid: list[float | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    session: str | None = None  # whose images these are (exports go to that session's folder)

    def __len__(self) -> int:
        return len(self.images)


class Generators:
    """Loaded generators by name (each loaded once, under a lock)."""

    def __init__(self, device: str | Callable[[], str] | None = None):
        self._device = device
        self._lock = threading.Lock()
        self._loaded: dict[str, object] = {}

    def get(self, name: str):
        """A loaded generator. A model that fails to load raises UnavailableError with the reason; the failure is
        not cached, so the other models keep working and a retry tries again."""
        with self._lock:
            if name not in self._loaded:
                from ..generators import load_generator

                device = self._device() if callable(self._device) else self._device
                try:
                    self._loaded[name] = load_generator(name, device=device)
                except (InputError, UnavailableError):
                    raise
                except Exception as exc:  # a broken checkpoint, missing package, out of memory...
                    log.exception("model %s failed to load", name)
                    raise UnavailableError(
                        f"Model {name!r} failed to load: {type(exc).__name__}: {exc}. The other models still "
                        "work; check the model's files and entry (Setup tab lists where they are looked for)."
                    ) from exc
            return self._loaded[name]


def _gen_progress(progress: Progress | None, text: Callable[[int], str]) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        if progress:
            progress(done, total, text(total))

    return report


def generate(gen, model: str, prompt: str, seeds: list[int], *, steps: int | None = None,
             guidance: float | None = None, device: str | None = None, session: str | None = None,
             progress: Progress | None = None) -> Generated:
    """One image per seed for ``prompt`` from the loaded generator ``gen`` (not yet inspected)."""
    images = gen.generate([prompt], seeds, steps=steps, guidance=guidance,
                          progress=_gen_progress(progress, lambda total: f"generating with {model}"))
    settings = {"prompt": prompt, "seeds": seeds, "steps": steps or gen.presets.get("steps"),
                "guidance": guidance if guidance is not None else gen.presets.get("guidance"), "device": device}
    return Generated(model=model, images=images, prompts=[prompt] * len(seeds), seeds=seeds, settings=settings,
                     notes=list(getattr(gen, "messages", []) or []), session=session)


def example_prompts(ctx: RunContext, pathology: str, n_reference: int = 3, seed: int = 0) -> list[str]:
    """A composed report-style prompt for ``pathology``, then up to ``n_reference`` real reference reports
    positive for it (the model was trained on text like these)."""
    from ..pathologies import INDEX, resolve_pathology
    from ..reports import example_prompt

    name = resolve_pathology(pathology)
    rng = np.random.default_rng(seed)
    out = [example_prompt(name, rng)]
    try:
        ref = ctx.reference_set()
    except (InputError, UnavailableError):
        return out
    pos = np.flatnonzero(ref.labels[:, INDEX[name]] == 1.0)
    prompts = ref.prompts
    seen: set[str] = set(out)
    for i in rng.permutation(pos):
        p = prompts[int(i)]
        if isinstance(p, str) and p.strip() and p not in seen:
            seen.add(p)
            out.append(p)
        if len(out) > n_reference:
            break
    return out


def reference_prompts(ctx: RunContext, n: int, seed: int = 0):
    """``n`` reference rows (prompt + labels) drawn without replacement (with, once exhausted)."""
    ref = ctx.reference_set()
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(ref))
    if n > len(rows):
        rows = np.concatenate([rows, rng.integers(0, len(ref), n - len(rows))])
    return ref.table.iloc[rows[:n]].reset_index(drop=True)


def synthetic_set(ctx: RunContext, gen, model: str, n: int, out_root: Path, *, seed: int = 0,
                  steps: int | None = None, guidance: float | None = None, progress: Progress | None = None):
    """Generate ``n`` images from ``model`` with reference prompts (and their labels) into a new folder under
    ``out_root``: PNGs + ``metadata.csv``; returns the loaded ImageSet."""
    import pandas as pd
    from PIL import Image

    from ..imageio import to_uint8
    from ..imagesets import load_image_set
    from ..pathologies import PATHOLOGIES

    rows = reference_prompts(ctx, n, seed)
    prompts = rows["prompt"].fillna("").astype(str).tolist()
    seeds = [int(seed) + i for i in range(n)]
    images = gen.generate(prompts, seeds, steps=int(steps) if steps else None,
                          guidance=float(guidance) if guidance is not None else None,
                          progress=_gen_progress(progress, lambda total: f"generating {total} images with {model}"))
    out = Path(out_root) / f"{slug(model)}-n{n}-seed{seed}-{uuid.uuid4().hex[:6]}"
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"path": [f"{i:05d}.png" for i in range(n)], "prompt": prompts, "seed": seeds})
    for p in PATHOLOGIES:
        table[p] = rows[p].to_numpy()
    for name, img in zip(table["path"], images):
        Image.fromarray(to_uint8(img)).save(out / name)
    table.to_csv(out / "metadata.csv", index=False)
    return load_image_set(str(out / "metadata.csv"), images_root=str(out))
