"""The "Per-pathology fidelity" tab: FID, KID, Precision, Recall, Density and Coverage for each label, with
bootstrap intervals and the image counts behind each value."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from evaluators import limits
from evaluators.extraction_cost import first_run_cost
from evaluators.space import gpu

from .. import figures
from ..tables import fidelity_status_line
from ..widgets import (
    GPU_CONCURRENCY,
    GPU_DURATION,
    GPU_QUEUE,
    PREPROCESS_CHOICES,
    PREPROCESS_LABEL,
    AppContext,
    _progress,
    _session,
    _user_errors,
)


def layout(ctx: AppContext) -> SimpleNamespace:
    """The tab's widgets (call inside the app's ``gr.Tabs``)."""
    public = ctx.public
    t = SimpleNamespace()
    with gr.Tab("Per-pathology fidelity", id="fidelity"):
        gr.Markdown("FID, KID, Precision, Recall, Density and Coverage for each of the 14 labels, with "
                    "95% bootstrap intervals and the number of images behind each value.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                t.src, t.files, t.folder, t.mdl, t.n, t.steps = ctx.set_chooser("pp")
                with gr.Row():
                    t.boot = gr.Number(0, precision=0, minimum=0, maximum=limits.maximum("bootstrap", public),
                                       label=f"Bootstrap resamples (0 = no CI; at most {limits.maximum('bootstrap', public)})")
                    t.min = gr.Number(10, precision=0, label="Min images per pathology", elem_id="pp-min")
                t.pre = gr.Radio(PREPROCESS_CHOICES, value="auto", label=PREPROCESS_LABEL, elem_id="pp-preprocess")
                t.fdinf = gr.Checkbox(False, label="Also FD_inf (FID extrapolated to infinitely many images, for sets "
                                      "of different sizes; several times slower)", elem_id="pp-fdinf")
                t.btn = gr.Button("Compute per-pathology fidelity", variant="primary", elem_id="pp-run")
                t.status = gr.Markdown(elem_id="pp-status")  # encoders, comparability, what is withheld and why
            with gr.Column(scale=2):
                t.table = gr.Dataframe(label="Per pathology", wrap=False, pinned_columns=1, elem_id="pp-table",
                                       interactive=False)  # one line per pathology; narrow headers stay whole
                t.plot = gr.Plot(label="Per-pathology metrics")
                t.counts = gr.Plot(label="Long-tail counts")
    return t


def wire(ctx: AppContext, t: SimpleNamespace) -> None:
    """The Compute button: one fidelity run (saved to the results store), its table and two charts."""
    studio = ctx.studio

    @_user_errors
    @gpu(GPU_DURATION)
    @ctx.job
    def on_pp(src, files, folder, mdl, n, steps, boot, min_count, preprocess="auto", fd_inf=False,
              progress=gr.Progress(), request: gr.Request = None):  # noqa: B008 - Gradio's idiom
        report = _progress(progress)
        synthetic, model = ctx.load_set(src, files, folder, mdl, n, steps, report, _session(request))
        cost = first_run_cost(studio.ctx, synthetic)  # FRD's first radiomic extraction on a large new set
        yield f"Running per-pathology fidelity on {len(synthetic)} image(s)…" + (f"\n\n{cost}" if cost else ""), \
            None, None, None
        run = studio.run_fidelity(synthetic, model=model, per_pathology=True, bootstrap=int(boot or 0),
                                  min_count=int(min_count or 1), session=_session(request),
                                  progress=report, preprocess=preprocess or "auto", fd_inf=bool(fd_inf))
        yield fidelity_status_line(run.result, run.run_id, "Per-pathology fidelity"), run.per_pathology, \
            figures.fidelity_bars(run.per_pathology, result=run.result), figures.counts_figure(run.counts)

    t.btn.click(on_pp, [t.src, t.files, t.folder, t.mdl, t.n, t.steps, t.boot, t.min, t.pre, t.fdinf],
                [t.status, t.table, t.plot, t.counts], concurrency_id=GPU_QUEUE, concurrency_limit=GPU_CONCURRENCY)
