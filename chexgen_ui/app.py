"""The Gradio app: seven tabs over :class:`chexgen_ui.services.Studio` (the Reader study tab lives in :mod:`chexgen_ui.tabs`).

Callbacks only convert widget values, call a service, and convert results to components; every
computation lives in the engine (``evaluators``) or in :mod:`chexgen_ui.services`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
import threading
from collections import Counter
from pathlib import Path

import gradio as gr
import numpy as np

from evaluators import jobs, limits, settings
from evaluators.errors import InputError, UnavailableError
from evaluators.jobs import Stopped
from evaluators.pathologies import PATHOLOGIES
from evaluators.space import gpu

from . import figures, public_paths, report_utility_service, utility_service
from .display import to_uint8, window_level
from .jobctl import JobControl
from .services import Generated, Studio
from .tables import fidelity_note_line, privacy_verdict_line
from .tabs import reader_study

log = logging.getLogger("chexgen_ui")
GPU_QUEUE = "gpu"  # generation and encoding share one concurrency slot
GPU_CONCURRENCY = settings.get("CHEXGEN_GPU_CONCURRENCY")
GPU_DURATION = settings.get("CHEXGEN_GPU_DURATION")  # seconds per call on ZeroGPU (spaces.GPU)
PREPROCESS_CHOICES = [("auto (chexgenbench for RadDino/Inception)", "auto"), ("clean", "clean"),
                      ("chexgenbench (CheXGenBench's chain)", "chexgenbench")]
PREPROCESS_LABEL = ("Preprocessing: chexgenbench reproduces CheXGenBench's pixels (compare with its table); clean "
                    "resizes once in float")


def _session(request: gr.Request | None) -> str | None:
    """Gradio's per-browser-tab session id: uploads, exports and the public leaderboard are kept per session."""
    return getattr(request, "session_hash", None)

PLOT_JS = """
const div = element.querySelector('.chexgen-plot');
function draw() {
  if (!props.value) { return; }
  let fig;
  try { fig = JSON.parse(props.value); } catch (e) { return; }
  const go = () => {
    if (typeof Plotly === 'undefined') { setTimeout(go, 100); return; }
    Plotly.react(div, fig.data, fig.layout, {responsive: true, displaylogo: false});
    if (!div._chexgenBound) {
      div._chexgenBound = true;
      div.on('plotly_click', (ev) => {
        const p = ev.points[0];
        trigger('click', {index: p.pointIndex, key: p.customdata});
      });
    }
  };
  go();
}
draw();
watch('value', draw);
"""

CSS = """
<style>
.chexgen-verdict {font-size: 1.02em}
.chexgen-plot {width: 100%; min-height: 560px}
</style>
"""

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


class JobCancelled(Exception):
    """Raised inside a running job's progress callback once the user pressed Cancel."""


def _user_errors(fn):
    """Show engine errors in the page (gr.Error) instead of a traceback."""
    def convert(exc: Exception) -> gr.Error:
        if isinstance(exc, JobCancelled):
            return gr.Error("Cancelled.")
        if isinstance(exc, Stopped):
            return gr.Error(f"Stopped ({exc.reason}); the run is saved as partial.")
        return gr.Error(str(exc))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (InputError, UnavailableError, JobCancelled, Stopped) as exc:
                raise convert(exc) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, UnavailableError, JobCancelled, Stopped) as exc:
            raise convert(exc) from None
    return wrapper


def _progress(progress: gr.Progress, cancel: threading.Event | None = None):
    """Engine progress ``(done, total, desc)`` -> Gradio's progress bar (and the cancel check)."""
    def report(done: int, total: int, desc: str = "") -> None:
        if cancel is not None and cancel.is_set():
            raise JobCancelled()
        jobs.check()  # Cancel, a disconnected client or the public time limit (chexgen_ui.jobctl)
        if total:
            progress((int(done), int(total)), desc=desc or None)
        else:
            progress(0.0, desc=desc or None)
    token = jobs.current()
    if token is not None and token.progress is None:
        token.progress = report  # the engine's own loops (bootstrap, KID...) report here too
    return report


def plotly_static_dir(public: bool = False) -> Path:
    """plotly.min.js from the installed plotly package, copied to a cache folder served by Gradio (public
    mode: a folder of the system's temporary directory, so the page names no folder of CHEXGEN_HOME)."""
    import tempfile

    import plotly

    from evaluators.settings import subdir

    if public:
        folder = Path(tempfile.gettempdir()) / "chexgen-static"
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = subdir("static")
    src = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    dst = folder / "plotly.min.js"
    if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
        shutil.copy(src, dst)
    return folder


