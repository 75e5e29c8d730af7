"""What the app's tabs share: error and progress adapters, the plotly frame, the synthetic-set chooser, job control.

:class:`AppContext` holds what every tab of one app needs (the :class:`~chexgen_ui.services.Studio`, the mode, the
job control, the shared choices and the generated-images state); each module of :mod:`chexgen_ui.tabs` builds its
layout from it and wires its callbacks through it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from evaluators import jobs, limits, settings
from evaluators.errors import InputError, UnavailableError
from evaluators.jobs import Stopped

from .jobctl import JobControl
from .services import Studio

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


class JobCancelled(Exception):
    """Raised inside a running job's progress callback once the user pressed Cancel."""


def _user_errors(fn):
    """Show engine errors in the page (gr.Error) instead of a traceback."""
    def convert(exc: Exception) -> gr.Error:
        if isinstance(exc, JobCancelled):
            return gr.Error("Cancelled.")
        if isinstance(exc, Stopped):
            return gr.Error(f"Stopped ({exc.reason}); the run is saved as partial.")
        return gr.Error(str(exc), duration=None)  # stays until closed: it names the file and the fix, and the
        # page's own "Error" badge says nothing once a 10 s toast has faded

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


@dataclass
class AppContext:
    """What the tabs of one app share. Made by :meth:`create` before the Blocks; ``gen_state`` is set inside it."""

    studio: Studio
    public: bool
    jobctl: JobControl  # Cancel / disconnect / time limit of long jobs
    static_dir: Path  # plotly.min.js, served by Gradio
    models: list
    default_model: str | None
    presets: dict
    source_choices: list[str]  # where a synthetic set comes from (the set chooser, the Reader study)
    gen_state: gr.State | None = None  # the Generate tab's images, read by the Embedding map
    cancels: dict[str, threading.Event] = field(default_factory=dict)

    @classmethod
    def create(cls, studio: Studio, public: bool) -> AppContext:
        jobctl = JobControl(public)
        studio.quota.startup()  # public mode: expired run folders and orphaned uploads go
        static_dir = plotly_static_dir(public)
        gr.set_static_paths([str(static_dir)])
        from evaluators import catalogue

        models = catalogue.model_choices()
        default_model = catalogue.default_model()
        presets = catalogue.model_presets(default_model) if default_model else {}
        source_choices = ["upload (zip, or CSV + images)", "generate N from a model"]
        if not public:
            source_choices.insert(1, "server folder or CSV")
        return cls(studio, public, jobctl, static_dir, models, default_model, presets, source_choices)

    def cancel_event(self, request: gr.Request | None) -> threading.Event:
        key = getattr(request, "session_hash", None) or "default"
        ev = self.cancels.setdefault(key, threading.Event())
        return ev

    def job(self, fn):
        """Run ``fn`` under a cancellation token of its session (chexgen_ui.jobctl)."""
        def session_of(args, kwargs):
            req = next((a for a in [*args, *kwargs.values()] if isinstance(a, gr.Request)), None)
            return _session(req)
        return self.jobctl.wrap(fn, session_of=session_of)

    def set_chooser(self, prefix: str):
        """The synthetic-set chooser of the Per-pathology and Batch tabs: (source, files, folder, model, n, steps)."""
        public, presets, source_choices = self.public, self.presets, self.source_choices
        src = gr.Radio(source_choices, value=source_choices[0], label="Synthetic set")
        files = gr.File(file_count="multiple", label="Upload a zip (images + optional CSV) or a CSV + images",
                        file_types=[".zip", ".csv", ".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff"],
                        elem_id=f"{prefix}-upload")
        folder = gr.Textbox(label="Server folder or CSV (local mode)", visible=False,
                            elem_id=f"{prefix}-folder")
        with gr.Row(visible=False) as gen_row:
            mdl = gr.Dropdown(self.models, value=self.default_model, label="Model", elem_id=f"{prefix}-model")
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

    def load_set(self, src, files, folder, mdl, n, steps, report, session=None):
        """The chosen synthetic set and the model name it is saved under ("upload", "folder" or the model)."""
        studio = self.studio
        if src.startswith("upload"):
            return self._discard_at_end(studio.synthetic_from_upload(files or [], session=session)), "upload"
        if src.startswith("server"):
            return studio.synthetic_from_folder(folder), "folder"
        return self._discard_at_end(studio.synthetic_from_model(mdl, int(n or 0), 0, int(steps) if steps else None,
                                                                session=session, progress=report)), mdl

    def _discard_at_end(self, synthetic):
        """Public mode: the uploaded / generated set is deleted when its job ends (chexgen_ui.quotas)."""
        self.jobctl.on_end(lambda: self.studio.quota.discard(synthetic))
        return synthetic
