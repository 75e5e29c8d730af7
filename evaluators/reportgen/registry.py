"""Report-generation models as declarative entries (TOML/YAML), like the generators' registry.

Sources, later ones overriding earlier ones field by field (an entry holding only ``name`` and ``weights``
points a built-in at another folder):

1. ``entries.toml`` next to this module,
2. ``$CHEXGEN_HOME/report_models/*.toml|*.yaml|*.yml`` (sorted),
3. ``CHEXGEN_REPORT_MODELS`` (paths separated by ``os.pathsep``; files or folders),
4. files given with ``--models-file`` (``files=`` here).

Kinds: ``captioner`` (:mod:`.captioner`, trained from random weights per setting) and ``llava``
(:mod:`.vlm`: a transformers ``LlavaForConditionalGeneration`` folder fine-tuned with LoRA).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import settings
from ..errors import InputError
from .entry import ReportModelEntry

BUILTIN_FILE = Path(__file__).with_name("entries.toml")
ENV = "CHEXGEN_REPORT_MODELS"
KINDS = ("captioner", "llava")
_COMMON = {"name", "label", "kind", "notes", "how_to_provide", "epochs", "batch_size", "lr", "device"}
_KEYS = {
    "captioner": _COMMON | {"encoder", "image_size", "d_model", "layers", "heads", "ff", "max_len", "dropout",
                            "label_loss", "patience"},
    "llava": _COMMON | {"weights", "dtype", "lora", "prompt", "max_new_tokens", "patience", "image_size"},
}
_LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}
_INTS = {"epochs", "batch_size", "image_size", "d_model", "layers", "heads", "ff", "max_len", "max_new_tokens",
         "patience"}
_FLOATS = {"lr", "dropout", "label_loss"}


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"Report models file {path} does not exist; give the path of a .toml or .yaml entry file.")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        else:
            raise InputError(f"Report models file {path}: unknown extension {path.suffix!r}; use .toml, .yaml or .yml.")
    except InputError:
        raise
    except Exception as exc:  # TOML/YAML syntax, encoding
        raise InputError(f"Report models file {path} could not be parsed: {exc}") from exc
    tables = data.get("model", data.get("models")) if isinstance(data, dict) else data
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InputError(f"Report models file {path}: write entries as [[model]] tables (TOML) or a 'models:' list.")
    for i, t in enumerate(tables):
        if not isinstance(t.get("name"), str) or not t["name"].strip():
            raise InputError(f"Report models file {path}: entry #{i + 1} has no 'name'.")
    return tables


def _resolve(value: str, base: Path) -> str:
    text = value.strip()
    if text.startswith(("~", "/", "./", "../")):
        p = Path(text).expanduser()
        return str((p if p.is_absolute() else base / p).resolve())
    return str((base / text).resolve()) if (base / text).exists() else text


def _validate(name: str, raw: dict[str, Any], where: str) -> ReportModelEntry:
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(f"{where}: key 'kind' must be one of {list(KINDS)} (got {kind!r}).")
    unknown = sorted(set(raw) - _KEYS[kind] - {"_source"})
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown} for kind {kind!r}; known: {sorted(_KEYS[kind])}.")
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("name", "label", "kind", "notes", "how_to_provide", "_source"):
            continue
        if key in _INTS and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"{where}: key '{key}' must be a positive integer (got {value!r}).")
        if key in _FLOATS and (not isinstance(value, int | float) or isinstance(value, bool) or value < 0):
            raise InputError(f"{where}: key '{key}' must be a number >= 0 (got {value!r}).")
        if key == "lora" and (not isinstance(value, dict) or set(value) - _LORA_KEYS):
            raise InputError(f"{where}: key 'lora' must be a table with keys among {sorted(_LORA_KEYS)}.")
        if key == "dtype" and value not in ("fp32", "fp16", "bf16"):
            raise InputError(f"{where}: key 'dtype' must be fp32, fp16 or bf16 (got {value!r}).")
        params[key] = value
    if kind == "llava" and not params.get("weights"):
        raise InputError(f"{where}: key 'weights' is required for kind 'llava' (a Llava folder or Hub id).")
    return ReportModelEntry(name=name, kind=kind, label=str(raw.get("label") or name), notes=str(raw.get("notes", "")),
                            how_to_provide=str(raw.get("how_to_provide", "")), params=params,
                            source=str(raw.get("_source", where)))


def default_files() -> list[Path]:
    from ..settings import chexgen_home

    files: list[Path] = []
    home = chexgen_home() / "report_models"
    if home.is_dir():
        files += sorted(p for p in home.iterdir() if p.suffix.lower() in (".toml", ".yaml", ".yml"))
    for p in settings.get(ENV):
        files += sorted(q for q in p.iterdir() if q.suffix.lower() in (".toml", ".yaml", ".yml")) if p.is_dir() else [p]
    return files


def load_entries(files: Iterable[str | os.PathLike[str]] = ()) -> dict[str, ReportModelEntry]:
    tables: dict[str, dict[str, Any]] = {}
    for path in [BUILTIN_FILE, *default_files(), *(Path(f).expanduser() for f in files)]:
        for t in _read(path):
            t = dict(t)
            if isinstance(t.get("weights"), str) and path != BUILTIN_FILE:
                t["weights"] = _resolve(t["weights"], path.parent)
            name = t["name"].strip()
            merged = dict(tables.get(name, {}))
            for k, v in t.items():
                merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
            merged["_source"] = str(path)
            tables[name] = merged
    return {n: _validate(n, t, f"Report models file {t['_source']} (model {n!r})") for n, t in tables.items()}


def get_entry(name: str, files: Iterable[str | os.PathLike[str]] = ()) -> ReportModelEntry:
    entries = load_entries(files)
    key = name.strip().lower()
    for e in entries.values():
        if key in (e.name.lower(), e.label.lower()):
            return e
    raise InputError(f"Unknown report model {name!r}; known: {', '.join(sorted(entries))}. Add one with an entry "
                     f"file (--models-file FILE, {ENV} or CHEXGEN_HOME/report_models/).")


def availability(entry: ReportModelEntry, device: str | None = None) -> tuple[bool, str]:
    """(available, reason) of an entry on this machine (nothing is downloaded)."""
    if entry.kind == "captioner":
        import timm

        enc = str(entry.get("encoder", "resnet18"))
        if not timm.is_model(enc):
            return False, f"timm has no architecture {enc!r}"
        return True, f"trains from random weights ({enc} + transformer decoder)"
    from .vlm import llava_availability

    return llava_availability(entry, device)


def list_models(files: Iterable[str | os.PathLike[str]] = (), device: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for e in load_entries(files).values():
        ok, why = availability(e, device)
        rows.append({"name": e.name, "label": e.label, "kind": e.kind, "available": ok, "reason": why,
                     "how_to_provide": "" if ok else e.how_to_provide, "source": e.source})
    return rows
