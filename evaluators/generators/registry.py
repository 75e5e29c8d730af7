"""The generator registry: declarative model entries (TOML/YAML), merged from several places.

Like diffusers' ``model_index.json`` (a folder + a small config names the classes) and timm's
``list_models`` (a name table that says what exists and why something is unavailable), each model is
a small entry - pipeline class, weights, presets - never code. Sources, later ones overriding earlier
ones field by field (so a user entry holding only ``name`` and ``weights`` points a built-in at a
fine-tuned folder):

1. ``entries.toml`` next to this module (the 11 CheXGenBench architectures),
2. ``$CHEXGEN_HOME/models/*.toml|*.yaml|*.yml`` (sorted),
3. ``CHEXGEN_MODELS`` (paths separated by ``os.pathsep``; files or folders),
4. files added with ``--models-file`` / :func:`add_models_file`,
5. python factories registered with :func:`register_builtin` (demo model, calibration baselines).
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import settings
from ..errors import InputError

BUILTIN_FILE = Path(__file__).with_name("entries.toml")
KINDS = ("diffusers", "external", "builtin")
DTYPES = {"fp16": "fp16", "float16": "fp16", "half": "fp16", "bf16": "bf16", "bfloat16": "bf16",
          "fp32": "fp32", "float32": "fp32", "float": "fp32"}
REMOTE_CODE_ENV = "CHEXGEN_ALLOW_REMOTE_CODE"

_ENTRY_KEYS = {
    "name", "label", "kind", "pipeline", "weights", "factory", "lora", "dtype", "resolution", "steps",
    "guidance", "negative_prompt", "scheduler", "scheduler_config", "call_kwargs", "pipeline_kwargs",
    "allow_remote_code", "components", "compose", "notes", "paper_source", "how_to_provide",
}
_LORA_KEYS = {"weights", "weight_name", "scale", "adapter_name"}
_COMPONENT_KEYS = {"class", "weights", "subfolder", "remote_code", "kwargs", "config"}

_extra_files: list[Path] = []
_builtins: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA to load on top of the pipeline (a file, a folder + weight_name, or a Hub id + weight_name)."""

    weights: str
    weight_name: str | None = None
    scale: float = 1.0
    adapter_name: str = "chexgen"


@dataclass(frozen=True)
class ComponentSpec:
    """One pipeline component loaded by its own class from its own place (or ``None`` to drop it)."""

    cls: str
    weights: str | None = None
    subfolder: str | None = None
    remote_code: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def is_none(self) -> bool:
        return self.cls.lower() == "none"


@dataclass
class ModelEntry:
    """A model as the registry knows it; ``source`` is the last file that set a field of it."""

    name: str
    kind: str
    label: str = ""
    pipeline: str | None = None
    weights: str | None = None
    factory: str | Callable[..., Any] | None = None
    lora: LoraSpec | None = None
    dtype: str = "fp32"
    resolution: tuple[int, int] = (512, 512)
    steps: int = 50
    guidance: float = 7.5
    negative_prompt: str | None = None
    scheduler: str | None = None
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    pipeline_kwargs: dict[str, Any] = field(default_factory=dict)
    allow_remote_code: bool = False
    components: dict[str, ComponentSpec] = field(default_factory=dict)
    compose: bool = False
    notes: str = ""
    paper_source: str = ""
    how_to_provide: str = ""
    source: str = ""
    availability_fn: Callable[[], tuple[bool, str]] | None = None

    @property
    def presets(self) -> dict[str, Any]:
        """Generation defaults the UI and CLI start from."""
        return {
            "steps": self.steps,
            "guidance": self.guidance,
            "height": self.resolution[0],
            "width": self.resolution[1],
            "negative_prompt": self.negative_prompt,
            "dtype": self.dtype,
        }

    def needs_remote_code(self) -> bool:
        return self.allow_remote_code or any(c.remote_code for c in self.components.values())


def remote_code_allowed() -> bool:
    """The operator's switch: remote code from the Hub runs only when CHEXGEN_ALLOW_REMOTE_CODE=1."""
    return settings.get(REMOTE_CODE_ENV)


# ----------------------------------------------------------------------------------------------
# Reading files


