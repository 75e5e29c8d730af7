"""Loading model weights without running code from the file.

A ``.pth``/``.pt``/``.ckpt`` file is a pickle, and unpickling can call any Python function (a
``__reduce__`` that runs ``os.system`` is enough). Weights shared for this project (the CheXGenBench
re-ID checkpoint, user-trained models) are therefore read only through

- ``safetensors`` (no code at all), or
- ``torch.load(..., map_location="cpu", weights_only=True)``, whose restricted unpickler accepts tensors
  and plain containers and refuses every other global *before* calling it.

A file that needs anything else is refused with an :class:`InputError` saying how to convert it.
Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``, ``module.`` prefixes from DataParallel,
``_orig_mod.`` from ``torch.compile``) are unwrapped so a state dict comes out.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import InputError

# Keys under which training scripts commonly nest the weights, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "params")
# Prefixes that wrappers add to every key (DataParallel / DistributedDataParallel, torch.compile).
STRIP_PREFIXES = ("module.", "_orig_mod.")

_CONVERT_HINT = (
    "Convert it in an environment you trust: load it there and save only the weights, either "
    "`safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')` or "
    "`torch.save(model.state_dict(), 'weights.pth')`."
)


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length and a JSON header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n < path.stat().st_size


# Globals a plain state dict may reference (tensor rebuilding, OrderedDict, numpy scalars).
_PLAIN_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.", "builtins.set")


def _pickle_globals(path: Path) -> list[str]:
    """Names of the globals a pickle asks for, read statically (nothing is executed).

    Used only to explain a refusal: a plain pickle (or the ``data.pkl`` inside a torch zip file)
    is scanned with :mod:`pickletools`, which parses opcodes without importing anything.
    """
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return []
                data = zf.read(member)
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile):
        return []
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
    except Exception:  # a truncated or garbage pickle: report what was seen before the damage
        pass
    return list(dict.fromkeys(names))


def _load_raw(path: Path) -> object:
    if _is_safetensors(path) or path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError / OSError
            raise InputError(
                f"{path} is not a readable safetensors file ({exc}). Re-export it with "
                "`safetensors.torch.save_file(state_dict, path)`."
            ) from None
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4" notes from the safe unpickler
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = [n for n in _pickle_globals(path) if not n.startswith(_PLAIN_GLOBALS)]
        match = re.search(r"GLOBAL (\S+)", str(exc))
        if match and match.group(1) not in names:
            names.insert(0, match.group(1))
        if names:
            raise InputError(
                f"{path} refers to Python code or classes ({', '.join(names[:3])}), which are not run when "
                f"loading weights (unpickling can execute anything). {_CONVERT_HINT}"
            ) from None
        detail = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0]
        raise InputError(
            f"{path} is not a weights file that can be read safely (safetensors or a PyTorch state dict "
            f"saved with torch.save): {detail}. {_CONVERT_HINT}"
        ) from None
    except Exception as exc:  # garbage bytes make the (safe) unpickler fail in many ways: IndexError, TypeError, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{path} is not a weights file (safetensors or a PyTorch state dict): {first}. "
            "Check that the download finished and the file is the checkpoint."
        ) from None


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def unwrap_state_dict(obj: object, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside common wrappers; prefixes such as ``module.`` removed."""
    seen = 0
    while not _is_tensor_dict(obj) and isinstance(obj, Mapping) and seen < 4:
        seen += 1
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                obj = inner
                break
        else:
            break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(
            f"{source} holds no state dict (found {type(obj).__name__}). Save `model.state_dict()`, "
            "not the model object."
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(
            f"{source} has no tensors under its keys ({', '.join(map(str, list(obj)[:8]))}); "
            f"expected a state dict, possibly under one of {', '.join(WRAPPER_KEYS)}."
        )
    for prefix in STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (safetensors or a weights-only PyTorch pickle), on the CPU.

    Raises InputError for a missing, empty or unreadable file and for a pickle that needs code.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"Weights file {p} does not exist. Check the path.")
    if p.is_dir():
        raise InputError(f"{p} is a folder; give the weights file inside it (.safetensors or .pth).")
    if p.stat().st_size == 0:
        raise InputError(f"Weights file {p} is empty (0 bytes); the download or copy did not finish.")
    return unwrap_state_dict(_load_raw(p), source=str(p))


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write tensors as safetensors (atomically: a killed write leaves no half file).

    ``metadata`` values are stored as strings (non-strings as JSON) in the safetensors header.
    """
    from safetensors.torch import save_file

    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    # Clones: safetensors refuses tensors that share storage, and views must be contiguous.
    tensors = {str(k): v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = None
    if metadata:
        meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
