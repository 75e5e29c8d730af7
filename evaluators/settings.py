"""Settings in one place: every environment variable the engine and the app read, typed and documented.

This is the only module that reads ``os.environ`` (``tests/test_settings.py`` fails if another module of
``evaluators/``, ``chexgen_ui/`` or ``app.py`` does). Each variable is one :class:`Setting` in
:data:`SETTINGS` (name, kind, default, what it does); the README's settings table is
:func:`table_markdown` of that registry, and a test keeps the two equal. Values are read at call time,
never frozen at import, so an operator (or a test with ``monkeypatch.setenv``) changes them for the next
call. Accessors:

- :func:`get` ``(name)``: the typed value (``int``, ``str``, ``bool`` for flags, ``Path`` for paths, a list
  of ``Path`` for path lists) or the registry's default when the variable is unset or blank.
- :func:`int_setting` ``(name, default, minimum=...)``: a whole number, for callers whose default depends on
  the mode (the public app's limits). Every integer goes through one parser: a whole number (``12``,
  ``1e6``) >= the setting's minimum, else an :class:`~evaluators.errors.InputError` naming the variable
  (a typo must not silently lift a limit).
- :func:`chexgen_home`, :func:`is_offline`, :func:`select_device`: the derived settings.

Writes stay where they are: ``chexgen_ui/main.py`` sets ``GRADIO_ANALYTICS_ENABLED=False`` by
``os.environ.setdefault`` before Gradio is imported (listed in the test's allowed writes); benchmarks and
tests build their subprocesses' environments (``OMP_NUM_THREADS``, ``CHEXGEN_HOME``) themselves.
The work-scaling knobs' ranges are :data:`evaluators.limits.KNOBS`; their operator variables
(``CHEXGEN_PUBLIC_MAX_*``) are rows here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
KINDS = {
    "int": "whole number",
    "str": "text",
    "flag": "flag (`1`/`true`/`yes`/`on`)",
    "path": "path",
    "paths": "paths (separated by `:`, `;` on Windows)",
}


@dataclass(frozen=True)
class Setting:
    """One environment variable: its kind (a key of :data:`KINDS`), default (None: unset), what it does,
    and for whole numbers the smallest value accepted. ``shown_default`` is the README's text when the
    default is computed elsewhere (a folder, the CPUs present)."""

    name: str
    kind: str
    default: object
    doc: str
    minimum: int | None = None
    shown_default: str | None = None

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None:
            return "unset"
        if self.kind == "flag":
            return "on" if self.default else "off"
        if self.kind == "int":
            return str(self.default)
        return f"`{self.default}`"

    def kind_text(self) -> str:
        return f"{KINDS[self.kind]} >= {self.minimum}" if self.minimum is not None else KINDS[self.kind]


def _s(name: str, kind: str, default: object, doc: str, **kw) -> Setting:
    return Setting(name, kind, default, doc, **kw)


def _public_int(name: str, default: int, doc: str, minimum: int = 1) -> Setting:
    return Setting(name, "int", default, f"public app: {doc}", minimum=minimum)


_ROWS = (
    # ---- where things live, device, network
    _s("CHEXGEN_HOME", "path", None, "caches, feature shards, reference indexes, weights, the results database",
       shown_default="`/data/chexgen` on a Space with persistent storage, else `$XDG_CACHE_HOME/chexgen`"),
    _s("XDG_CACHE_HOME", "path", None, "base of the default `CHEXGEN_HOME`", shown_default="`~/.cache`"),
    _s("CHEXGEN_DEVICE", "str", "auto", "`cuda`, `mps`, `cpu` or `auto` (the best one present); `--device` wins"),
    _s("CHEXGEN_OFFLINE", "flag", False, "nothing tries the network; loaders use `local_files_only=True`"),
    _s("HF_HUB_OFFLINE", "flag", False, "as `CHEXGEN_OFFLINE` (also read by huggingface_hub)"),
    _s("TRANSFORMERS_OFFLINE", "flag", False, "as `CHEXGEN_OFFLINE` (also read by transformers)"),
    _s("HF_HUB_CACHE", "path", None, "the Hugging Face hub cache, where encoders and models are looked up",
       shown_default="`$HF_HOME/hub`"),
    _s("HUGGINGFACE_HUB_CACHE", "path", None, "older name of `HF_HUB_CACHE` (used when that is unset)"),
    _s("HF_HOME", "path", None, "Hugging Face home; the hub cache is its `hub/`",
       shown_default="huggingface_hub's (`~/.cache/huggingface`)"),
    _s("HF_TOKEN", "str", None, "Hub token for gated models (a Space secret); the Setup tab says whether it is set"),
    _s("HUGGING_FACE_HUB_TOKEN", "str", None, "older name of `HF_TOKEN` (used when that is unset)"),
    _s("SPACE_ID", "str", None, "set by Hugging Face Spaces: public mode is automatic and `/data` holds "
       "`CHEXGEN_HOME` when writable"),
    _s("SPACES_ZERO_GPU", "str", None, "set (non-empty) by a ZeroGPU Space: GPU work goes through `spaces.GPU` "
       "when the `spaces` package is installed"),
    _s("WORLD_SIZE", "int", 1, "processes launched by `torchrun` / `accelerate launch` (set by them); above 1 "
       "features and generation are split across ranks", minimum=1),
    _s("RANK", "int", 0, "this process's rank (set by the launcher); only rank 0 writes results", minimum=0),
    # ---- models and weights
    _s("CHEXGEN_MODELS", "paths", [], "extra generator entry files or folders (besides "
       "`$CHEXGEN_HOME/models/` and `--models-file`)", shown_default="none"),
    _s("CHEXGEN_ALLOW_REMOTE_CODE", "flag", False, "allow models whose entry needs remote code from the Hub (RadEdit)"),
    _s("CHEXGEN_DEMO_GENERATOR", "path", None, "folder of the demo generator's weights",
       shown_default="`assets/demo_generator`"),
    _s("CHEXGEN_COPYCAT_SOURCE", "str", "demo@train", "training set the copycat baseline copies from "
       "(`FOLDER_OR_CSV[@split]`)"),
    _s("CHEXGEN_RADDINO", "path", None, "RadDino folder (`microsoft/rad-dino` layout)",
       shown_default="the HF cache"),
    _s("CHEXGEN_DINOV2", "path", None, "DINOv2 folder (`facebook/dinov2-base` layout: config.json + "
       "model.safetensors)", shown_default="the HF cache"),
    _s("CHEXGEN_INCEPTION_WEIGHTS", "path", None, "InceptionV3 FID weights file",
       shown_default="the `torch.hub` cache"),
    _s("CHEXGEN_XRV_WEIGHTS", "path", None, "torchxrayvision DenseNet-121 weights (released file or safetensors)",
       shown_default="`~/.torchxrayvision/models_data/`"),
    _s("CHEXGEN_BIOVIL_WEIGHTS", "path", None, "BioViL-T image encoder weights", shown_default="the HF cache"),
    _s("CHEXGEN_REPORT_MODELS", "paths", [], "extra report-generation model entry files or folders (besides "
       "`$CHEXGEN_HOME/report_models/`)", shown_default="none"),
    _s("CHEXGEN_CHEXBERT_WEIGHTS", "path", None, "CheXbert's `chexbert.pth` (else CheXbert F1 is reported "
       "unavailable)"),
    _s("CHEXGEN_CHEXBERT_BERT", "path", None, "a `bert-base-uncased` folder for CheXbert",
       shown_default="beside the weights, else the HF cache"),
    _s("CHEXGEN_PLAIN_FORWARD", "flag", False, "run every network as loaded (no folded inference graph)"),
    # ---- engine limits and threads
    _s("CHEXGEN_MAX_PIXELS", "int", 8192 * 8192, "largest image accepted (pixels, per frame)", minimum=1,
       shown_default="67108864 (8192 x 8192)"),
    _s("CHEXGEN_MAX_ROWS", "int", 5_000_000, "rows read from one CSV image set", minimum=1),
    _s("CHEXGEN_DERIVE_PATIENT_IDS", "flag", True, "a set without a patient-id column takes patient (and study) "
       "ids from its paths when they follow the NIH ChestX-ray14, MIMIC-CXR or CheXpert layout "
       "(`evaluators.patient_ids`); `0` turns it off (`--no-derive-patient-ids` per command)"),
    _s("CHEXGEN_MATCH_WORKERS", "int", None, "threads of the memorisation pixel re-check", minimum=1,
       shown_default="the CPUs this process may use"),
    # ---- the app and its queue
    _s("CHEXGEN_APP_ENCODER", "str", None, "the app's encoder (index, fidelity, nearest images)",
       shown_default="the default encoder"),
    _s("GRADIO_SERVER_NAME", "str", "127.0.0.1", "host the app listens on (`--host` wins)"),
    _s("GRADIO_SERVER_PORT", "int", 7860, "port the app listens on (`--port` wins)", minimum=1),
    _s("GRADIO_ANALYTICS_ENABLED", "str", "False", "Gradio's usage analytics; `python app.py` sets it to `False` "
       "unless given (read by Gradio, not here)"),
    _s("CHEXGEN_CONCURRENCY", "int", 2, "events of one kind running at once", minimum=1),
    _s("CHEXGEN_GPU_CONCURRENCY", "int", 1, "GPU jobs (generation, encoding) running at once (read at app import)",
       minimum=1),
    _s("CHEXGEN_GPU_DURATION", "int", 120, "seconds one ZeroGPU call may hold the GPU (read at app import)",
       minimum=1),
    _s("CHEXGEN_QUEUE_MAX_SIZE", "int", 16, "jobs waiting in the queue; more are refused (local: unbounded)",
       minimum=1),
    # ---- the public app (a Space, or --public)
    _s("CHEXGEN_PUBLIC_MAX_FILE_SIZE", "str", "200mb", "public app: one uploaded file, as sent (local: `2gb`)"),
    _public_int("CHEXGEN_PUBLIC_MAX_FILES", 500, "files per upload (local: 5000)"),
    Setting("CHEXGEN_PUBLIC_MAX_BYTES", "int", 512 * 1024**2, "public app: bytes per upload once unzipped (local: 2 GiB)",
            minimum=1, shown_default="536870912 (512 MiB)"),
    Setting("CHEXGEN_PUBLIC_MAX_PIXELS", "int", 4096 * 4096, "public app: pixels per uploaded image (local: "
            "`CHEXGEN_MAX_PIXELS`)", minimum=1, shown_default="16777216 (4096 x 4096)"),
    _public_int("CHEXGEN_PUBLIC_SESSION_QUOTA_MB", 500, "disk per session (MB): uploads, generated sets, runs, "
                "exports"),
    _public_int("CHEXGEN_PUBLIC_TOTAL_QUOTA_MB", 10_000, "disk for all sessions together (MB)"),
    _public_int("CHEXGEN_PUBLIC_RETENTION_HOURS", 24, "hours run files and exports are kept"),
    # the work-scaling knobs (evaluators.limits.KNOBS: default = public_max, minimum = max(knob minimum, 1))
    _public_int("CHEXGEN_PUBLIC_MAX_BOOTSTRAP", 200, "most bootstrap resamples"),
    _public_int("CHEXGEN_PUBLIC_MAX_KID_SUBSETS", 100, "most KID subsets"),
    _public_int("CHEXGEN_PUBLIC_MAX_K", 10, "most neighbours (PRDC k, nearest images)"),
    _public_int("CHEXGEN_PUBLIC_MAX_CANDIDATES", 50, "most memorisation candidates per image"),
    _public_int("CHEXGEN_PUBLIC_MAX_STEPS", 50, "most generation steps"),
    _public_int("CHEXGEN_PUBLIC_MAX_GENERATE", 8, "most images per Generate click"),
    _public_int("CHEXGEN_PUBLIC_MAX_GENERATE_SET", 256, "most images per generated synthetic set (local: 2000)"),
    _public_int("CHEXGEN_PUBLIC_MAX_UTILITY_EPOCHS", 5, "most utility epochs"),
    _public_int("CHEXGEN_PUBLIC_MAX_UTILITY_IMAGE_SIZE", 128, "largest utility image size (px)", minimum=16),
    _public_int("CHEXGEN_PUBLIC_MAX_JOB_SECONDS", 600, "wall-clock seconds per job; a longer job stops and is "
                "saved as partial"),
    # ---- benchmarks
    _s("CHEXGEN_BENCH_CACHE", "path", None, "benchmarks' cache of downloaded/rendered inputs",
       shown_default="`$TMPDIR/chexgen-bench`"),
)
SETTINGS: dict[str, Setting] = {s.name: s for s in _ROWS}
_MISSING = object()


def setting(name: str) -> Setting:
    """The registry row of ``name`` (a KeyError names the registry for a variable read but never registered)."""
    try:
        return SETTINGS[name]
    except KeyError:
        raise KeyError(f"{name} is not a registered setting; add a row to evaluators.settings.SETTINGS") from None


def _raw(name: str) -> str | None:
    """The variable's text, stripped; None when unset or blank. The one read of ``os.environ``."""
    value = os.environ.get(setting(name).name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _whole(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def int_setting(name: str, default=_MISSING, *, minimum: int | None = None) -> int | None:
    """A whole-number setting: the variable ``name`` if set, else ``default`` (the registry's when not given).

    Unset or blank: the default. Anything that is not a whole number >= ``minimum`` (the registry's when
    not given) is refused with an :class:`~evaluators.errors.InputError` naming the variable.
    """
    row = setting(name)
    if row.kind != "int":
        raise TypeError(f"{name} is a {row.kind} setting, not a whole number")
    fallback = row.default if default is _MISSING else default
    lowest = row.minimum if minimum is None else minimum
    lowest = 1 if lowest is None else lowest
    raw = _raw(name)
    if raw is None:
        return fallback
    value = _whole(raw)
    if value is None or value < lowest:
        from .errors import InputError

        example = next((v for v in (fallback, row.default) if v is not None), lowest)
        raise InputError(f"{name}={raw!r} is not a whole number >= {lowest}; unset it or give e.g. {example}.")
    return value


def get(name: str):
    """The typed value of setting ``name`` (see :data:`KINDS`), or its default when unset or blank."""
    row = setting(name)
    if row.kind == "int":
        return int_setting(name)
    raw = _raw(name)
    if row.kind == "flag":
        return row.default if raw is None else raw.lower() in _TRUE
    if raw is None:
        return list(row.default) if isinstance(row.default, list) else row.default
    if row.kind == "path":
        return Path(raw).expanduser()
    if row.kind == "paths":
        return [Path(p.strip()).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    return raw


def table_markdown() -> str:
    """The README's settings table (one row per :data:`SETTINGS` entry)."""
    rows = ["| variable | type | default | what it does |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | {s.kind_text()} | {s.default_text()} | {s.doc} |" for s in SETTINGS.values()]
    return "\n".join(rows)


def chexgen_home() -> Path:
    """Root folder for everything the engine writes (created on first use)."""
    env = get("CHEXGEN_HOME")
    if env:
        home = env
    elif Path("/data").is_dir() and os.access("/data", os.W_OK) and get("SPACE_ID"):
        home = Path("/data/chexgen")
    else:
        base = get("XDG_CACHE_HOME") or Path.home() / ".cache"
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
    return any(get(var) for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CHEXGEN_OFFLINE"))


def select_device(preference: str | None = None) -> str:
    """'cuda', 'mps' or 'cpu': the preference (or CHEXGEN_DEVICE) if present, else the best available."""
    import torch

    pref = (preference or get("CHEXGEN_DEVICE")).strip().lower()
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
