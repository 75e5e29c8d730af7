"""One loading path for every registry entry, and the diffusers Generator.

``load_generator`` turns an entry into a :class:`~.base.Generator`: diffusers entries go through the
named pipeline class's ``from_pretrained`` (or, for compositions such as RadEdit, the class built
from components each loaded by its own class from its own id); LoRA through
``pipe.load_lora_weights``; nothing downloads when offline or when the weights are a local folder;
remote code runs only when the entry asks for it *and* the operator set CHEXGEN_ALLOW_REMOTE_CODE=1.
``availability`` says, without importing torch, whether an entry's files are on this machine.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import jobs
from ..errors import InputError, UnavailableError
from ..settings import is_offline
from .base import Generator
from .registry import REMOTE_CODE_ENV, ComponentSpec, ModelEntry, get_entry, load_entries, remote_code_allowed

TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
OFFLOAD_MODES = ("model", "sequential")


# ----------------------------------------------------------------------------------------------
# Availability


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str
    how_to_provide: str = ""


def is_local(weights: str) -> bool:
    """A local path (absolute or existing) rather than a Hugging Face Hub id."""
    return os.path.isabs(weights) or weights.startswith(("~", ".")) or Path(weights).exists()


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _in_hub_cache(repo: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo, filename)
    except Exception:  # malformed repo id and the like
        return False
    return isinstance(hit, str)


def _marker(spec: ComponentSpec | None) -> str:
    """The file whose presence shows a source is complete enough to load."""
    if spec is None:
        return "model_index.json"
    cls = spec.cls.lower()
    if "tokenizer" in cls:
        name = "tokenizer_config.json"
    elif "scheduler" in cls:
        name = "scheduler_config.json"
    else:
        name = "config.json"
    return f"{spec.subfolder}/{name}" if spec.subfolder else name


_LOCAL_FIX = "point weights at the folder written by save_pretrained (in an entry file, --models-file)"


def _check_source(what: str, weights: str, marker: str) -> tuple[bool, str, str]:
    """(ok, reason, fix) for one folder or Hub id; a Hub fix is the download command."""
    if is_local(weights):
        path = Path(weights).expanduser()
        if not path.exists():
            return False, f"{what}: folder {path} does not exist", _LOCAL_FIX
        if not (path / marker).is_file():
            return False, (f"{what}: {path} has no {marker} (not a saved diffusers/transformers folder; "
                           "save it with save_pretrained)"), _LOCAL_FIX
        return True, f"{what}: local folder {path}", ""
    if _in_hub_cache(weights, marker):
        return True, f"{what}: {weights} in the Hugging Face cache", ""
    if is_offline():
        return (False, f"{what}: offline and {weights} is not in the Hugging Face cache at {_hub_cache_dir()}",
                f"huggingface-cli download {weights}")
    return True, f"{what}: {weights} is not cached yet; it downloads from the Hugging Face Hub on first load", ""


def _check_lora(spec) -> tuple[bool, str, str]:
    src = spec.weights
    if is_local(src):
        path = Path(src).expanduser()
        file = path / spec.weight_name if (path.is_dir() and spec.weight_name) else path
        if path.is_dir() and not spec.weight_name:
            found = sorted(path.glob("*.safetensors"))
            file = found[0] if found else path / "pytorch_lora_weights.safetensors"
        if file.is_file():
            return True, f"LoRA: {file}", ""
        return False, f"LoRA: {file} does not exist", "set lora.weights to the LoRA file (or folder + weight_name)"
    name = spec.weight_name or "pytorch_lora_weights.safetensors"
    if _in_hub_cache(src, name):
        return True, f"LoRA: {src}/{name} in the Hugging Face cache", ""
    if is_offline():
        return (False, f"LoRA: offline and {src}/{name} is not in the Hugging Face cache at {_hub_cache_dir()}",
                f"huggingface-cli download {src} {name}")
    return True, f"LoRA: {src}/{name} downloads on first load", ""


def _how(fixes: list[str]) -> str:
    downloads = list(dict.fromkeys(f"`{f}`" for f in fixes if f.startswith("huggingface-cli")))
    others = [f for f in fixes if not f.startswith("huggingface-cli")]
    parts = []
    if downloads:
        parts.append(f"on a machine with internet run {' and '.join(downloads)}, then copy the cache to "
                     f"{_hub_cache_dir()} (or set weights = \"/path/to/folder\" in an entry file)")
    parts += list(dict.fromkeys(others))
    return "; ".join(parts)


def entry_availability(entry: ModelEntry) -> Availability:
    """Whether ``entry`` can be loaded here, why not, and how to provide what is missing."""
    if entry.kind == "external":
        return Availability(False, "external model: not generated here; import its images with their prompts "
                            "(a CSV with prompt + img_savename next to the image folder)",
                            entry.how_to_provide or "generate with the model's own code, then import the folder + CSV")
    if entry.kind == "builtin":
        factory = entry.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            try:
                factory = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                return Availability(False, f"factory {entry.factory} cannot be imported ({exc})",
                                    entry.how_to_provide or "install or write the module that defines it")
        if entry.availability_fn is not None:
            ok, reason = entry.availability_fn()
            return Availability(bool(ok), reason, "" if ok else entry.how_to_provide)
        return Availability(True, "built-in python model", "")

    checks: list[tuple[bool, str, str]] = []
    if entry.needs_remote_code() and not remote_code_allowed():
        repos = [c.weights or entry.weights or "" for c in entry.components.values() if c.remote_code]
        where = ", ".join(dict.fromkeys(repos)) or entry.weights or entry.name
        checks.append((False, f"needs remote code from the Hub ({where}) and remote code is off",
                       f"if you trust that code, set {REMOTE_CODE_ENV}=1 in the environment"))
    if not entry.compose:
        checks.append(_check_source("weights", entry.weights or "", _marker(None)))
    for cname, spec in entry.components.items():
        if spec.is_none or (spec.weights is None and (not entry.compose or not entry.weights)):
            continue  # "none", or built from config (schedulers)
        checks.append(_check_source(cname, spec.weights or entry.weights or "", _marker(spec)))
    if entry.lora is not None:
        checks.append(_check_lora(entry.lora))
    bad = [c for c in checks if not c[0]]
    if bad:
        return Availability(False, "; ".join(c[1] for c in bad), _how([c[2] for c in bad if c[2]]))
    return Availability(True, "; ".join(c[1] for c in checks), "")


def availability(name: str, files=()) -> Availability:
    return entry_availability(get_entry(name, files))


def list_models(files=()) -> list[dict[str, Any]]:
    """Every entry with its availability: name, label, kind, available, reason, how_to_provide, pipeline,
    weights, presets, notes, source (the file that defined it)."""
    rows = []
    for entry in load_entries(files).values():
        av = entry_availability(entry)
        rows.append({
            "name": entry.name, "label": entry.label, "kind": entry.kind, "available": av.available,
            "reason": av.reason, "how_to_provide": av.how_to_provide, "pipeline": entry.pipeline,
            "weights": entry.weights, "presets": entry.presets, "notes": entry.notes,
            "paper_source": entry.paper_source, "source": entry.source,
        })
    return rows


# ----------------------------------------------------------------------------------------------
# Loading


def _torch_dtype(dtype: str | Any | None, entry: ModelEntry, device: str):
    """The entry's dtype on accelerators; float32 on CPU unless asked (half precision is slow or missing there)."""
    import torch

    if dtype is None:
        key = entry.dtype if not str(device).startswith("cpu") else "fp32"
    elif isinstance(dtype, torch.dtype):
        return dtype
    else:
        from .registry import DTYPES

        key = DTYPES.get(str(dtype).lower())
        if key is None:
            raise InputError(f"Unknown dtype {dtype!r}; use fp16, bf16 or fp32.")
    return getattr(torch, TORCH_DTYPES[key])