def _read_file(path: Path) -> list[dict[str, Any]]:
    """Raw entry tables of one TOML/YAML file (``[[model]]`` list, ``models:`` list or name -> table)."""
    if not path.is_file():
        raise InputError(f"Models file {path} does not exist; give the path of a .toml or .yaml entry file.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        elif suffix in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        else:
            raise InputError(f"Models file {path}: unknown extension {suffix!r}; use .toml, .yaml or .yml.")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"Models file {path} is not valid TOML: {exc}") from exc
    except InputError:
        raise
    except Exception as exc:  # yaml.YAMLError and friends
        raise InputError(f"Models file {path} is not valid YAML: {exc}") from exc
    if isinstance(data, list):
        tables = data
    elif isinstance(data, dict):
        keys = [k for k in ("model", "models") if k in data]
        if not keys:
            raise InputError(f"Models file {path}: no 'model' key; write entries as [[model]] tables (TOML) "
                             "or a 'models:' list (YAML).")
        if len(data) > len(keys):
            extra = sorted(set(data) - set(keys))
            raise InputError(f"Models file {path}: unknown top-level key(s) {extra}; only 'model'/'models'.")
        tables = []
        for key in keys:
            value = data[key]
            if isinstance(value, dict):  # name -> table
                for name, table in value.items():
                    if not isinstance(table, dict):
                        raise InputError(f"Models file {path}: {key}.{name} must be a table.")
                    tables.append({"name": name, **table})
            elif isinstance(value, list):
                tables.extend(value)
            else:
                raise InputError(f"Models file {path}: '{key}' must be a list of tables.")
    else:
        raise InputError(f"Models file {path}: expected a list of model tables.")
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise InputError(f"Models file {path}: entry #{i + 1} is not a table.")
        if not isinstance(table.get("name"), str) or not table["name"].strip():
            raise InputError(f"Models file {path}: entry #{i + 1} has no 'name' (a non-empty string).")
        unknown = sorted(set(table) - _ENTRY_KEYS)
        if unknown:
            raise InputError(f"Models file {path}: model {table['name']!r} has unknown key(s) {unknown}; "
                             f"known keys: {sorted(_ENTRY_KEYS)}.")
    return tables


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Field-by-field override; tables (lora, components, kwargs) merge one key at a time."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_weights(value: str, base_dir: Path | None) -> str:
    """Paths (absolute, ~, ./, ../ or an existing folder relative to the file) become absolute; Hub ids stay."""
    text = value.strip()
    if text.startswith(("~", "/", "./", "../")) or (len(text) > 1 and text[1] == ":"):
        path = Path(text).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return str(path.resolve())
    if base_dir is not None and (base_dir / text).exists():
        return str((base_dir / text).resolve())
    return text


