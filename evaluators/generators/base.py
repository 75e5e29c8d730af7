"""The Generator interface: prompts + seeds in, grayscale float images out, whatever the model.

Batching, per-image seeding and the out-of-memory fallback live here once; a model only implements
``_run_batch``. The image for a seed does not depend on the batch it ran in: every image gets its own
CPU ``torch.Generator`` (so seeds also reproduce across devices), and an out-of-memory error halves
the batch and retries (the user is told) rather than failing the whole run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import jobs
from ..errors import InputError, UnavailableError

log = logging.getLogger("evaluators.generators")

Progress = Callable[[int, int], None]
Message = Callable[[str], None]


def stable_seed(prompt: str, seed: int, salt: str = "") -> int:
    """A 63-bit integer from (prompt, seed): the same in every process (unlike ``hash``)."""
    digest = hashlib.sha256(f"{salt}\x00{int(seed)}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA (and MPS) out-of-memory errors, whatever their class in this torch version."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # torch missing or odd build: fall back to the message
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """[B,H,W,C] or [B,H,W] floats -> [B,H,W] float32 in [0,1] (ITU-R BT.601 luma for RGB)."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 4:
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        elif arr.shape[-1] >= 3:
            arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        else:
            raise ValueError(f"cannot convert images with {arr.shape[-1]} channels to grayscale")
    if arr.ndim != 3:
        raise ValueError(f"expected [B,H,W(,C)] images, got shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False)


class Generator:
    """A loaded text-to-image model. Subclasses implement :meth:`_run_batch`.

    Attributes: ``name`` (registry name), ``presets`` (steps, guidance, height, width,
    negative_prompt, dtype), ``device`` and ``messages`` (what the user was told, e.g. OOM retries).
    """

    def __init__(self, name: str, presets: dict[str, Any] | None = None, device: str = "cpu") -> None:
        self.name = name
        self.presets = dict(presets or {})
        self.device = device
        self.messages: list[str] = []

    def _run_batch(
        self,
        prompts: list[str],
        seeds: list[int],
        *,
        steps: int,
        guidance: float,
        height: int,
        width: int,
        negative_prompt: str | None,
    ) -> np.ndarray:
        """One forward batch: returns [B,H,W] or [B,H,W,C] floats in [0,1]."""
        raise NotImplementedError

    def _free_memory(self) -> None:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass

    def _tell(self, message: str, on_message: Message | None) -> None:
        self.messages.append(message)
        log.warning(message)
        if on_message is not None:
            on_message(message)

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        steps: int | None = None,
        guidance: float | None = None,
        height: int | None = None,
        width: int | None = None,
        batch_size: int = 4,
        negative_prompt: str | None = None,
        progress: Progress | None = None,
        on_message: Message | None = None,
    ) -> list[np.ndarray]:
        """One image per (prompt, seed) pair: ``prompts`` and ``seeds`` have equal length, or one of them
        has length 1 and is repeated. Returns float32 [H,W] grayscale arrays in [0,1], in input order.

        Defaults come from the entry's presets. ``progress(done, total)`` is called after each batch;
        ``on_message(text)`` receives notices such as "out of memory at batch 8; retrying with 4".
        """
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        if not prompts or not seeds:
            return []
        if len(prompts) == 1 and len(seeds) > 1:
            prompts = prompts * len(seeds)
        elif len(seeds) == 1 and len(prompts) > 1:
            seeds = seeds * len(prompts)
        if len(prompts) != len(seeds):
            raise InputError(f"generate: {len(prompts)} prompts but {len(seeds)} seeds; give one seed per "
                             "prompt, or a single prompt / a single seed.")
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1 (got {batch_size}).")
        p = self.presets
        steps = int(steps if steps is not None else p.get("steps", 50))
        guidance = float(guidance if guidance is not None else p.get("guidance", 7.5))
        height = int(height if height is not None else p.get("height", 512))
        width = int(width if width is not None else p.get("width", height))
        if negative_prompt is None:
            negative_prompt = p.get("negative_prompt") or None
        if steps < 1 or height < 1 or width < 1:
            raise InputError(f"steps, height and width must be positive (got {steps}, {height}, {width}).")

        out: list[np.ndarray] = []
        total, start, size = len(prompts), 0, int(batch_size)
        while start < total:
            if progress is None:  # the caller's own progress callback reports otherwise
                jobs.tick(start, total, f"generating with {self.name}")
            else:
                jobs.check()
            chunk = slice(start, min(start + size, total))
            try:
                images = self._run_batch(
                    prompts[chunk], seeds[chunk], steps=steps, guidance=guidance, height=height,
                    width=width, negative_prompt=negative_prompt,
                )
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._free_memory()
                n = chunk.stop - chunk.start
                if n <= 1:
                    raise UnavailableError(
                        f"{self.name}: out of memory with a single {height}x{width} image on {self.device}. "
                        "Try model CPU offload (--offload model), attention slicing, VAE tiling, a smaller "
                        "resolution or a machine with more GPU memory."
                    ) from exc
                size = max(1, n // 2)
                self._tell(f"out of memory at batch {n}; retrying with {size}", on_message)
                continue
            gray = to_grayscale(images)
            if gray.shape[0] != chunk.stop - chunk.start:
                raise RuntimeError(f"{self.name} returned {gray.shape[0]} images for {chunk.stop - chunk.start} prompts")
            out.extend(gray[i] for i in range(gray.shape[0]))
            start = chunk.stop
            if progress is not None:
                progress(start, total)
        return out