def _class(name: str, entry: ModelEntry, key: str):
    """A class by name: "module.Class" explicitly, else diffusers then transformers (transformers first
    for its Auto* loaders, since diffusers has an AutoModel of its own)."""
    if "." in name:
        module, _, attr = name.rpartition(".")
        order, name = (module,), attr
    elif name.startswith("Auto") and not name.startswith(("Autoencoder", "AutoPipeline")):
        order = ("transformers", "diffusers")
    else:
        order = ("diffusers", "transformers")
    for module in order:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        cls = getattr(mod, name, None)
        if cls is not None:
            return cls
    raise InputError(f"Models file {entry.source} (model {entry.name!r}): key '{key}' names {name!r}, which is "
                     "neither a diffusers nor a transformers class (check the spelling, or upgrade diffusers).")


def _load_component(cname: str, spec: ComponentSpec, entry: ModelEntry, torch_dtype, local_only: bool):
    if spec.is_none:
        return None
    cls = _class(spec.cls, entry, f"components.{cname}.class")
    weights = spec.weights or (entry.weights if entry.compose else None)
    if weights is None:  # built from its config (a scheduler)
        return cls(**spec.config) if spec.config else cls()
    kwargs: dict[str, Any] = dict(spec.kwargs)
    if spec.subfolder:
        kwargs["subfolder"] = spec.subfolder
    if spec.remote_code:
        kwargs["trust_remote_code"] = True  # availability() has checked the operator's switch
    is_model = "tokenizer" not in spec.cls.lower() and "scheduler" not in spec.cls.lower() \
        and "processor" not in spec.cls.lower() and "extractor" not in spec.cls.lower()
    if is_model:
        kwargs["dtype"] = torch_dtype  # diffusers 0.42 and transformers 5 name it dtype (torch_dtype is deprecated)
    kwargs["local_files_only"] = local_only or is_local(weights)
    if spec.config and "scheduler" in spec.cls.lower():
        kwargs.update(spec.config)
    return cls.from_pretrained(weights, **kwargs)