def _absolutize(table: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    out = dict(table)
    if isinstance(out.get("weights"), str):
        out["weights"] = _resolve_weights(out["weights"], base_dir)
    lora = out.get("lora")
    if isinstance(lora, dict) and isinstance(lora.get("weights"), str):
        out["lora"] = {**lora, "weights": _resolve_weights(lora["weights"], base_dir)}
    comps = out.get("components")
    if isinstance(comps, dict):
        new = {}
        for cname, spec in comps.items():
            if isinstance(spec, dict) and isinstance(spec.get("weights"), str):
                spec = {**spec, "weights": _resolve_weights(spec["weights"], base_dir)}
            new[cname] = spec
        out["components"] = new
    return out


def _want(cond: bool, where: str, key: str, what: str) -> None:
    if not cond:
        raise InputError(f"{where}: key '{key}' {what}.")


def _build(name: str, raw: dict[str, Any], where: str) -> ModelEntry:
    """Validate one merged table into a ModelEntry; every error names the file and the key."""
    kind = raw.get("kind")
    _want(kind in KINDS, where, "kind", f"must be one of {list(KINDS)} (got {kind!r})")
    e = ModelEntry(name=name, kind=kind, source=raw.get("_source", where))
    e.label = str(raw.get("label") or name)
    for key in ("pipeline", "weights", "notes", "paper_source", "how_to_provide", "scheduler", "negative_prompt"):
        if key in raw and raw[key] is not None:
            _want(isinstance(raw[key], str), where, key, "must be a string")
    e.pipeline = raw.get("pipeline") or None
    e.weights = raw.get("weights") or None
    e.notes = str(raw.get("notes", "")).strip()
    e.paper_source = str(raw.get("paper_source", "")).strip()
    e.how_to_provide = str(raw.get("how_to_provide", "")).strip()
    e.scheduler = raw.get("scheduler") or None
    neg = raw.get("negative_prompt")
    e.negative_prompt = neg if neg else None
    factory = raw.get("factory")
    _want(factory is None or isinstance(factory, str) or callable(factory), where, "factory",
          "must be 'package.module:function'")
    e.factory = factory

    dtype = str(raw.get("dtype", "fp32")).lower()
    _want(dtype in DTYPES, where, "dtype", "must be fp16, bf16 or fp32")
    e.dtype = DTYPES[dtype]
    res = raw.get("resolution", 512)
    if isinstance(res, int) and not isinstance(res, bool):
        res = (res, res)
    _want(isinstance(res, list | tuple) and len(res) == 2 and all(isinstance(v, int) and v > 0 for v in res),
          where, "resolution", "must be a positive integer or [height, width]")
    e.resolution = (int(res[0]), int(res[1]))
    steps = raw.get("steps", 50)
    _want(isinstance(steps, int) and not isinstance(steps, bool) and steps > 0, where, "steps",
          "must be a positive integer")
    e.steps = steps
    guidance = raw.get("guidance", 7.5)
    _want(isinstance(guidance, int | float) and not isinstance(guidance, bool) and guidance >= 0, where,
          "guidance", "must be a number >= 0")
    e.guidance = float(guidance)
    for key in ("scheduler_config", "call_kwargs", "pipeline_kwargs"):
        value = raw.get(key, {})
        _want(isinstance(value, dict), where, key, "must be a table")
        setattr(e, key, dict(value))
    for key in ("allow_remote_code", "compose"):
        value = raw.get(key, False)
        _want(isinstance(value, bool), where, key, "must be true or false")
        setattr(e, key, value)

    lora = raw.get("lora")
    if lora:
        _want(isinstance(lora, dict), where, "lora", "must be a table with weights, weight_name, scale")
        unknown = sorted(set(lora) - _LORA_KEYS)
        _want(not unknown, where, "lora", f"has unknown key(s) {unknown}")
        _want(isinstance(lora.get("weights"), str) and lora["weights"], where, "lora.weights",
              "must name a LoRA file, folder or Hub id")
        scale = lora.get("scale", 1.0)
        _want(isinstance(scale, int | float) and not isinstance(scale, bool), where, "lora.scale", "must be a number")
        wn = lora.get("weight_name")
        _want(wn is None or isinstance(wn, str), where, "lora.weight_name", "must be a file name")
        e.lora = LoraSpec(lora["weights"], wn, float(scale), str(lora.get("adapter_name") or "chexgen"))

    comps = raw.get("components", {})
    _want(isinstance(comps, dict), where, "components", "must be a table of component name -> spec")
    for cname, spec in comps.items():
        if isinstance(spec, str):  # "none" or a class name with nothing else
            spec = {"class": spec}
        _want(isinstance(spec, dict), where, f"components.{cname}", "must be a table or \"none\"")
        unknown = sorted(set(spec) - _COMPONENT_KEYS)
        _want(not unknown, where, f"components.{cname}", f"has unknown key(s) {unknown}")
        _want(isinstance(spec.get("class"), str) and spec["class"], where, f"components.{cname}.class",
              "must name a diffusers/transformers class (or \"none\")")
        for key in ("kwargs", "config"):
            _want(isinstance(spec.get(key, {}), dict), where, f"components.{cname}.{key}", "must be a table")
        _want(isinstance(spec.get("remote_code", False), bool), where, f"components.{cname}.remote_code",
              "must be true or false")
        e.components[cname] = ComponentSpec(
            cls=spec["class"], weights=spec.get("weights"), subfolder=spec.get("subfolder"),
            remote_code=spec.get("remote_code", False), kwargs=dict(spec.get("kwargs", {})),
            config=dict(spec.get("config", {})),
        )

    if kind == "diffusers":
        _want(bool(e.pipeline), where, "pipeline", "is required for kind 'diffusers' (e.g. \"StableDiffusionPipeline\")")
        _want(bool(e.weights) or e.compose, where, "weights", "is required for kind 'diffusers' (a folder or Hub id)")
    if kind == "builtin":
        _want(e.factory is not None, where, "factory", "is required for kind 'builtin' ('package.module:function')")
    return e


# ----------------------------------------------------------------------------------------------
# Sources and the merged table


def default_files() -> list[Path]:
    """Entry files read besides the built-ins: CHEXGEN_HOME/models/* then CHEXGEN_MODELS, then --models-file."""
    from ..settings import chexgen_home

    files: list[Path] = []
    home_models = chexgen_home() / "models"
    if home_models.is_dir():
        files += sorted(p for p in home_models.iterdir() if p.suffix.lower() in {".toml", ".yaml", ".yml"})
    for path in settings.get("CHEXGEN_MODELS"):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in {".toml", ".yaml", ".yml"})
        else:
            files.append(path)  # a missing file is reported by _read_file
    return files + list(_extra_files)