def plotly_html(elem_id: str, static_dir: Path) -> gr.HTML:
    return gr.HTML(
        value="", elem_id=elem_id, html_template="<div class='chexgen-plot'></div>", js_on_load=PLOT_JS,
        head=f'<script src="/gradio_api/file={static_dir}/plotly.min.js"></script>{CSS}', min_height=560,
    )


def _gallery_items(gen: Generated) -> list[tuple[np.ndarray, str]]:
    items = []
    for i, img in enumerate(gen.images):
        tag = ""
        if gen.flags is not None and gen.flags[i]:
            tag = " · FLAGGED"
        score = f"copy {gen.copy_score[i]:.3f}" if gen.copy_score is not None else f"nn sim {gen.top1[i]:.3f}"
        items.append((to_uint8(img), f"#{i} seed {gen.seeds[i]} · {score}{tag}"))
    return items


def build_app(reference: str = "demo@train", public: bool = False, studio: Studio | None = None) -> gr.Blocks:
    """The whole app. ``studio`` may be given (tests); otherwise one is made for ``reference``."""
    studio = studio or Studio(reference, public=public)
    public = public or studio.public
    jobctl = JobControl(public)  # Cancel / disconnect / time limit of long jobs
    studio.quota.startup()  # public mode: expired run folders and orphaned uploads go
    static_dir = plotly_static_dir(public)
    gr.set_static_paths([str(static_dir)])
    cancels: dict[str, threading.Event] = {}

    def cancel_event(request: gr.Request | None) -> threading.Event:
        key = getattr(request, "session_hash", None) or "default"
        ev = cancels.setdefault(key, threading.Event())
        return ev

    models = studio.model_choices()
    default_model = studio.default_model()
    presets = studio.model_presets(default_model) if default_model else {}
    try:
        first_prompts = studio.example_prompts("Pleural Effusion")
    except (InputError, UnavailableError) as exc:
        log.warning("no example prompts: %s", exc)
        first_prompts = [""]
    source_choices = ["upload (zip, or CSV + images)", "generate N from a model"]
    if not public:
        source_choices.insert(1, "server folder or CSV")

    # public mode: Gradio's own upload cache is emptied of files older than the retention time, hourly
    cache = (3600, int(studio.quota.retention_s)) if public else None
    with gr.Blocks(title="CheXGen Studio", delete_cache=cache) as demo:
        gen_state = gr.State(None)
        gr.Markdown(
            "# CheXGen Studio\nSynthetic chest X-rays: generate and inspect, check memorisation, and measure "
            f"fidelity per pathology against the reference set `{public_paths.scrub(studio.reference) if public else studio.reference}`."
            + (" **Public mode**: uploads only (size limits apply); your uploads and runs are seen only by "
               "this browser session, next to the shared runs." if public else "")
        )
        with gr.Tabs():
            # ------------------------------------------------------------------ 1. Generate & inspect
            with gr.Tab("Generate & inspect", id="generate"), gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        model_dd = gr.Dropdown(models, value=default_model, label="Model", elem_id="model")
                        model_md = gr.Markdown(studio.model_status(default_model) if default_model else "")
                        path_dd = gr.Dropdown(list(PATHOLOGIES), value="Pleural Effusion", label="Pathology",
                                              elem_id="pathology")
                        examples_dd = gr.Dropdown(first_prompts, value=first_prompts[0], label="Example prompts (composed, then real reference reports)",
                                                  allow_custom_value=True)
                        prompt_tb = gr.Textbox(first_prompts[0], label="Prompt (report style, editable)", lines=4,
                                               elem_id="prompt")
                        with gr.Row():
                            n_sl = gr.Slider(1, min(16, limits.maximum("n_generate", public)),
                                             value=limits.default("n_generate", public), step=1,
                                             label="Number of images")
                            seed_nb = gr.Number(0, precision=0, label="First seed")
                        with gr.Row():
                            steps_sl = gr.Slider(1, min(150, limits.maximum("steps", public)),
                                                 value=min(int(presets.get("steps", 25)), limits.maximum("steps", public)),
                                                 step=1, label="Steps")
                            guid_sl = gr.Slider(0.0, 20.0, value=float(presets.get("guidance", 7.5)), step=0.5,
                                                label="Guidance")
                        gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                        gen_status = gr.Markdown()
                        zip_file = gr.File(label="Download images + metadata (zip)", interactive=False)
                    with gr.Column(scale=2):
                        gallery = gr.Gallery(label="Generated images (select one to inspect)", columns=4, height=300,
                                             elem_id="gallery", allow_preview=False)
                        with gr.Row():
                            with gr.Column(scale=1):
                                view_img = gr.Image(label="Selected image (window/level applied)", type="numpy",
                                                    interactive=False, elem_id="selected", height=340)
                                with gr.Row():
                                    level_sl = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Window level")
                                    width_sl = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Window width")
                                    zoom_sl = gr.Slider(1.0, 4.0, value=1.0, step=0.25, label="Zoom")
                            with gr.Column(scale=1):
                                nn_gallery = gr.Gallery(label="Nearest real training images", columns=3,
                                                        height=340, elem_id="neighbours", allow_preview=True)
                        verdict_md = gr.Markdown(elem_id="verdict", elem_classes=["chexgen-verdict"])
                        evidence_img = gr.Image(label="Evidence: synthetic | matched training image, aligned | overlay "
                                                "(green synthetic, magenta training) | difference x4",
                                                type="numpy", interactive=False, elem_id="evidence", height=200)
                        nn_table = gr.Dataframe(label="Nearest training images", wrap=True, elem_id="nn-table",
                                                interactive=False)
                        sel_idx = gr.Number(value=-1, visible=False)

            # ------------------------------------------------------------------ 2. Embedding map
            with gr.Tab("Embedding map", id="map"):
                gr.Markdown("UMAP of the reference set's encoder features, coloured by pathology (click legend "
                            "entries to toggle). Generated images appear as orange stars. Click a point to see it.")
                with gr.Row():
                    with gr.Column(scale=3):
                        map_html = plotly_html("umap", static_dir)
                        map_status = gr.Markdown()
                    with gr.Column(scale=1, min_width=280):
                        map_img = gr.Image(label="Chosen point", type="numpy", interactive=False, height=300,
                                           elem_id="map-image")
                        map_caption = gr.Markdown(elem_id="map-caption")
                        with gr.Row():
                            row_nb = gr.Number(0, precision=0, label="or reference row")
                            row_btn = gr.Button("Show")
                        map_btn = gr.Button("Redraw map")

            # ------------------------------------------------------------------ 3 + 4 share a set chooser
            def set_chooser(prefix: str):
                src = gr.Radio(source_choices, value=source_choices[0], label="Synthetic set")
                files = gr.File(file_count="multiple", label="Upload a zip (images + optional CSV) or a CSV + images",
                                file_types=[".zip", ".csv", ".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff"],
                                elem_id=f"{prefix}-upload")
                folder = gr.Textbox(label="Server folder or CSV (local mode)", visible=False,
                                    elem_id=f"{prefix}-folder")
                with gr.Row(visible=False) as gen_row:
                    mdl = gr.Dropdown(models, value=default_model, label="Model", elem_id=f"{prefix}-model")
                    n = gr.Number(limits.default("n_set", public), precision=0, minimum=1,
                                  maximum=limits.maximum("n_set", public), label="N images (reference prompts)",
                                  elem_id=f"{prefix}-n")
                    steps = gr.Number(min(int(presets.get("steps", 25)), limits.maximum("steps", public)), precision=0,
                                      minimum=1, maximum=limits.maximum("steps", public), label="Steps")

                def show(choice):
                    return (gr.update(visible=choice.startswith("upload")), gr.update(visible=choice.startswith("server")),
                            gr.update(visible=choice.startswith("generate")))

                src.change(show, src, [files, folder, gen_row])
                return src, files, folder, mdl, n, steps

            def load_set(src, files, folder, mdl, n, steps, report, session=None):
                if src.startswith("upload"):
                    return _discard_at_end(studio.synthetic_from_upload(files or [], session=session)), "upload"
                if src.startswith("server"):
                    return studio.synthetic_from_folder(folder), "folder"
                return _discard_at_end(studio.synthetic_from_model(mdl, int(n or 0), 0, int(steps) if steps else None,
                                                                   session=session, progress=report)), mdl

            def _discard_at_end(synthetic):
                """Public mode: the uploaded / generated set is deleted when its job ends (chexgen_ui.quotas)."""
                jobctl.on_end(lambda: studio.quota.discard(synthetic))
                return synthetic

            with gr.Tab("Per-pathology fidelity", id="fidelity"):
                gr.Markdown("FID, KID, Precision, Recall, Density and Coverage for each of the 14 labels, with "
                            "95% bootstrap intervals and the number of images behind each value.")
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        f_src, f_files, f_folder, f_mdl, f_n, f_steps = set_chooser("pp")
                        with gr.Row():
                            f_boot = gr.Number(0, precision=0, minimum=0, maximum=limits.maximum("bootstrap", public),
                                               label=f"Bootstrap resamples (0 = no CI; at most {limits.maximum('bootstrap', public)})")
                            f_min = gr.Number(10, precision=0, label="Min images per pathology", elem_id="pp-min")
                        f_pre = gr.Radio(PREPROCESS_CHOICES, value="auto", label=PREPROCESS_LABEL, elem_id="pp-preprocess")
                        f_btn = gr.Button("Compute per-pathology fidelity", variant="primary", elem_id="pp-run")
                    with gr.Column(scale=2):
                        f_table = gr.Dataframe(label="Per pathology", wrap=False, pinned_columns=1, elem_id="pp-table",
                                               interactive=False)  # one line per pathology; narrow headers stay whole
                        f_plot = gr.Plot(label="Per-pathology metrics")
                        f_counts = gr.Plot(label="Long-tail counts")

            # ------------------------------------------------------------------ 4. Batch suite
            with gr.Tab("Batch suite", id="batch"), gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        b_src, b_files, b_folder, b_mdl, b_n, b_steps = set_chooser("batch")
                        b_axes = gr.CheckboxGroup(["Fidelity", "Privacy", "Utility"], value=["Fidelity", "Privacy"],
                                                  label="Axes")
                        u_lim = utility_service.UtilityLimits.for_mode(public)
                        with gr.Accordion("Utility: classifier trained on the synthetic set, tested on real images",
                                          open=False):
                            gr.Markdown("The real-trained baseline (reference train split) is trained once per "
                                        "settings and reused; the reference's test split is the test set.")
                            u_model = gr.Dropdown(list(utility_service.MODEL_CHOICES),
                                                  value=utility_service.default_model(studio.device),
                                                  allow_custom_value=not public, label="Classifier (timm)",
                                                  elem_id="batch-utility-model")
                            with gr.Row():
                                u_epochs = gr.Slider(1, min(u_lim.max_epochs, 50), value=utility_service.DEFAULT_EPOCHS,
                                                     step=1, label="Epochs", elem_id="batch-utility-epochs")
                                u_size = gr.Slider(utility_service.MIN_IMAGE_SIZE, min(u_lim.max_image_size, 256),
                                                   value=utility_service.DEFAULT_IMAGE_SIZE, step=16,
                                                   label="Image size (px)", elem_id="batch-utility-size")
                            u_mixed = gr.Checkbox(False, label="Also train on real + synthetic")
                        with gr.Accordion("Report utility: a report generator trained on the synthetic images and "
                                          "their prompts, tested on real images", open=False):
                            gr.Markdown("The small captioner (CNN + transformer decoder) trains on the synthetic set's "
                                        "(image, prompt) pairs and, once per settings, on the reference's train split; "
                                        "both write reports for the reference's test images. Same as `python -m "
                                        "evaluators report-utility`.")
                            r_epochs = gr.Slider(1, report_utility_service.PUBLIC_MAX_EPOCHS if public else 20,
                                                 value=report_utility_service.DEFAULT_EPOCHS, step=1, label="Epochs",
                                                 elem_id="batch-report-epochs")
                            r_btn = gr.Button("Run report utility", elem_id="batch-report-run")
                            r_status = gr.Markdown(elem_id="batch-report-status")
                            r_table = gr.Dataframe(label="Report utility: clinical F1, BLEU, ROUGE-L, METEOR, copies",
                                                   elem_id="batch-report-utility", interactive=False)
                        with gr.Row():
                            b_boot = gr.Number(0, precision=0, minimum=0, maximum=limits.maximum("bootstrap", public),
                                               label=f"Bootstrap resamples (at most {limits.maximum('bootstrap', public)})")
                            b_min = gr.Number(10, precision=0, label="Min images per pathology", elem_id="batch-min")
                        b_pre = gr.Radio(PREPROCESS_CHOICES, value="auto", label=PREPROCESS_LABEL,
                                         elem_id="batch-preprocess")
                        with gr.Row():
                            b_btn = gr.Button("Run", variant="primary", elem_id="batch-run")
                            b_cancel = gr.Button("Cancel", variant="stop", elem_id="batch-cancel")
                        b_status = gr.Markdown(elem_id="batch-status")
                    with gr.Column(scale=2):
                        b_overall = gr.Dataframe(label="Overall", elem_id="batch-overall", interactive=False)
                        b_table = gr.Dataframe(label="Per pathology", wrap=False, pinned_columns=1, elem_id="batch-table",
                                               interactive=False)
                        b_plot = gr.Plot(label="Per-pathology metrics")
                        b_priv_img = gr.Dataframe(label="Privacy per image: one verdict each (memorised / same patient "
                                                  "/ new) with its evidence", elem_id="batch-privacy-images",
                                                  interactive=False, wrap=True)
                        b_priv = gr.Dataframe(label="Privacy per pathology (memorisation flag and re-ID rates)",
                                              elem_id="batch-privacy", interactive=False)
                        b_util = gr.Dataframe(label="Utility: trained on real vs synthetic, tested on real images",
                                              elem_id="batch-utility", interactive=False)
                        b_files_out = gr.File(label="Results (CSV, JSON)", file_count="multiple", interactive=False)

            # ------------------------------------------------------------------ 5. Leaderboard
            with gr.Tab("Leaderboard", id="leaderboard") as lb_tab:
                with gr.Row():
                    lb_kind = gr.Dropdown(["", "fidelity", "privacy", "utility", "report-utility", "reader-study", "full"], value="",
                                          label="Kind")
                    lb_btn = gr.Button("Refresh")
                # One line per run, scrolled sideways past the metric columns with id and date pinned; long
                # settings are cut in the cell (the side-by-side view below shows them in full).
                lb_table = gr.Dataframe(label="Runs (click a header to sort)", elem_id="leaderboard",
                                        interactive=False, wrap=False, max_chars=48, pinned_columns=2)
                lb_plot = gr.Plot(label="Across runs")
                with gr.Row():
                    lb_a = gr.Dropdown([], value=None, label="Run A", elem_id="lb-a")
                    lb_b = gr.Dropdown([], value=None, label="Run B", elem_id="lb-b")
                    lb_cmp = gr.Button("Compare side by side")
                lb_side = gr.Dataframe(label="Side by side", interactive=False, wrap=True, elem_id="lb-side",
                                       headers=["field", "run A", "run B"])

            # ------------------------------------------------------------------ Reader study (chexgen_ui/tabs)
            reader_study.build(studio, public, source_choices)

            # ------------------------------------------------------------------ 6. Setup
            with gr.Tab("Setup", id="setup") as setup_tab:
                setup_ref = gr.Markdown()
                setup_reid = gr.Markdown(elem_id="setup-reid")
                with gr.Accordion("Train a re-ID model on the reference set's patients", open=False):
                    gr.Markdown("Needs patient ids with two or more studies for some patients. The model is saved "
                                "where the privacy checks look for one trained on this set (used when no preferred "
                                "model is present: the demo model on the demo world, CheXGenBench's checkpoint "
                                "elsewhere); its AUC on held-out patients is shown with every re-ID score. A stopped "
                                "run continues from its last finished epoch (same settings).")
                    with gr.Row():
                        reid_epochs = gr.Slider(1, 30, value=5, step=1, label="Epochs", elem_id="reid-epochs")
                        reid_btn = gr.Button("Train re-ID model", elem_id="reid-train")
                    reid_out = gr.Markdown(elem_id="reid-train-status")
                gr.Markdown("### Generators")
                setup_models = gr.Dataframe(interactive=False, wrap=True)
                gr.Markdown("### Encoders")
                setup_enc = gr.Dataframe(interactive=False, wrap=True)
                gr.Markdown(
                    "### Adding a model\nWeights are looked for locally first (folders named in the entry, then the "
                    "Hugging Face cache, `HF_HOME`); with `HF_HUB_OFFLINE=1` nothing is downloaded. Entries are "
                    "read from `evaluators/generators/entries.toml`, then `$CHEXGEN_HOME/models/*.toml`, then "
                    "`CHEXGEN_MODELS`. Describe a model in TOML:\n```toml\n" + SETUP_TOML + "```\n### Another reference set\n"
                    "`python app.py --reference /data/mimic/train.csv` (a folder, a CSV, or `PATH@train` for one "
                    "split; a valid/test split is used to calibrate the memorisation threshold). The reference "
                    "index is built once under `CHEXGEN_HOME/indexes` and reused. Encoder: `CHEXGEN_APP_ENCODER`."
                )

        # ================================================================== callbacks
        def _job(fn):
            """Run ``fn`` under a cancellation token of its session (chexgen_ui.jobctl)."""
            def session_of(args, kwargs):
                req = next((a for a in [*args, *kwargs.values()] if isinstance(a, gr.Request)), None)
                return _session(req)
            return jobctl.wrap(fn, session_of=session_of)

        @_user_errors
        def on_model(name):
            if not name:
                return "", gr.update(), gr.update()
            p = studio.model_presets(name)
            return (studio.model_status(name), gr.update(value=min(int(p.get("steps") or 25),
                                                                   limits.maximum("steps", studio.public))),
                    gr.update(value=float(p.get("guidance") if p.get("guidance") is not None else 7.5)))

        model_dd.change(on_model, model_dd, [model_md, steps_sl, guid_sl])

        @_user_errors
        def on_pathology(p):
            prompts = studio.example_prompts(p)
            return gr.update(value=prompts[0]), gr.update(choices=prompts, value=prompts[0])

        path_dd.change(on_pathology, path_dd, [prompt_tb, examples_dd])
        examples_dd.input(lambda t: t, examples_dd, prompt_tb)

        @_user_errors
        @gpu(GPU_DURATION)
        @_job
        def on_generate(model, prompt, n, seed, steps, guidance, progress=gr.Progress(),  # noqa: B008 - Gradio's idiom
                        request: gr.Request = None):
            gen = studio.generate(model, prompt, int(n), int(seed or 0), int(steps), float(guidance),
                                  session=_session(request), progress=_progress(progress))
            flagged = int(gen.flags.sum()) if gen.flags is not None else 0
            counts = Counter(studio.image_verdict(gen, i).decision for i in range(len(gen)))
            status = (f"{len(gen)} image(s) from **{model}**; verdicts: "
                      + ", ".join(f"{counts[d]} {d}" for d in ("memorised", "same patient", "new", "unknown")
                                  if counts[d] or d != "unknown")
                      + f" ({flagged} above the copy threshold"
                      + (f" {gen.threshold:.4f}" if gen.threshold is not None else "")
                      + "). " + studio.reid_status(short=True) + ". Select an image to inspect it.")
            notes = list(gen.notes) + studio.domain_notes()
            if notes:
                status += "\n\n" + "\n".join(f"- {n}" for n in notes)
            map_value = _map_json(gen) if studio.index().has_umap else gr.update()  # an index built without a map
            return gen, _gallery_items(gen), status, str(studio.export_zip(gen)), map_value

        def _map_json(gen: Generated | None) -> str:
            points = studio.map_points()
            xy = gen.umap if gen is not None else None
            text = [f"#{i} seed {s}: {p}" for i, (s, p) in enumerate(zip(gen.seeds, gen.prompts))] if gen else None
            return figures.umap_figure(points, xy, text).to_json()

        gen_btn.click(on_generate, [model_dd, prompt_tb, n_sl, seed_nb, steps_sl, guid_sl],
                      [gen_state, gallery, gen_status, zip_file, map_html], concurrency_id=GPU_QUEUE,
                      concurrency_limit=GPU_CONCURRENCY)

        @_user_errors
        def on_select(gen, level, width, zoom, evt: gr.SelectData):
            if gen is None:
                raise InputError("Generate images first.")
            i = int(evt.index)
            return (i, window_level(gen.images[i], level, width, zoom), studio.neighbour_images(gen, i),
                    studio.neighbour_table(gen, i), studio.verdict(gen, i), studio.evidence_image(gen, i))

        gallery.select(on_select, [gen_state, level_sl, width_sl, zoom_sl],
                       [sel_idx, view_img, nn_gallery, nn_table, verdict_md, evidence_img])

        def on_window(gen, i, level, width, zoom):
            if gen is None or i is None or int(i) < 0:
                return gr.update()
            return window_level(gen.images[int(i)], level, width, zoom)

        for sl in (level_sl, width_sl, zoom_sl):
            sl.change(on_window, [gen_state, sel_idx, level_sl, width_sl, zoom_sl], view_img,
                      show_progress="hidden")

        # ---- map
        def _map_outputs(gen):
            idx = studio.index()
            return _map_json(gen), f"{len(idx)} reference images · encoder {idx.encoder} · index `{idx.dir.name}`"

        @_user_errors
        @gpu(GPU_DURATION)
        @_job
        def on_map(gen, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
            studio.index(_progress(progress))
            return _map_outputs(gen)

        map_btn.click(on_map, gen_state, [map_html, map_status], concurrency_id=GPU_QUEUE)

        @_user_errors
        def on_point(gen, evt: gr.EventData):
            key = str(getattr(evt, "key", None) or (evt._data or {}).get("key", ""))
            kind, _, num = key.partition(":")
            if kind == "gen" and gen is not None:
                i = int(num)
                return to_uint8(gen.images[i]), f"generated #{i} (seed {gen.seeds[i]})\n\n{gen.prompts[i]}\n\n" \
                    + studio.verdict(gen, i)
            if kind == "ref":
                img, caption = studio.reference_image(int(num))
                return img, caption
            raise InputError(f"Unrecognised point {key!r}.")

        map_html.click(on_point, gen_state, [map_img, map_caption])

        @_user_errors
        def on_row(row):
            return studio.reference_image(int(row or 0))

        row_btn.click(on_row, row_nb, [map_img, map_caption])

        # ---- per-pathology fidelity
        @_user_errors
        @gpu(GPU_DURATION)
        @_job
        def on_pp(src, files, folder, mdl, n, steps, boot, min_count, preprocess="auto", progress=gr.Progress(),  # noqa: B008 - Gradio's idiom
                  request: gr.Request = None):
            report = _progress(progress)
            synthetic, model = load_set(src, files, folder, mdl, n, steps, report, _session(request))
            run = studio.run_fidelity(synthetic, model=model, per_pathology=True, bootstrap=int(boot or 0),
                                      min_count=int(min_count or 1), session=_session(request),
                                      progress=report, preprocess=preprocess or "auto")
            return run.per_pathology, figures.fidelity_bars(run.per_pathology, result=run.result), \
                figures.counts_figure(run.counts)

        f_btn.click(on_pp, [f_src, f_files, f_folder, f_mdl, f_n, f_steps, f_boot, f_min, f_pre],
                    [f_table, f_plot, f_counts], concurrency_id=GPU_QUEUE, concurrency_limit=GPU_CONCURRENCY)

        # ---- batch
        @_user_errors
        @gpu(GPU_DURATION)
        @_job
        def on_batch(src, files, folder, mdl, n, steps, axes, boot, min_count, u_model, u_epochs, u_size, u_mixed,
                     preprocess="auto", progress=gr.Progress(), request: gr.Request = None):  # noqa: B008 - Gradio's idiom
            cancel = cancel_event(request)
            cancel.clear()
            report = _progress(progress, cancel)
            axes = list(axes or [])
            if not axes:
                yield "Choose at least one axis.", None, None, None, None, None, None, None
                return
            yield "Loading the synthetic set…", None, None, None, None, None, None, None
            session = _session(request)
            synthetic, model = load_set(src, files, folder, mdl, n, steps, report, session)
            overall = table = plot = priv = priv_img = util = None
            files_out: list[str] = []
            done = []
            if "Fidelity" in axes:
                yield f"Running fidelity on {len(synthetic)} image(s)…", None, None, None, None, None, None, None
                run = studio.run_fidelity(synthetic, model=model, per_pathology=True, bootstrap=int(boot or 0),
                                          min_count=int(min_count or 1), session=session, progress=report,
                                          preprocess=preprocess or "auto")
                overall, table = run.overall, run.per_pathology
                plot = figures.fidelity_bars(run.per_pathology, result=run.result)
                files_out += [str(run.csv_path), str(run.json_path)]
                done.append(f"Fidelity done in {run.result.get('wall_time_s', 0):.1f} s: {len(synthetic)} synthetic "
                            f"vs {run.result['real']['n']} reference images, {run.result['settings']['preprocess']} "
                            f"preprocessing; saved as run #{run.run_id}." + fidelity_note_line(run.result))
                yield "\n\n".join(done), overall, table, plot, None, None, None, files_out
            if "Privacy" in axes:
                prun = studio.run_privacy(synthetic, model=model, session=session, progress=report)
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
                urun = utility_service.run_utility_job(
                    studio, synthetic, model=u_model, epochs=int(u_epochs or 0), image_size=int(u_size or 0),
                    mixed=bool(u_mixed), session=session, source=model, progress=report)
                util = urun.table
                files_out.append(str(urun.json_path))
                done.append(utility_service.summary(urun))
            yield "\n\n".join(done), overall, table, plot, priv, priv_img, util, files_out

        batch_ev = b_btn.click(on_batch, [b_src, b_files, b_folder, b_mdl, b_n, b_steps, b_axes, b_boot, b_min,
                                          u_model, u_epochs, u_size, u_mixed, b_pre],
                               [b_status, b_overall, b_table, b_plot, b_priv, b_priv_img, b_util, b_files_out],
                               concurrency_id=GPU_QUEUE, concurrency_limit=GPU_CONCURRENCY)

        @_user_errors
        @gpu(GPU_DURATION)
        @_job
        def on_report(src, files, folder, mdl, n, steps, epochs, progress=gr.Progress(), request: gr.Request = None):  # noqa: B008 - Gradio's idiom
            cancel = cancel_event(request)
            cancel.clear()
            report = _progress(progress, cancel)
            session = _session(request)
            synthetic, model = load_set(src, files, folder, mdl, n, steps, report, session)
            run = report_utility_service.run_report_job(studio, synthetic, epochs=int(epochs or 0), session=session,
                                                        source=model, progress=report)
            return report_utility_service.summary(run), run.table

        report_ev = r_btn.click(on_report, [b_src, b_files, b_folder, b_mdl, b_n, b_steps, r_epochs], [r_status, r_table],
                    concurrency_id=GPU_QUEUE, concurrency_limit=GPU_CONCURRENCY)

        def on_cancel(request: gr.Request = None):
            cancel_event(request).set()
            jobctl.cancel(_session(request))
            return "Cancelled."

        b_cancel.click(on_cancel, None, b_status, cancels=[batch_ev, report_ev], queue=False)

        # ---- leaderboard
        @_user_errors
        def on_board(kind, request: gr.Request = None):
            board = studio.leaderboard(kind or None, session=_session(request))
            choices, a, b = studio.run_choices(board)
            return (board, figures.leaderboard_figure(board), gr.update(choices=choices, value=a),
                    gr.update(choices=choices, value=b))

        lb_btn.click(on_board, lb_kind, [lb_table, lb_plot, lb_a, lb_b])
        lb_tab.select(on_board, lb_kind, [lb_table, lb_plot, lb_a, lb_b])
        lb_kind.change(on_board, lb_kind, [lb_table, lb_plot, lb_a, lb_b])

        @_user_errors
        def on_compare(a, b, request: gr.Request = None):
            if a is None or b is None:
                raise InputError("Pick two runs (Run A and Run B) from the lists; Refresh lists new runs.")
            return studio.compare_runs(int(a), int(b), session=_session(request))

        lb_cmp.click(on_compare, [lb_a, lb_b], lb_side)

        # ---- setup
        def _reid_markdown() -> str:
            return "\n\n".join(["### Re-identification", studio.reid_status(), *studio.domain_notes()])

        def on_setup():
            return (studio.reference_summary(), _reid_markdown(), studio.models_table(),
                    studio.encoders_table())

        @_user_errors
        @gpu(GPU_DURATION)
        def on_train_reid(epochs, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
            r = studio.train_reid(epochs=int(epochs or 1), progress=_progress(progress))
            resumed = f" (resumed after epoch {r['resumed_from_epoch']})" if r.get("resumed_from_epoch") else ""
            return (f"Trained {r['architecture']} for {r['epochs']} epoch(s){resumed} in {r['seconds']} s on "
                    f"{r['train_patients']} patients: verification AUC **{r['val_auc']:.3f}** on {r['val_patients']} "
                    f"held-out patients. Saved to `{r['out']}`."), _reid_markdown()

        reid_btn.click(on_train_reid, reid_epochs, [reid_out, setup_reid], concurrency_id=GPU_QUEUE)

        setup_tab.select(on_setup, None, [setup_ref, setup_reid, setup_models, setup_enc])

        # ---- first load: fill the prompt, build/load the index (first start shows progress), draw the map
        @_user_errors
        @gpu(GPU_DURATION)
        @_job
        def on_load(progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
            report = _progress(progress)
            studio.index(report)
            try:  # calibrate the memorisation threshold now (once; cached), not on the first Generate click
                report(0, 1, "calibrating the memorisation threshold on held-out patients")
                studio.calibration()
                report(0, 1, "calibrating the re-ID verdict threshold on held-out patients")
                studio.reid_calibration()
            except InputError as exc:
                log.warning("memorisation threshold not calibrated: %s", exc)
            return _map_outputs(None)

        demo.load(on_load, None, [map_html, map_status], concurrency_id=GPU_QUEUE)
    if public:
        public_paths.scrub_app(demo)  # no server path in any output or error
    demo.studio = studio  # for tests and scripts
    return demo

