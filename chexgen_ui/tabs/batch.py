"""The "Batch suite" tab: fidelity, privacy and utility of one synthetic set in one run (each saved to the results
store, with CSV/JSON files), the report-utility run, and Cancel."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from evaluators import limits
from evaluators.errors import InputError, UnavailableError
from evaluators.extraction_cost import first_run_cost
from evaluators.generators.trained_on import demo_model_note
from evaluators.space import gpu

from .. import figures, report_utility_service, utility_service
from ..tables import fidelity_status_line, privacy_verdict_line
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
    with gr.Tab("Batch suite", id="batch"), gr.Row():
        with gr.Column(scale=1, min_width=320):
            t.src, t.files, t.folder, t.mdl, t.n, t.steps = ctx.set_chooser("batch")
            t.axes = gr.CheckboxGroup(["Fidelity", "Privacy", "Utility"], value=["Fidelity", "Privacy"],
                                      label="Axes")
            _utility_accordion(ctx, t)
            _report_accordion(ctx, t)
            with gr.Row():
                t.boot = gr.Number(0, precision=0, minimum=0, maximum=limits.maximum("bootstrap", public),
                                   label=f"Bootstrap resamples (at most {limits.maximum('bootstrap', public)})")
                t.min = gr.Number(10, precision=0, label="Min images per pathology", elem_id="batch-min")
            t.pre = gr.Radio(PREPROCESS_CHOICES, value="auto", label=PREPROCESS_LABEL,
                             elem_id="batch-preprocess")
            with gr.Row():
                t.btn = gr.Button("Run", variant="primary", elem_id="batch-run")
                t.cancel = gr.Button("Cancel", variant="stop", elem_id="batch-cancel")
            t.status = gr.Markdown(elem_id="batch-status")
        with gr.Column(scale=2):
            _results_column(t)
    return t


def _utility_accordion(ctx: AppContext, t: SimpleNamespace) -> None:
    u_lim = utility_service.UtilityLimits.for_mode(ctx.public)
    with gr.Accordion("Utility: classifier trained on the synthetic set, tested on real images",
                      open=False):
        gr.Markdown("The real-trained baseline (reference train split) is trained once per "
                    "settings and reused; the reference's test split is the test set.")
        t.u_model = gr.Dropdown(list(utility_service.MODEL_CHOICES),
                                value=utility_service.default_model(ctx.studio.device),
                                allow_custom_value=not ctx.public, label="Classifier (timm)",
                                elem_id="batch-utility-model")
        with gr.Row():
            t.u_epochs = gr.Slider(1, min(u_lim.max_epochs, 50), value=utility_service.DEFAULT_EPOCHS,
                                   step=1, label="Epochs", elem_id="batch-utility-epochs")
            t.u_size = gr.Slider(utility_service.MIN_IMAGE_SIZE, min(u_lim.max_image_size, 256),
                                 value=utility_service.DEFAULT_IMAGE_SIZE, step=16,
                                 label="Image size (px)", elem_id="batch-utility-size")
        with gr.Row():
            t.u_mixed = gr.Checkbox(False, label="Also train on real + synthetic")
            t.u_swap = gr.Checkbox(False, label="Also CheXGenBench's mixed: half the real images swapped for synthetic",
                                   elem_id="batch-utility-swap")


def _report_accordion(ctx: AppContext, t: SimpleNamespace) -> None:
    with gr.Accordion("Report utility: a report generator trained on the synthetic images and "
                      "their prompts, tested on real images", open=False):
        gr.Markdown("The small captioner (CNN + transformer decoder) trains on the synthetic set's "
                    "(image, prompt) pairs and, once per settings, on the reference's train split; "
                    "both write reports for the reference's test images. Same as `python -m "
                    "evaluators report-utility`.")
        t.r_epochs = gr.Slider(1, report_utility_service.PUBLIC_MAX_EPOCHS if ctx.public else 20,
                               value=report_utility_service.DEFAULT_EPOCHS, step=1, label="Epochs",
                               elem_id="batch-report-epochs")
        t.r_btn = gr.Button("Run report utility", elem_id="batch-report-run")
        t.r_status = gr.Markdown(elem_id="batch-report-status")
        t.r_table = gr.Dataframe(label="Report utility: clinical F1, BLEU, ROUGE-L, METEOR, copies",
                                 elem_id="batch-report-utility", interactive=False)


def _results_column(t: SimpleNamespace) -> None:
    t.overall = gr.Dataframe(label="Overall", elem_id="batch-overall", interactive=False)
    t.table = gr.Dataframe(label="Per pathology", wrap=False, pinned_columns=1, elem_id="batch-table",
                           interactive=False)
    t.plot = gr.Plot(label="Per-pathology metrics")
    t.priv_img = gr.Dataframe(label="Privacy per image: one verdict each (memorised / same patient "
                              "/ new) with its evidence", elem_id="batch-privacy-images",
                              interactive=False, wrap=True)
    t.priv = gr.Dataframe(label="Privacy per pathology (memorisation flag and re-ID rates)",
                          elem_id="batch-privacy", interactive=False)
    t.util = gr.Dataframe(label="Utility: trained on real vs synthetic, tested on real images",
                          elem_id="batch-utility", interactive=False)
    t.files_out = gr.File(label="Results (CSV, JSON)", file_count="multiple", interactive=False)


def wire(ctx: AppContext, t: SimpleNamespace) -> None:
    """Run (the ticked axes, one after the other), Run report utility, and Cancel (stops either)."""
    batch_ev = _wire_batch(ctx, t)
    report_ev = _wire_report(ctx, t)

    def on_cancel(request: gr.Request = None):
        ctx.cancel_event(request).set()
        ctx.jobctl.cancel(_session(request))
        return "Cancelled."

    t.cancel.click(on_cancel, None, t.status, cancels=[batch_ev, report_ev], queue=False)


def _wire_batch(ctx: AppContext, t: SimpleNamespace):
    studio = ctx.studio

    @_user_errors
    @gpu(GPU_DURATION)
    @ctx.job
    def on_batch(src, files, folder, mdl, n, steps, axes, boot, min_count, u_model, u_epochs, u_size, u_mixed,
                 preprocess="auto", u_swap=False, progress=gr.Progress(),  # noqa: B008 - Gradio's idiom
                 request: gr.Request = None):
        cancel = ctx.cancel_event(request)
        cancel.clear()
        report = _progress(progress, cancel)
        axes = list(axes or [])
        if not axes:
            yield "Choose at least one axis.", None, None, None, None, None, None, None
            return
        yield "Loading the synthetic set…", None, None, None, None, None, None, None
        session = _session(request)
        synthetic, model = ctx.load_set(src, files, folder, mdl, n, steps, report, session)
        overall = table = plot = priv = priv_img = util = None
        files_out: list[str] = []
        done = [note] if (note := demo_model_note(model, studio.ctx.index())) else []
        if "Fidelity" in axes:
            cost = first_run_cost(studio.ctx, synthetic)  # FRD's first radiomic extraction on a large new set
            yield (f"Running fidelity on {len(synthetic)} image(s)…" + (f"\n\n{cost}" if cost else ""),
                   None, None, None, None, None, None, None)
            run = studio.run_fidelity(synthetic, model=model, per_pathology=True, bootstrap=int(boot or 0),
                                      min_count=int(min_count or 1), session=session, progress=report,
                                      preprocess=preprocess or "auto")
            overall, table = run.overall, run.per_pathology
            plot = figures.fidelity_bars(run.per_pathology, result=run.result)
            files_out += [str(run.csv_path), str(run.json_path)]
            done.append(fidelity_status_line(run.result, run.run_id))
            yield "\n\n".join(done), overall, table, plot, None, None, None, files_out
        if "Privacy" in axes and (prun := _privacy_or_note(studio, synthetic, model, session, report, done,
                                                           keep=overall is not None)):
            mem = prun.result["memorisation"]
            priv, priv_img = prun.per_pathology, prun.top
            files_out.append(str(prun.json_path))
            done.append(f"Privacy: {mem['n_flagged']} of {mem['n']} image(s) flagged as possible memorisation "
                        f"(threshold {mem['threshold']:.4f}; about {100 * mem.get('expected_fraction', 0.01):.0f}% "
                        f"expected from new images); {studio.reid_status(short=True)}; saved as run #{prun.run_id}."
                        + privacy_verdict_line(prun.result))
            yield "\n\n".join(done), overall, table, plot, priv, priv_img, None, files_out
        if "Utility" in axes:
            yield ("\n\n".join([*done, f"Utility: training classifiers on {len(synthetic)} synthetic image(s)…"]),
                   overall, table, plot, priv, priv_img, None, files_out)
            try:
                urun = utility_service.run_utility_job(
                    studio, synthetic, model=u_model, epochs=int(u_epochs or 0), image_size=int(u_size or 0),
                    mixed=bool(u_mixed), swap=bool(u_swap), session=session, source=model, progress=report)
            except (InputError, UnavailableError) as exc:  # the axes already run keep their results on the page
                if overall is None and priv_img is None:
                    raise
                done.append(f"Utility not run: {exc}")
            else:
                util = urun.table
                files_out.append(str(urun.json_path))
                done.append(utility_service.summary(urun))
        yield "\n\n".join(done), overall, table, plot, priv, priv_img, util, files_out

    return t.btn.click(on_batch, [t.src, t.files, t.folder, t.mdl, t.n, t.steps, t.axes, t.boot, t.min,
                                  t.u_model, t.u_epochs, t.u_size, t.u_mixed, t.pre, t.u_swap],
                       [t.status, t.overall, t.table, t.plot, t.priv, t.priv_img, t.util, t.files_out],
                       concurrency_id=GPU_QUEUE, concurrency_limit=GPU_CONCURRENCY)


def _privacy_or_note(studio, synthetic, model, session, report, done: list[str], *, keep: bool):
    """The privacy run, or None with 'Privacy not run: why' added to ``done`` when ``keep`` (results of the
    fidelity axis are on the page: an error would replace them)."""
    try:
        return studio.run_privacy(synthetic, model=model, session=session, progress=report)
    except (InputError, UnavailableError) as exc:
        if not keep:
            raise
        done.append(f"Privacy not run: {exc}")
        return None


def _wire_report(ctx: AppContext, t: SimpleNamespace):
    studio = ctx.studio

    @_user_errors
    @gpu(GPU_DURATION)
    @ctx.job
    def on_report(src, files, folder, mdl, n, steps, epochs, progress=gr.Progress(), request: gr.Request = None):  # noqa: B008 - Gradio's idiom
        cancel = ctx.cancel_event(request)
        cancel.clear()
        report = _progress(progress, cancel)
        session = _session(request)
        synthetic, model = ctx.load_set(src, files, folder, mdl, n, steps, report, session)
        run = report_utility_service.run_report_job(studio, synthetic, epochs=int(epochs or 0), session=session,
                                                    source=model, progress=report)
        return report_utility_service.summary(run), run.table

    return t.r_btn.click(on_report, [t.src, t.files, t.folder, t.mdl, t.n, t.steps, t.r_epochs],
                         [t.r_status, t.r_table], concurrency_id=GPU_QUEUE, concurrency_limit=GPU_CONCURRENCY)
