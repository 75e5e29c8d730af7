"""Text-to-image generators: a registry of declarative model entries and one loading path.

>>> from evaluators.generators import list_models, load_generator
>>> gen = load_generator("sana-0.6b", device="cuda")            # doctest: +SKIP
>>> images = gen.generate(["Small left pleural effusion."], seeds=[0, 1, 2])  # doctest: +SKIP

Torch and diffusers are imported only when a model is loaded, so listing models stays cheap.
"""

from __future__ import annotations

from .base import Generator, is_out_of_memory, to_grayscale
from .pipelines import (
    Availability,
    DiffusersGenerator,
    availability,
    entry_availability,
    list_models,
    load_generator,
)
from .registry import (
    ComponentSpec,
    LoraSpec,
    ModelEntry,
    add_models_file,
    get_entry,
    load_entries,
    register_builtin,
    unregister_builtin,
)

__all__ = [
    "Availability",
    "ComponentSpec",
    "DiffusersGenerator",
    "Generator",
    "LoraSpec",
    "ModelEntry",
    "add_models_file",
    "availability",
    "entry_availability",
    "get_entry",
    "is_out_of_memory",
    "list_models",
    "load_entries",
    "load_generator",
    "register_builtin",
    "to_grayscale",
    "unregister_builtin",
]
