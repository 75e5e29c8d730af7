"""Settings in one place: where caches live, which device to use, whether the network may be tried.

- ``CHEXGEN_HOME``: caches, feature shards, reference indexes and the results database. Default:
  ``/data/chexgen`` on a Hugging Face Space with persistent storage, else ``~/.cache/chexgen``
  (``XDG_CACHE_HOME`` respected).
- ``CHEXGEN_DEVICE``: ``cuda``, ``mps`` or ``cpu`` (default: the best one present).
- Offline: ``HF_HUB_OFFLINE=1`` (or ``CHEXGEN_OFFLINE=1``) means nothing tries the network; loaders
  use ``local_files_only=True``.
- The public app's limits (``CHEXGEN_PUBLIC_MAX_*``, quotas, retention): whole numbers read by
  :func:`int_setting`; the table of work-scaling knobs is :data:`evaluators.limits.KNOBS`.
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def chexgen_home() -> Path:
    """Root folder for everything the engine writes (created on first use)."""
    env = os.environ.get("CHEXGEN_HOME")
    if env:
        home = Path(env).expanduser()
    elif Path("/data").is_dir() and os.access("/data", os.W_OK) and os.environ.get("SPACE_ID"):
        home = Path("/data/chexgen")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        home = base / "chexgen"
    home.mkdir(parents=True, exist_ok=True)
    return home


def subdir(name: str) -> Path:
    """A named folder under CHEXGEN_HOME (features, indexes, demo, results...)."""
    path = chexgen_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_offline() -> bool:
    """True when the network must not be tried (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE or CHEXGEN_OFFLINE)."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CHEXGEN_OFFLINE")
    )


def select_device(preference: str | None = None) -> str:
    """'cuda', 'mps' or 'cpu': the preference (or CHEXGEN_DEVICE) if present, else the best available."""
    import torch

    pref = (preference or os.environ.get("CHEXGEN_DEVICE") or "auto").strip().lower()
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            from .errors import InputError

            raise InputError(f"Device {pref!r} was asked for but CUDA is not available here; use --device cpu.")
        return pref
    if pref == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            from .errors import InputError

            raise InputError("Device 'mps' was asked for but MPS is not available here; use --device cpu.")
        return pref
    if pref == "cpu":
        return "cpu"
    if pref != "auto":
        from .errors import InputError

        raise InputError(f"Unknown device {pref!r}; use cuda, mps, cpu or auto.")
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def repo_root() -> Path:
    """The checkout (for shipped assets)."""
    return Path(__file__).resolve().parent.parent


def assets_dir() -> Path:
    return repo_root() / "assets"


def int_setting(name: str, default: int, *, minimum: int = 1) -> int:
    """A whole-number setting an operator may override with the environment variable ``name``.

    Unset or empty: ``default``. Anything that is not a whole number >= ``minimum`` is refused with an
    :class:`~evaluators.errors.InputError` naming the variable (a typo must not silently lift a limit).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        from .errors import InputError

        raise InputError(f"{name}={raw!r} is not a whole number >= {minimum}; unset it or give e.g. {default}.")
    return value
