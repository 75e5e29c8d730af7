"""Multimodal utility: does a report generator trained on synthetic X-rays write correct reports for real ones?

CheXGenBench's second downstream test (it used LLaVA-Rad). Trains an image-to-report model on real, synthetic
(each image's report = its prompt) and real + synthetic pairs, tests each on the real test split, and scores
the generated reports side by side: clinical-finding F1 (14 labels of generated vs reference report), BLEU-1/4,
ROUGE-L, METEOR and the share of verbatim copies of training reports (:mod:`.scores`).

    python -m evaluators report-utility --train demo@train --synthetic OUT_DIR --test demo@test --out r.json

Models are registry entries (``entries.toml``): ``captioner`` (CNN + transformer decoder, CPU) and
``llava-rad`` (transformers Llava + LoRA, GPU). Heavy imports happen inside the functions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_report_utility"]


def __getattr__(name: str) -> Any:  # lazy re-export keeps `import evaluators.reportgen` light
    if name in ("run_report_utility", "format_table", "side_by_side", "standard_settings"):
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