def _load_diffusers(entry: ModelEntry, torch_dtype):
    import diffusers

    cls = getattr(diffusers, entry.pipeline or "", None)
    if cls is None:
        raise InputError(f"Models file {entry.source} (model {entry.name!r}): key 'pipeline' names "
                         f"{entry.pipeline!r}, which is not a diffusers pipeline class in diffusers "
                         f"{diffusers.__version__}.")
    local_only = is_offline()
    comps = {c: _load_component(c, s, entry, torch_dtype, local_only) for c, s in entry.components.items()}
    if entry.compose:
        if entry.scheduler and "scheduler" not in comps:
            comps["scheduler"] = _class(entry.scheduler, entry, "scheduler")(**entry.scheduler_config)
        try:
            pipe = cls(**comps, **entry.pipeline_kwargs)
        except TypeError as exc:
            raise InputError(f"Models file {entry.source} (model {entry.name!r}): components "
                             f"{sorted(comps)} do not fit {entry.pipeline}: {exc}") from exc
        return pipe.to(dtype=torch_dtype)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "local_files_only": local_only or is_local(entry.weights or ""),
        **entry.pipeline_kwargs,
        **comps,
    }
    if entry.allow_remote_code:
        kwargs["trust_remote_code"] = True
    pipe = cls.from_pretrained(entry.weights, **kwargs)
    if entry.scheduler:
        sched = _class(entry.scheduler, entry, "scheduler")
        pipe.scheduler = sched.from_config(pipe.scheduler.config, **entry.scheduler_config)
    return pipe


def _load_lora(pipe, entry: ModelEntry, scale: float | None) -> None:
    spec = entry.lora
    assert spec is not None
    src, weight_name = spec.weights, spec.weight_name
    if is_local(src) and Path(src).expanduser().is_file():
        path = Path(src).expanduser()
        src, weight_name = str(path.parent), path.name
    if not hasattr(pipe, "load_lora_weights"):
        raise InputError(f"Models file {entry.source} (model {entry.name!r}): {entry.pipeline} cannot load a LoRA.")
    try:
        pipe.load_lora_weights(src, weight_name=weight_name, adapter_name=spec.adapter_name,
                               local_files_only=is_offline() or is_local(spec.weights))
    except ValueError as exc:
        if "peft" in str(exc).lower():
            raise UnavailableError(f"{entry.name}: loading a LoRA needs the 'peft' package (pip install peft).") from exc
        raise
    pipe.set_adapters([spec.adapter_name], adapter_weights=[spec.scale if scale is None else float(scale)])