def add_models_file(path: str | os.PathLike[str]) -> None:
    """Add a user entry file to this process's registry (what ``--models-file`` does); validated now."""
    p = Path(path).expanduser().resolve()
    _read_file(p)
    if p not in _extra_files:
        _extra_files.append(p)


def register_builtin(
    name: str,
    factory: Callable[..., Any],
    presets: Mapping[str, Any] | None = None,
    *,
    label: str = "",
    notes: str = "",
    availability: Callable[[], tuple[bool, str]] | None = None,
    how_to_provide: str = "",
) -> None:
    """Register a python-built generator (kind "builtin"): ``factory(device=..., dtype=...) -> Generator``.

    ``presets`` may hold steps, guidance, resolution (or height/width), negative_prompt, dtype.
    ``availability()`` returns (available, reason) - e.g. whether the demo checkpoint is trained yet.
    """
    presets = dict(presets or {})
    if "height" in presets or "width" in presets:
        h = presets.pop("height", presets.get("width", 512))
        presets["resolution"] = [h, presets.pop("width", h)]
    unknown = sorted(set(presets) - {"steps", "guidance", "resolution", "negative_prompt", "dtype"})
    if unknown:
        raise InputError(f"register_builtin({name!r}): unknown preset(s) {unknown}.")
    _builtins[name] = {
        "name": name, "kind": "builtin", "factory": factory, "label": label or name, "notes": notes,
        "how_to_provide": how_to_provide, "_availability": availability, **presets,
    }


def unregister_builtin(name: str) -> None:
    _builtins.pop(name, None)


# Modules that register the shipped python generators (demo model, calibration baselines) on import.
BUILTIN_MODULES = ("evaluators.generators.demo", "evaluators.generators.baselines")


def _import_builtin_modules() -> None:
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def load_entries(files: Iterable[str | os.PathLike[str]] = (), *, defaults: bool = True) -> dict[str, ModelEntry]:
    """All entries: built-ins, then the default user files (if ``defaults``), then ``files``; merged by name."""
    _import_builtin_modules()
    tables: dict[str, dict[str, Any]] = {}
    sources = [BUILTIN_FILE] + (default_files() if defaults else []) + [Path(f).expanduser() for f in files]
    for path in sources:
        for table in _read_file(path):
            table = _absolutize(table, path.parent if path != BUILTIN_FILE else None)
            name = table["name"].strip()
            table["_source"] = str(path)
            tables[name] = _merge(tables.get(name, {}), table)
    for name, spec in _builtins.items():
        tables[name] = _merge(tables.get(name, {}), {k: v for k, v in spec.items() if k != "_availability"})
        tables[name]["_source"] = "register_builtin"
    entries: dict[str, ModelEntry] = {}
    for name, table in tables.items():
        entry = _build(name, table, f"Models file {table.get('_source')} (model {name!r})")
        if name in _builtins:
            entry.availability_fn = _builtins[name]["_availability"]
        entries[name] = entry
    return entries


def get_entry(name: str, files: Iterable[str | os.PathLike[str]] = ()) -> ModelEntry:
    """One entry by name (case-insensitive; labels such as "SD V1-4" work too)."""
    entries = load_entries(files)
    if name in entries:
        return entries[name]
    key = name.strip().lower()
    for entry in entries.values():
        if key in {entry.name.lower(), entry.label.lower()}:
            return entry
    raise InputError(f"Unknown model {name!r}; known models: {', '.join(sorted(entries))}. "
                     "Add one with an entry file (--models-file FILE, CHEXGEN_MODELS or CHEXGEN_HOME/models/).")
