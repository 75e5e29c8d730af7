"""The "Setup" tab: the reference set, re-identification status (and training a re-ID model on the reference's
patients), the generators and encoders, and how to add a model or another reference set."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from evaluators import catalogue
from evaluators.space import gpu

from ..widgets import GPU_DURATION, GPU_QUEUE, AppContext, _progress, _user_errors

SETUP_TOML = """# my-models.toml: drop it in $CHEXGEN_HOME/models/, or pass CHEXGEN_MODELS=/path/my-models.toml
[[model]]
name = "sana-0.6b"                          # override a built-in entry: only the keys you change
weights = "/data/checkpoints/sana-mimic"    # a folder written by pipe.save_pretrained

[[model]]
name = "my-cxr-model"                       # or add a new one
kind = "diffusers"
pipeline = "StableDiffusionPipeline"
weights = "/models/my-cxr-model"            # local folder, or a Hub id (downloaded unless offline)
resolution = 512
steps = 50
guidance = 7.5
dtype = "fp16"
notes = "fine-tuned on MIMIC-CXR reports"
"""


def layout(ctx: AppContext) -> SimpleNamespace:
    """The tab's widgets (call inside the app's ``gr.Tabs``)."""
    t = SimpleNamespace()
    with gr.Tab("Setup", id="setup") as t.tab:
        t.ref = gr.Markdown()
        t.reid = gr.Markdown(elem_id="setup-reid")
        with gr.Accordion("Train a re-ID model on the reference set's patients", open=False):
            gr.Markdown("Needs patient ids with two or more studies for some patients. The model is saved "
                        "where the privacy checks look for one trained on this set (used when no preferred "
                        "model is present: the demo model on the demo world, CheXGenBench's checkpoint "
                        "elsewhere); its AUC on held-out patients is shown with every re-ID score. A stopped "
                        "run continues from its last finished epoch (same settings).")
            with gr.Row():
                t.reid_epochs = gr.Slider(1, 30, value=5, step=1, label="Epochs", elem_id="reid-epochs")
                t.reid_btn = gr.Button("Train re-ID model", elem_id="reid-train")
            t.reid_out = gr.Markdown(elem_id="reid-train-status")
        gr.Markdown("### Generators")
        t.models = gr.Dataframe(interactive=False, wrap=True)
        gr.Markdown("### Encoders")
        t.enc = gr.Dataframe(interactive=False, wrap=True)
        gr.Markdown(
            "### Adding a model\nWeights are looked for locally first (folders named in the entry, then the "
            "Hugging Face cache, `HF_HOME`); with `HF_HUB_OFFLINE=1` nothing is downloaded. Entries are "
            "read from `evaluators/generators/entries.toml`, then `$CHEXGEN_HOME/models/*.toml`, then "
            "`CHEXGEN_MODELS`. Describe a model in TOML:\n```toml\n" + SETUP_TOML + "```\n### Another reference set\n"
            "`python app.py --reference /data/mimic/train.csv` (a folder, a CSV, or `PATH@train` for one "
            "split; the memorisation threshold is calibrated leave-one-out over its images, each patient's own "
            "images excluded: give a `patient_id` column, or NIH / MIMIC-CXR / CheXpert file names). The reference "
            "index is built once under `CHEXGEN_HOME/indexes` and reused. Encoder: `CHEXGEN_APP_ENCODER`."
        )
    return t


def wire(ctx: AppContext, t: SimpleNamespace) -> None:
    """Opening the tab fills it; the re-ID training button."""
    studio = ctx.studio

    def _reid_markdown() -> str:
        return "\n\n".join(["### Re-identification", studio.reid_status(), *studio.ctx.domain_notes()])

    def on_setup():
        return (studio.reference_summary(), _reid_markdown(), catalogue.models_table(),
                catalogue.encoders_table())

    @_user_errors
    @gpu(GPU_DURATION)
    def on_train_reid(epochs, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        r = studio.train_reid(epochs=int(epochs or 1), progress=_progress(progress))
        resumed = f" (resumed after epoch {r['resumed_from_epoch']})" if r.get("resumed_from_epoch") else ""
        return (f"Trained {r['architecture']} for {r['epochs']} epoch(s){resumed} in {r['seconds']} s on "
                f"{r['train_patients']} patients: verification AUC **{r['val_auc']:.3f}** on {r['val_patients']} "
                f"held-out patients. Saved to `{r['out']}`."), _reid_markdown()

    t.reid_btn.click(on_train_reid, t.reid_epochs, [t.reid_out, t.reid], concurrency_id=GPU_QUEUE)

    t.tab.select(on_setup, None, [t.ref, t.reid, t.models, t.enc])