class DiffusersGenerator(Generator):
    """A diffusers pipeline behind the Generator interface."""

    def __init__(self, pipe, entry: ModelEntry, device: str) -> None:
        super().__init__(entry.name, entry.presets, device)
        self.pipe = pipe
        self.entry = entry
        params = inspect.signature(pipe.__call__).parameters
        self._accepts = set(params)
        self._open = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        bad = [k for k in entry.call_kwargs if k not in self._accepts and not self._open]
        if bad:  # a closed signature would fail at the first batch; say which key now
            raise InputError(f"Models file {entry.source} (model {entry.name!r}): call_kwargs {bad} are not "
                             f"arguments of {type(pipe).__name__}.__call__.")
        loose = [k for k in entry.call_kwargs if k not in self._accepts]
        if loose:  # swallowed by **kwargs: probably a typo, so say so once
            self._tell(f"{entry.name}: call_kwargs {loose} are not named arguments of "
                       f"{type(pipe).__name__}.__call__ and may be ignored", None)

    def _run_batch(self, prompts, seeds, *, steps, guidance, height, width, negative_prompt) -> np.ndarray:
        import torch

        kwargs: dict[str, Any] = dict(self.entry.call_kwargs)
        kwargs.update(
            prompt=list(prompts),
            generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            output_type="np",
        )
        if negative_prompt:
            if "negative_prompt" in self._accepts or self._open:
                kwargs["negative_prompt"] = [negative_prompt] * len(prompts)
            elif not any("negative prompt" in m for m in self.messages):
                self._tell(f"{self.name}: {type(self.pipe).__name__} takes no negative prompt; ignored", None)
        if "callback_on_step_end" in self._accepts and "callback_on_step_end" not in kwargs:
            kwargs["callback_on_step_end"] = _stop_check  # a cancelled job stops between denoising steps
        with torch.inference_mode():
            result = self.pipe(**kwargs)
        images = result.images if hasattr(result, "images") else result[0]
        return np.asarray(images, dtype=np.float32)


def _stop_check(pipe, step, timestep, callback_kwargs):
    """diffusers' ``callback_on_step_end``: raise :class:`evaluators.jobs.Stopped` when the job is cancelled."""
    jobs.check()
    return callback_kwargs


def _builtin_factory(entry: ModelEntry):
    factory = entry.factory
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UnavailableError(f"{entry.name}: factory {entry.factory} cannot be imported ({exc}).") from exc
    return factory


def load_generator(
    name: str,
    *,
    device: str = "cpu",
    dtype: str | Any | None = None,
    offload: str | None = None,
    attention_slicing: bool = False,
    vae_tiling: bool = False,
    lora_scale: float | None = None,
    files=(),
) -> Generator:
    """Load a registry model as a Generator on ``device``.

    ``dtype``: fp16/bf16/fp32 (default: the entry's on accelerators, fp32 on CPU). ``offload``: None,
    "model" (enable_model_cpu_offload) or "sequential" (enable_sequential_cpu_offload; GPU only).
    Raises UnavailableError (with how to provide the weights) when files are missing.
    """
    entry = get_entry(name, files)
    av = entry_availability(entry)
    if not av.available:
        raise UnavailableError(f"{entry.name} is unavailable: {av.reason}."
                               + (f" To provide it: {av.how_to_provide}." if av.how_to_provide else ""))
    if offload not in (None, "", *OFFLOAD_MODES):
        raise InputError(f"offload must be one of {list(OFFLOAD_MODES)} (got {offload!r}).")
    if offload and str(device).startswith("cpu"):
        raise InputError("CPU offload moves weights between the CPU and a GPU; it needs --device cuda.")
    torch_dtype = _torch_dtype(dtype, entry, device)

    if entry.kind == "builtin":
        gen = _builtin_factory(entry)(device=device, dtype=torch_dtype)
        if not isinstance(gen, Generator):
            raise InputError(f"builtin model {entry.name}: factory returned {type(gen).__name__}, not a Generator.")
        for key, value in entry.presets.items():
            gen.presets.setdefault(key, value)
        return gen

    pipe = _load_diffusers(entry, torch_dtype)
    if entry.lora is not None:
        _load_lora(pipe, entry, lora_scale)
    for module in getattr(pipe, "components", {}).values():
        if hasattr(module, "eval") and hasattr(module, "training"):
            module.eval()
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    if attention_slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()
    if vae_tiling:
        vae = getattr(pipe, "vae", None)
        if vae is None or not hasattr(vae, "enable_tiling"):
            raise InputError(f"{entry.name}: this pipeline's VAE does not support tiling.")
        vae.enable_tiling()
    return DiffusersGenerator(pipe, entry, device)
