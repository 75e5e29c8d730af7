"""Running on a Hugging Face Space: ZeroGPU, the Hub token, and whether the app is public.

No Gradio here. On a ZeroGPU Space the GPU exists only inside functions decorated with
``spaces.GPU``; :func:`gpu` applies that decorator there and nowhere else, so the same code runs
unchanged on a laptop, a GPU Space (t4-small) and ZeroGPU. The decorated function runs in a forked
process on ZeroGPU: give it plain (picklable) arguments and let it return CPU data.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TypeVar

from . import settings

F = TypeVar("F", bound=Callable)

ZERO_GPU_ENV = "SPACES_ZERO_GPU"
TOKEN_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def is_space() -> bool:
    """True inside a Hugging Face Space (the platform sets SPACE_ID)."""
    return bool(settings.get("SPACE_ID"))


def zero_gpu() -> bool:
    """True when ZeroGPU is in force: the Space sets SPACES_ZERO_GPU and the ``spaces`` package is installed."""
    return bool(settings.get(ZERO_GPU_ENV)) and importlib.util.find_spec("spaces") is not None


def gpu(duration: int | None = 60) -> Callable[[F], F]:
    """Decorator factory: ``spaces.GPU(duration=...)`` on ZeroGPU, else the function unchanged.

    ``duration`` is the most seconds one call may hold the GPU (ZeroGPU's scheduler prefers short calls).
    """

    def wrap(fn: F) -> F:
        if not zero_gpu():
            return fn
        import spaces

        return spaces.GPU(fn, duration=duration) if duration else spaces.GPU(fn)

    return wrap


def hf_token() -> str | None:
    """The Hub token for gated models (HF_TOKEN, a Space secret), or None.

    ``huggingface_hub`` (and so every ``from_pretrained``) reads HF_TOKEN itself; this is for code that
    wants to say whether a token is present, or to pass ``token=`` explicitly.
    """
    for name in TOKEN_ENVS:
        value = settings.get(name)
        if value:
            return value
    return None
