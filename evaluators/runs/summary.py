"""A few lines describing a run context: the reference set, its index, where results go, the device, notes."""

from __future__ import annotations

from ..errors import InputError, UnavailableError
from .context import RunContext


def reference_summary(ctx: RunContext, mode: str | None = None) -> list[str]:
    """Markdown lines: the reference set (images, patients, splits), its index (once built), CHEXGEN_HOME, the
    device, whether a Hub token is set, and the context's notes (e.g. an encoder fallback). ``mode``: a word for the run mode ("public mode")."""
    from ..settings import chexgen_home
    from ..space import hf_token, zero_gpu

    lines = [f"Reference set: `{ctx.name}`"]
    try:
        d = ctx.reference_set().describe()
        lines.append(f"Images: {d['n_images']}; patients: {d['n_patients']} (patient ids: "
                     f"{d.get('patient_ids_source', 'none')}); splits: {d['splits']}")
    except (InputError, UnavailableError) as exc:
        lines.append(f"Not loaded: {exc}")
    if ctx.index_built:
        index = ctx.index()
        lines.append(f"Index: `{index.dir}` (encoder {index.encoder}, {len(index)} images)")
    else:
        lines.append("Index folder: (not built yet)")
    lines.append(f"CHEXGEN_HOME: `{chexgen_home()}` · device: {ctx.device}" + (" (ZeroGPU)" if zero_gpu() else "")
                 + f" · Hub token (HF_TOKEN, for gated models): {'set' if hf_token() else 'not set'}"
                 + (f" · {mode}" if mode else ""))
    return lines + [f"Note: {n}" for n in ctx.notes]
