"""Feature encoders for every fidelity, privacy and embedding metric (see :mod:`.registry`)."""

from __future__ import annotations

from .base import Encoder, file_sha256
from .registry import (
    Availability,
    EncoderSpec,
    availability,
    default_encoder,
    list_encoders,
    load_encoder,
    register_encoder,
)

__all__ = [
    "Availability",
    "Encoder",
    "EncoderSpec",
    "availability",
    "default_encoder",
    "file_sha256",
    "list_encoders",
    "load_encoder",
    "register_encoder",
]
