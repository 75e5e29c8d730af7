"""Encoder registry: one name -> loader table, listing what is available here and why not.

Nothing is ever substituted: asking for an encoder that is not on this machine raises
:class:`UnavailableError` with the reason and how to provide it. :func:`default_encoder` picks the
best encoder that *is* available, in this order (why):

1. ``raddino``: RadDino, the chest X-ray encoder CheXGenBench uses for FID/KID/PRDC;
2. ``xrv-densenet``: torchxrayvision DenseNet-121 trained on eight chest X-ray datasets;
3. ``dinov2``: DINOv2 ViT-B/14, self-supervised on 142 M natural images (dgm-eval's space): not trained on
   radiographs, but a general perceptual space valid on any image, so above the demo encoder (trained on the
   demo world's phantoms, not valid on real X-rays) and Inception (a classifier's features, weak on X-rays);
4. ``demo``: the small encoder trained on the demo world (shipped with the app);
5. ``inception``: InceptionV3 (ImageNet) as in standard FID, weak on X-rays;
6. ``pixels``: downsampled pixels, always available (a sanity baseline, not a perceptual space).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import InputError, UnavailableError
from .base import Encoder
from .spec import (  # noqa: F401 - re-exported: plugins import them here
    Availability,
    Checker,
    EncoderSpec,
    Loader,
)

DEFAULT_ORDER = ("raddino", "xrv-densenet", "dinov2", "demo", "inception", "pixels")


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec, *, replace: bool = True) -> None:
    """Add (or replace) an encoder; e.g. the demo encoder's module registers its real loader here."""
    if not replace and spec.name in _REGISTRY:
        raise ValueError(f"Encoder {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec


_PLUGIN_ERRORS: dict[str, str] = {}


_LOADED = False


def _builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import biovil, dinov2, inception, pixels, raddino, xrv

    # A plugin imported before the first lookup (e.g. `import evaluators.demo_encoder`) has registered
    # itself already: it keeps its place over the reserved entry of the same name.
    early = dict(_REGISTRY)
    _REGISTRY.clear()
    for spec in (raddino.SPEC, xrv.SPEC, DEMO_SPEC, inception.SPEC, biovil.SPEC, dinov2.SPEC, pixels.SPEC):
        _REGISTRY[spec.name] = early.pop(spec.name, spec)
    _REGISTRY.update(early)
    for module in PLUGIN_MODULES:  # they replace reserved entries (e.g. "demo") with real loaders
        try:
            import_plugin(module)
        except Exception as exc:  # reported by the reserved entry instead of breaking every listing
            _PLUGIN_ERRORS[module] = f"{type(exc).__name__}: {exc}"


def names() -> list[str]:
    _builtin()
    return list(_REGISTRY)


def get_spec(name: str) -> EncoderSpec:
    _builtin()
    key = (name or "").strip().lower()
    if key not in _REGISTRY:
        raise InputError(f"Unknown encoder {name!r}; choose one of: {', '.join(_REGISTRY)} "
                         "(`python -m evaluators encoders` lists them).")
    return _REGISTRY[key]


def availability(name: str, weights: str | Path | None = None) -> Availability:
    """Whether ``name`` can be loaded here (with ``weights`` if given), why not, and how to provide it."""
    spec = get_spec(name)
    if spec.check is None:
        return Availability(True, "no weights needed")
    try:
        return spec.check(weights)
    except Exception as exc:  # a broken optional install must not break the listing
        return Availability(False, f"check failed: {type(exc).__name__}: {exc}", "")


def list_encoders() -> list[dict]:
    """Every registered encoder with its availability (for the CLI table and the app)."""
    rows = []
    for name in names():
        spec = _REGISTRY[name]
        av = availability(name)
        rows.append({"name": name, "available": av.available, "reason": av.reason,
                     "how_to_provide": av.how_to_provide, "dim": spec.dim, "description": spec.description})
    return rows


def load_encoder(name: str, *, weights: str | Path | None = None, device: str = "cpu",
                 dtype: str = "float32", preprocess: str = "clean") -> Encoder:
    """The named encoder, loaded from local weights; :class:`UnavailableError` (reason + fix) otherwise.

    ``preprocess``: ``clean``, ``chexgenbench`` or ``auto`` (:mod:`.chexgenbench`)."""
    from .chexgenbench import resolve_mode

    spec = get_spec(name)
    resolve_mode(preprocess, spec.name)  # a bad mode fails before any weights load
    av = availability(spec.name, weights)
    if not av.available:
        raise UnavailableError(f"Encoder {spec.name!r} is unavailable: {av.reason}. {av.how_to_provide}".strip())
    return spec.loader(weights=weights, device=device, dtype=dtype).with_preprocess(preprocess)


def default_encoder() -> str:
    """The best encoder whose weights are on this machine (order and reasons in this module's docstring).

    An encoder that would first have to be downloaded is not chosen by default, so a machine without
    internet never starts a download it cannot finish; name it explicitly to download it.
    """
    for name in DEFAULT_ORDER:
        if name in names() and availability(name).local:
            return name
    return "pixels"


# --------------------------------------------------------------------------------------------------
# The reserved "demo" entry: the demo world's module registers the real loader over it


# modules that register encoders on import: the demo encoder (first), FRD's radiomic features (needs PyRadiomics)
PLUGIN_MODULES = ("evaluators.demo_encoder", "evaluators.encoders.radiomics_features")
DEMO_WEIGHTS = "demo_encoder.safetensors"


def _demo_weights(weights: str | Path | None) -> Path:
    if weights:
        return Path(weights).expanduser()
    from ..settings import assets_dir

    return assets_dir() / DEMO_WEIGHTS


def _demo_check(weights: str | Path | None) -> Availability:
    path = _demo_weights(weights)
    how = (f"run `python scripts/train_demo_encoder.py` so that {path} exists, "
           "or pass --weights FILE")
    if not path.is_file():
        return Availability(False, f"demo encoder weights not found at {path}", how)
    errors = "; ".join(f"{m}: {e}" for m, e in _PLUGIN_ERRORS.items())
    return Availability(False, f"weights present at {path} but no demo encoder loader is registered"
                        + (f" ({errors})" if errors else ""),
                        f"install the module that defines it ({PLUGIN_MODULES[0]})")


def _demo_loader(**_kwargs) -> Encoder:
    raise UnavailableError("The demo encoder's loader is not registered (module "
                           f"{PLUGIN_MODULES[0]} is missing).")


DEMO_SPEC = EncoderSpec(
    name="demo",
    description="small encoder trained on the demo world (reserved; its module registers the loader)",
    loader=_demo_loader,
    dim=0,
    check=_demo_check,
)


def import_plugin(module: str) -> bool:
    """Import a module that registers encoders itself; False if it does not exist."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return False
    return True
