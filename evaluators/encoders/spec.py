"""What an encoder module declares: its registry entry (:class:`EncoderSpec`) and its availability here.

Kept apart from :mod:`.registry` so that encoder modules import these types without importing the registry
that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .base import Encoder


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str
    how_to_provide: str = ""
    download: bool = False  # available only by downloading on first use (network allowed, weights not here)

    @property
    def local(self) -> bool:
        """Usable right now without the network."""
        return self.available and not self.download


Loader = Callable[..., Encoder]  # loader(weights=None|path, device="cpu", dtype="float32") -> Encoder
Checker = Callable[[str | Path | None], Availability]


@dataclass
class EncoderSpec:
    """A registry entry. ``check(weights)`` must be cheap (no model built, no network)."""

    name: str
    description: str
    loader: Loader
    dim: int
    optional: bool = True  # False only for encoders that need nothing beyond the core requirements
    check: Checker | None = None
    outputs: tuple[str, ...] = ("features",)
    extra: dict = field(default_factory=dict)
