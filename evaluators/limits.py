"""Limits of every knob that scales the work of one job, for a local run and for the public app.

One table (:data:`KNOBS`, printed in the README): each knob has a smallest value, a largest value for a
local run (the CLI's argparse types use it too), a largest value and a default for the public app
(``python app.py --public``, a Space), and the environment variable through which an operator changes
the public maximum (read by :func:`evaluators.settings.int_setting`). The app's widgets take their
ranges from here, and the services check the values again (a request through the API never passes the
widgets). Nothing here imports Gradio.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError
from .settings import int_setting


@dataclass(frozen=True)
class Knob:
    name: str
    label: str
    minimum: int
    local_max: int
    public_max: int
    public_default: int
    env: str
    local_default: int
    note: str = ""


KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("bootstrap", "Bootstrap resamples", 0, 10_000, 200, 0, "CHEXGEN_PUBLIC_MAX_BOOTSTRAP", 0,
         "0 = no interval; otherwise at least 2"),
    Knob("kid_subsets", "KID subsets", 1, 10_000, 100, 100, "CHEXGEN_PUBLIC_MAX_KID_SUBSETS", 100),
    Knob("k", "Neighbours (PRDC k, nearest images)", 1, 100, 10, 5, "CHEXGEN_PUBLIC_MAX_K", 5),
    Knob("candidates", "Memorisation candidates per image", 1, 1_000, 50, 50, "CHEXGEN_PUBLIC_MAX_CANDIDATES", 50),
    Knob("steps", "Generation steps", 1, 1_000, 50, 20, "CHEXGEN_PUBLIC_MAX_STEPS", 25),
    Knob("n_generate", "Images per Generate click", 1, 64, 8, 4, "CHEXGEN_PUBLIC_MAX_GENERATE", 4),
    Knob("n_set", "Images per generated synthetic set", 1, 2_000, 256, 32, "CHEXGEN_PUBLIC_MAX_GENERATE_SET", 32),
    Knob("epochs", "Utility epochs", 1, 200, 5, 3, "CHEXGEN_PUBLIC_MAX_UTILITY_EPOCHS", 3),
    Knob("image_size", "Utility image size (px)", 16, 512, 128, 64, "CHEXGEN_PUBLIC_MAX_UTILITY_IMAGE_SIZE", 64),
    Knob("job_seconds", "Wall-clock seconds per job", 1, 10**9, 600, 600, "CHEXGEN_PUBLIC_MAX_JOB_SECONDS", 10**9,
         "a longer job stops and is saved as partial"),
)}


def maximum(name: str, public: bool) -> int:
    """The largest value of knob ``name``: the local maximum, or in public mode the operator's setting
    (``Knob.env``) else the public maximum."""
    k = KNOBS[name]
    if not public:
        return k.local_max
    return int_setting(k.env, k.public_max, minimum=max(k.minimum, 1))


def default(name: str, public: bool) -> int:
    k = KNOBS[name]
    return min(k.public_default if public else k.local_default, maximum(name, public))


def check(name: str, value, public: bool) -> int:
    """``value`` as an int within knob ``name``'s range; an :class:`InputError` names the range otherwise."""
    k = KNOBS[name]
    hi = maximum(name, public)
    where = f" in this public app ({k.env})" if public else ""
    try:
        v = float(value)
        ok = v == int(v)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise InputError(f"{k.label} must be a whole number between {k.minimum} and {hi}{where}; got {value!r}.")
    v = int(v)
    if not k.minimum <= v <= hi or (name == "bootstrap" and v == 1):
        extra = " (0 for none, else at least 2)" if name == "bootstrap" else ""
        raise InputError(f"{k.label} must be between {k.minimum} and {hi}{extra}{where}; got {v}.")
    return v


def table_markdown() -> str:
    """The README's table of limits."""
    rows = ["| knob | range (local) | public max | public default | operator setting |", "|---|---|---|---|---|"]
    for k in KNOBS.values():
        if k.name == "job_seconds":
            rows.append(f"| {k.label} | none | {k.public_max} | - | `{k.env}` |")
            continue
        rows.append(f"| {k.label} | {k.minimum}..{k.local_max} | {k.public_max} | {k.public_default} | `{k.env}` |")
    return "\n".join(rows)


__all__ = ["KNOBS", "Knob", "check", "default", "maximum", "table_markdown"]
