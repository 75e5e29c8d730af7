"""The "Reader study" tab: set-up (study lead), reading (reader, by code) and results (study lead, by study id).

Thin layer over :mod:`evaluators.readerstudy`: the engine draws the blinded sample, serves the blinded PNGs,
saves every answer as it is given (SQLite) and computes every number; this module converts widget values and
engine output. The reader's page only ever gets the blinded image (windowed for display), their progress and
their own answers: no label, source, path, file name, native size or URL of the source.

The plain functions (:func:`create`, :func:`open_reader`, :func:`reader_image`, :func:`save_answer`,
:func:`next_image`, :func:`results_tables`) are what the callbacks call; tests call them directly.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr  # at module level, so that callbacks' ``request: gr.Request`` resolves: Gradio reads the
import numpy as np  # annotations with typing.get_type_hints, and when one is unresolved it passes no request at all
import pandas as pd

from evaluators import catalogue, limits
from evaluators.errors import InputError
from evaluators.pathologies import PATHOLOGIES
from evaluators.readerstudy import export as rs_export
from evaluators.readerstudy.study import QUESTIONS, Reader, create_study
from evaluators.space import gpu

from .. import figures
from ..display import window_level

PUBLIC_MAX_IMAGES = 200
QUESTION_LABELS = {"real_synthetic": "real or synthetic (+ confidence 1-5)", "findings": "findings present",
                   "quality": "image quality 1-5", "comment": "free comment"}
CALLS = ["real", "synthetic"]
LINK_PARAM = "reader"  # a reader link is the app's address + ?reader=CODE: it opens Reading with the code filled in

# Keyboard shortcuts while reading (not while typing in a text field): r / s = real / synthetic, 1-5 = confidence,
# n = next image. They click the visible controls, so Gradio's own events save the answer.
KEYS_JS = """
if (!window._chexgenReaderKeys) {
  window._chexgenReaderKeys = true;
  document.addEventListener('keydown', (ev) => {
    const img = document.querySelector('#rs-image');
    if (!img || img.offsetParent === null) { return; }
    const t = ev.target;
    if (t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type === 'text')) ) { return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    const k = ev.key.toLowerCase();
    const pick = (id, i) => {
      const labels = document.querySelectorAll('#' + id + ' label');
      if (labels[i]) { labels[i].click(); ev.preventDefault(); }
    };
    if (k === 'r') { pick('rs-call', 0); }
    else if (k === 's') { pick('rs-call', 1); }
    else if ('12345'.includes(k) && k.length === 1) { pick('rs-confidence', parseInt(k) - 1); }
    else if (k === 'n') { const b = document.querySelector('#rs-next'); if (b) { b.click(); ev.preventDefault(); } }
  });
}
"""


# ---------------------------------------------------------------------------------------------- set-up
def _synthetic_sets(studio, src: str, files, folder: str, session: str | None, *, gen_models=None, per_model=0,
                    steps=None, seed: int = 0, progress=None) -> tuple[list, list]:
    """(image sets, uploaded/generated sets to discard afterwards). Each uploaded zip is one set; other uploaded
    files (a CSV plus its images) together are one set. Server paths: one per line (local mode). Generate: one set
    per model, ``per_model`` images each from reference prompts (the Batch suite's
    :meth:`~chexgen_ui.services.Studio.synthetic_from_model`, so public-mode limits and quotas apply)."""
    if src.startswith("generate"):
        names = [m for m in ([gen_models] if isinstance(gen_models, str) else (gen_models or [])) if m]
        if not names:
            raise InputError("Choose one or more models to generate the synthetic images.")
        sets = []
        try:
            for m in names:
                sets.append(studio.synthetic_from_model(m, per_model, seed, int(steps) if steps else None,
                                                        session=session, progress=progress))
        except BaseException:
            for made in sets:
                studio.quota.discard(made)
            raise
        return sets, sets
    if src.startswith("server"):
        paths = [p.strip() for p in str(folder or "").splitlines() if p.strip()]
        if not paths:
            raise InputError("Type one server folder or CSV per line (local mode).")
        return [studio.synthetic_from_folder(p) for p in paths], []
    files = [f for f in (files or []) if f]
    if not files:
        raise InputError("Upload one zip per synthetic set (images + optional CSV of labels/prompts).")
    zips = [f for f in files if str(f).lower().endswith(".zip")]
    rest = [f for f in files if not str(f).lower().endswith(".zip")]
    sets = [studio.synthetic_from_upload([z], session=session) for z in zips]
    if rest:
        sets.append(studio.synthetic_from_upload(rest, session=session))
    return sets, sets


def create(studio, src: str, files, folder: str, models: str, n_images, mix: str, questions, readers: str,
           size=None, seed=0, name: str = "", session: str | None = None, *, gen_models=None, n_generate=0,
           steps=None, progress=None, base_url: str | None = None) -> tuple[str, str]:
    """Create a study on the app's reference set; returns (markdown with the reader codes, study id).

    ``src`` "generate...": the synthetic side is generated now by ``gen_models`` (one set per model) from
    prompts drawn from the reference set's reports (so every image has the labels it was generated for),
    ``n_generate`` images per model (0: just the study's share, half the images split over the models).
    ``base_url``: the app's address, for each reader's link (:func:`reader_link`)."""
    n = int(n_images or 0)
    if studio.public and n > PUBLIC_MAX_IMAGES:
        raise InputError(f"At most {PUBLIC_MAX_IMAGES} images per study in public mode; got {n}.")
    rd = str(readers or "").strip()
    rd = int(rd) if rd.isdigit() else [r.strip() for r in rd.split(",") if r.strip()]
    if rd in (0, []):
        raise InputError("Give a number of readers (e.g. 2) or their names, comma-separated.")
    model_names = [m.strip() for m in str(models or "").split(",") if m.strip()] or None
    generating = str(src or "").startswith("generate")
    if generating:
        gen_models = [m for m in ([gen_models] if isinstance(gen_models, str) else (gen_models or [])) if m]
        if n < 2 or n % 2:
            raise InputError(f"The number of images must be even (half real, half synthetic); got {n}.")
        share = -(-(n // 2) // max(1, len(gen_models)))  # ceil: each model's share of the synthetic half
        per_model = int(n_generate or 0) or share
        if per_model < share:
            raise InputError(f"Generate at least {share} images per model: the study takes {share} from each of the "
                             f"{len(gen_models)} model(s); got {per_model}.")
        model_names = model_names or list(gen_models)
    sets, uploaded = _synthetic_sets(studio, src or "", files, folder, session, gen_models=gen_models,
                                     per_model=per_model if generating else 0, steps=steps, seed=int(seed or 0),
                                     progress=progress)
    try:
        study = create_study(studio.reference_set(), sets, n_images=n, readers=rd, mix=mix or None,
                             questions=tuple(questions or ()), size=int(size) if size else None,
                             seed=int(seed or 0), name=(name or "").strip() or None, models=model_names,
                             reference_name=studio.reference)
    except InputError as exc:
        if generating and "synthetic set" in str(exc) and "positive for" in str(exc):
            raise InputError(f"{exc} The generated sets' prompts are drawn at random from the reference reports: "
                             "raise 'Images per model' so enough of them carry the mixed findings.") from None
        raise
    finally:
        for s in uploaded:  # the study keeps its own blinded copies; public uploads / generated sets go now
            studio.quota.discard(s)
    lines = [f"**Study `{study['study_id']}`** ({study['name']}): {study['n_images']} images at "
             f"{study['size']} px, half real, half synthetic. Keep the study id: it opens the results.",
             "", f"Real images: the reference set `{reference_label(studio)}`"
             + (f"; synthetic images generated now by {', '.join(f'`{m}`' for m in gen_models)} "
                f"({per_model} per model, prompts drawn from the reference reports)." if generating else "."),
             "", "Reader codes (give each reader only their own code or link; it opens the Reading section):", ""]
    lines += [f"- {who}: `{code}` · link: `{reader_link(code, base_url)}`" for who, code in study["readers"].items()]
    lines += ["", "Notes:", "", *[f"- {n}" for n in study["notes"]]]
    return "\n".join(lines), study["study_id"]


def reader_link(code: str, base_url: str | None = None) -> str:
    """The reader's link: the app's address with ``?reader=CODE`` (the code alone: it is the reader's only key and
    says nothing about the study's answers). Without the address, the part to append to it."""
    from urllib.parse import quote

    base = (base_url or "").split("?")[0].split("#")[0]
    return f"{base}?{LINK_PARAM}={quote(str(code), safe='')}"


def page_url(request) -> str | None:
    """The address of the page a request came from (its Referer without query), or None."""
    headers = getattr(request, "headers", None) or {}
    ref = headers.get("referer") if hasattr(headers, "get") else None
    return ref.split("?")[0].split("#")[0] if ref else None


def link_code(request) -> str:
    """The reader code of a reader link (``?reader=CODE`` in the page's address), or ''."""
    params = getattr(request, "query_params", None) or {}
    return str(params.get(LINK_PARAM) or "").strip() if hasattr(params, "get") else ""


def reference_label(studio) -> str:
    """The reference set in use as the app's header names it: its path/spec in local mode, scrubbed in public."""
    from .. import public_paths

    return public_paths.scrub(studio.reference) if studio.public else str(studio.reference)


# ---------------------------------------------------------------------------------------------- reading
def open_reader(code: str) -> dict:
    """What the reader's page shows for ``code``: the resume point (first unanswered image, None when done),
    progress, which questions are asked, and the reader's own saved answer for that image."""
    r = Reader(code)
    item = r.next_item()
    done, total = r.progress()
    saved = r.answers().get(item, {}) if item else {}
    return {"code": r.code, "item": item, "done": done, "total": total, "questions": list(r.questions),
            "answer": {k: saved.get(k) for k in ("call", "confidence", "findings", "quality", "comment")}}


def reader_image(code: str, item: str | None, level=0.5, width=1.0, zoom=1.0) -> np.ndarray | None:
    """The blinded PNG of ``item`` (only if it belongs to this reader's study), windowed and zoomed."""
    if not item:
        return None
    from PIL import Image

    png = Reader(code).image_png(item)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255.0
    return window_level(img, level, width, zoom)


def save_answer(code: str, item: str | None, **fields) -> None:
    """Save the given fields now (None = leave as saved)."""
    if not item:
        raise InputError("Open your reader code first (or you are done: every image is answered).")
    if fields.get("confidence") is not None:
        fields["confidence"] = int(fields["confidence"])
    if fields.get("quality") is not None:
        fields["quality"] = int(fields["quality"])
    Reader(code).answer(item, **fields)


def next_image(code: str, item: str | None, call, confidence, findings, quality, comment) -> dict:
    """Save everything on the form for ``item`` (an unticked findings list = no finding seen) and move on."""
    if item:
        r = Reader(code)
        if "real_synthetic" in r.questions and call not in CALLS:
            raise InputError("Answer real (r) or synthetic (s) before the next image.")
        save_answer(code, item, call=call if call in CALLS else None,
                    confidence=confidence or None, quality=quality or None,
                    findings=list(findings or []) if "findings" in r.questions else None,
                    comment=comment if comment else None)
    return open_reader(code)


def progress_line(view: dict) -> str:
    if view["item"] is None:
        return f"**Done**: all {view['total']} images answered. Thank you. Your answers are saved."
    return (f"Image {view['done'] + 1} of {view['total']} ({view['done']} answered; every answer is saved as you "
            "give it, so you can close the page and continue later with the same code).")


# ---------------------------------------------------------------------------------------------- results
def _f(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


def results_tables(study_id: str) -> dict:
    """The engine's results as tables (accuracy, agreement, findings, quality), the ROC figure of the confidence
    ratings (per reader and pooled) and a notes/progress markdown."""
    res = rs_export.study_results(str(study_id or "").strip())
    info = res["study"]
    acc_rows = []
    for who, a in [*res["per_reader"].items(), ("pooled", res["pooled"]),
                   *((f"synthetic set: {s}", a) for s, a in res["per_source"].items())]:
        acc_rows.append({"reader / set": who, "accuracy": _f(a["accuracy"]),
                         "95% CI": f"[{_f(a['ci_low'])}, {_f(a['ci_high'])}]", "correct / n": f"{a['correct']}/{a['n']}",
                         "p vs 50%": _f(a["p_value_vs_50"], ".3g"), "ROC AUC (confidence)": _f(a["auc"])})
    kappa_rows = [{"readers": pair, "kappa": _f(k["kappa"]), "images": k["n"], "statistic": "Cohen"}
                  for pair, k in res["cohen_kappa"].items()]
    fk = res["fleiss_kappa"]
    if fk["raters"] > 2:
        kappa_rows.append({"readers": f"all {fk['raters']}", "kappa": _f(fk["kappa"]), "images": fk["n"],
                           "statistic": "Fleiss"})
    find_rows = []
    for p in PATHOLOGIES:
        row = {"finding": p}
        for kind in ("real", "synthetic"):
            s = res["findings"][kind][p]
            row[f"{kind}: sensitivity (pos)"] = f"{_f(s['sensitivity'], '.2f')} ({s['positives']})"
            row[f"{kind}: specificity (neg)"] = f"{_f(s['specificity'], '.2f')} ({s['negatives']})"
        find_rows.append(row)
    q = res["quality"]
    qual_rows = [{"reader": who, **{f"{k} mean (n)": f"{_f(d[k]['mean'], '.2f')} ({d[k]['n']})"
                                    for k in ("real", "synthetic")}}
                 for who, d in [*q["per_reader"].items(), ("pooled", q["pooled"])]]
    prog = ", ".join(f"{who} {done}/{info['n_images']}" for who, done in info["progress"].items())
    ref = info["settings"].get("reference", "")  # public mode: the app scrubs server paths from every output
    md = (f"**{info['name']}** (`{info['study_id']}`): {res['n_calls']} real/synthetic calls; progress: {prog}. "
          f"Intervals: {res['ci_method']}; chance is 50%. Reference (real images): `{ref}`.\n\n"
          + "\n".join(f"- {n}" for n in [*info["notes"], *res["notes"]]))
    roc = figures.reader_roc_figure({**res["per_reader"], "pooled": res["pooled"]})
    return {"markdown": md, "accuracy": pd.DataFrame(acc_rows), "kappa": pd.DataFrame(kappa_rows),
            "findings": pd.DataFrame(find_rows), "quality": pd.DataFrame(qual_rows), "roc": roc}


def export_files(study_id: str) -> list[str]:
    out = Path(tempfile.mkdtemp(prefix="reader-study-"))
    paths = rs_export.export(str(study_id or "").strip(), out)
    return [str(paths["json"]), str(paths["csv"]), str(paths["roc_csv"])]


# ---------------------------------------------------------------------------------------------- layout
def build(studio, public: bool, source_choices: list[str]) -> None:
    """The tab's layout and callbacks (call inside the app's ``gr.Tabs``): three sections laid out, then wired."""
    import gradio as gr

    with gr.Tab("Reader study", id="reader-study") as tab:
        gr.HTML("", js_on_load=KEYS_JS, elem_id="rs-keys", padding=False)
        with gr.Accordion("Set-up (study lead)", open=True):
            s = _setup_layout(gr, studio, public, source_choices)
        with gr.Accordion("Reading (reader)", open=True):
            r = _reading_layout(gr)
        with gr.Accordion("Results (study lead)", open=True):
            x = _results_layout(gr)
    _wire_setup(gr, studio, s, x)
    view, view_out = _wire_reading(gr, r)
    _wire_results(gr, studio, x)
    _wire_link(gr, tab, r, view, view_out)


def _setup_layout(gr, studio, public: bool, source_choices: list[str]) -> SimpleNamespace:
    src_choices = [c for c in source_choices if c.startswith(("upload", "server", "generate"))]
    default_model = catalogue.default_model()
    try:
        default_steps = int(catalogue.model_presets(default_model).get("steps", 25)) if default_model else 25
    except InputError:
        default_steps = 25
    s = SimpleNamespace()
    gr.Markdown("Reference (real) images come from the app's reference set; synthetic images from one or "
                "more sets. The engine draws a balanced (half real, half synthetic), shuffled sample, "
                "re-encodes every image at one size under a random id, and gives each reader a code.\n\n"
                f"Reference (real images) in use: `{reference_label(studio)}`.", elem_id="rs-reference")
    with gr.Row():
        with gr.Column():
            s.src = gr.Radio(src_choices, value=src_choices[0], label="Synthetic sets", elem_id="rs-src")
            s.files = gr.File(file_count="multiple", label="Upload one zip per synthetic set",
                              file_types=[".zip", ".csv", ".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff"],
                              elem_id="rs-upload")
            s.folder = gr.Textbox(label="Server folders or CSVs, one per line (local mode)", lines=2,
                                  visible=False, elem_id="rs-folder")
            with gr.Row(visible=False) as s.gen_row:
                s.gen = gr.Dropdown(catalogue.model_choices(), value=[default_model] if default_model else [],
                                    multiselect=True, label="Models (one synthetic set each; prompts drawn from the "
                                                            "reference reports)", elem_id="rs-gen-models")
                s.gen_n = gr.Number(0, precision=0, minimum=0, maximum=studio.limits.max_generate_set,
                                    label="Images per model (0 = the study's share)", elem_id="rs-gen-n")
                s.steps = gr.Number(min(default_steps, limits.maximum("steps", public)), precision=0,
                                    minimum=1, maximum=limits.maximum("steps", public), label="Steps",
                                    elem_id="rs-gen-steps")
            s.models = gr.Textbox(label="Model name per set, comma-separated (for the leaderboard; optional)",
                                  elem_id="rs-models")
        with gr.Column():
            with gr.Row():
                s.n = gr.Number(20, precision=0, minimum=2, maximum=PUBLIC_MAX_IMAGES if public else 2000,
                                label="Images (even; half real)", elem_id="rs-n")
                s.readers = gr.Textbox("2", label="Readers: a number or names", elem_id="rs-readers")
            s.mix = gr.Textbox(label="Pathology mix per side (optional), e.g. Cardiomegaly=0.25,Pleural "
                                     "Effusion=0.25", elem_id="rs-mix")
            s.q = gr.CheckboxGroup([(QUESTION_LABELS[q], q) for q in QUESTIONS], value=list(QUESTIONS),
                                   label="Questions", elem_id="rs-questions")
            s.name = gr.Textbox(label="Study name (optional)", elem_id="rs-name")
            s.btn = gr.Button("Create study", variant="primary", elem_id="rs-create")
    s.out = gr.Markdown(elem_id="rs-created")
    s.id = gr.State(None)
    return s


def _reading_layout(gr) -> SimpleNamespace:
    r = SimpleNamespace()
    with gr.Row():
        r.code = gr.Textbox(label="Your reader code", type="password", elem_id="rs-code", scale=3)
        r.open = gr.Button("Start / resume", elem_id="rs-open", scale=1)
    # Which image the form is answering travels with each event as a (hidden) component value, taken when the
    # reader acts. A gr.State would be read on the server when the event is processed: a radio click queued just
    # before "n" could then be processed after it and be saved against the *next* image.
    r.state = gr.Textbox(value="", visible=False, elem_id="rs-at")
    r.progress = gr.Markdown(elem_id="rs-progress")
    with gr.Row():
        with gr.Column(scale=3):
            # format="png": lossless, and Gradio writes no metadata chunk for an array (its default WebP is
            # lossy); the served bytes are checked in tests/test_ui_reader_study_browser.py
            r.img = gr.Image(label="Image", type="numpy", interactive=False, elem_id="rs-image", height=560,
                             buttons=[], show_label=False, format="png")
            with gr.Row():
                r.level = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Window level")
                r.width = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Window width")
                r.zoom = gr.Slider(1.0, 4.0, value=1.0, step=0.25, label="Zoom")
        with gr.Column(scale=2, min_width=300):
            gr.Markdown("Keys: **r** / **s** real / synthetic, **1-5** confidence, **n** next image.")
            r.call = gr.Radio(CALLS, value=None, label="Real or synthetic?", elem_id="rs-call")
            r.conf = gr.Radio([1, 2, 3, 4, 5], value=None, label="Confidence (1 guess - 5 certain)",
                              elem_id="rs-confidence")
            r.find = gr.CheckboxGroup(list(PATHOLOGIES), value=[], label="Findings present", elem_id="rs-findings")
            r.qual = gr.Radio([1, 2, 3, 4, 5], value=None, label="Image quality (1 poor - 5 excellent)",
                              elem_id="rs-quality")
            r.comment = gr.Textbox(label="Comment", lines=2, elem_id="rs-comment")
            r.next = gr.Button("Next image (n)", variant="primary", elem_id="rs-next")
    return r


def _results_layout(gr) -> SimpleNamespace:
    x = SimpleNamespace()
    with gr.Row():
        x.id = gr.Textbox(label="Study id", elem_id="rs-study-id", scale=3)
        x.btn = gr.Button("Show results", elem_id="rs-results-btn", scale=1)
        x.export = gr.Button("CSV / JSON", scale=1, elem_id="rs-export")
        x.save = gr.Button("Save to leaderboard", scale=1, elem_id="rs-save")
    x.md = gr.Markdown(elem_id="rs-results")
    x.acc = gr.Dataframe(label="Real vs synthetic: accuracy (Wilson 95% CI, binomial test vs 50%)",
                         interactive=False, wrap=True, elem_id="rs-accuracy", visible=False)
    x.roc = gr.Plot(label="ROC of the confidence ratings", elem_id="rs-roc", visible=False)
    x.kappa = gr.Dataframe(label="Agreement between readers on the real/synthetic call", interactive=False,
                           elem_id="rs-kappa", visible=False)
    x.qual = gr.Dataframe(label="Image quality 1-5", interactive=False, elem_id="rs-qual", visible=False)
    x.find = gr.Dataframe(label="Findings: sensitivity / specificity on real vs synthetic images "
                                "(truth of a synthetic image = the label it was generated for)",
                          interactive=False, wrap=True, elem_id="rs-findings-table", visible=False)
    x.files = gr.File(label="results.json, answers.csv, roc.csv", file_count="multiple", interactive=False)
    x.saved = gr.Markdown(elem_id="rs-saved")
    return x


# ---------------------------------------------------------------------------------------------- callbacks
def _wire_setup(gr, studio, s: SimpleNamespace, x: SimpleNamespace) -> None:
    # generating the synthetic side joins the app's GPU queue
    from ..widgets import GPU_CONCURRENCY, GPU_DURATION, GPU_QUEUE, _session, _user_errors

    s.src.change(lambda c: (gr.update(visible=c.startswith("upload")), gr.update(visible=c.startswith("server")),
                            gr.update(visible=c.startswith("generate"))),
                 s.src, [s.files, s.folder, s.gen_row])

    @_user_errors
    @gpu(GPU_DURATION)
    def on_create(src, files, folder, models, n, mix, questions, readers, name, gen_models, gen_n, steps,
                  request: gr.Request = None, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        md, sid = create(studio, src, files, folder, models, n, mix, questions, readers, name=name,
                         session=_session(request), gen_models=gen_models, n_generate=gen_n, steps=steps,
                         progress=lambda done, total, msg: progress((done, total), desc=msg),
                         base_url=page_url(request))
        return md, sid, sid

    s.btn.click(on_create, [s.src, s.files, s.folder, s.models, s.n, s.mix, s.q, s.readers, s.name, s.gen, s.gen_n,
                            s.steps], [s.out, s.id, x.id], concurrency_id=GPU_QUEUE,
                concurrency_limit=GPU_CONCURRENCY)


def _at(state: str | None) -> dict | None:
    """The reader code and image the form was showing when the reader acted (see ``_reading_layout``)."""
    try:
        at = json.loads(state or "null")
    except ValueError:
        return None
    return at if isinstance(at, dict) else None


def _wire_reading(gr, r: SimpleNamespace) -> None:
    from ..widgets import _user_errors

    def _view(view, level, width, zoom):
        q = view["questions"]
        a = view["answer"]
        state = json.dumps({"code": view["code"], "item": view["item"]})  # opaque ids only
        return (state, progress_line(view), reader_image(view["code"], view["item"], level, width, zoom),
                gr.update(value=a["call"], visible="real_synthetic" in q),
                gr.update(value=a["confidence"], visible="real_synthetic" in q),
                gr.update(value=a["findings"] or [], visible="findings" in q),
                gr.update(value=a["quality"], visible="quality" in q),
                gr.update(value=a["comment"] or "", visible="comment" in q))

    view_out = [r.state, r.progress, r.img, r.call, r.conf, r.find, r.qual, r.comment]

    @_user_errors
    def on_open(code, level, width, zoom):
        return _view(open_reader(code), level, width, zoom)

    r.open.click(on_open, [r.code, r.level, r.width, r.zoom], view_out)
    r.code.submit(on_open, [r.code, r.level, r.width, r.zoom], view_out)

    @_user_errors
    def on_next(state, call, conf, find, qual, comment, level, width, zoom):
        state = _at(state)
        if not state:
            raise InputError("Enter your reader code first.")
        return _view(next_image(state["code"], state["item"], call, conf, find, qual, comment), level, width, zoom)

    r.next.click(on_next, [r.state, r.call, r.conf, r.find, r.qual, r.comment, r.level, r.width, r.zoom], view_out)

    def saver(field):
        @_user_errors
        def on_field(state, value):
            state = _at(state)
            if state and state.get("item"):
                if field == "findings":
                    value = list(value or [])
                elif field == "comment":
                    value = value or None
                save_answer(state["code"], state["item"], **{field: value})
        return on_field

    for comp, field in ((r.call, "call"), (r.conf, "confidence"), (r.find, "findings"), (r.qual, "quality")):
        comp.input(saver(field), [r.state, comp], None, show_progress="hidden")
    r.comment.blur(saver("comment"), [r.state, r.comment], None, show_progress="hidden")

    def on_window(state, level, width, zoom):
        state = _at(state)
        if not state or not state.get("item"):
            return gr.update()
        return reader_image(state["code"], state["item"], level, width, zoom)

    for sl in (r.level, r.width, r.zoom):
        sl.change(on_window, [r.state, r.level, r.width, r.zoom], r.img, show_progress="hidden")
    return _view, view_out


def _wire_link(gr, tab, r: SimpleNamespace, view, view_out: list) -> None:
    """A reader link (``?reader=CODE``) opens this tab with the code filled in and the reader's resume point shown;
    a page without one is left as it is. An unknown code shows why in the progress line."""
    tabs, root = tab.parent, tab
    while getattr(root, "parent", None) is not None:
        root = root.parent

    def on_link(level, width, zoom, request: gr.Request = None):
        code = link_code(request)
        if not code:
            return (gr.update(), gr.update(), *[gr.update()] * len(view_out))
        try:
            shown = view(open_reader(code), level, width, zoom)
        except InputError as exc:
            shown = ("", f"This reader link does not open a study: {exc}", *[gr.update()] * (len(view_out) - 2))
        return (gr.Tabs(selected="reader-study"), code, *shown)

    root.load(on_link, [r.level, r.width, r.zoom], [tabs, r.code, *view_out])


def _wire_results(gr, studio, x: SimpleNamespace) -> None:
    from ..widgets import _session, _user_errors

    @_user_errors
    def on_results(sid):
        t = results_tables(sid)
        return (t["markdown"], *(gr.update(value=t[k], visible=True) for k in ("accuracy", "roc", "kappa",
                                                                                "quality", "findings")))

    x.btn.click(on_results, x.id, [x.md, x.acc, x.roc, x.kappa, x.qual, x.find])
    x.id.submit(on_results, x.id, [x.md, x.acc, x.roc, x.kappa, x.qual, x.find])
    x.export.click(_user_errors(export_files), x.id, x.files)

    @_user_errors
    def on_save(sid, request: gr.Request = None):
        ids = rs_export.save_to_store(str(sid or "").strip(), studio.store(), session=_session(request))
        return (f"Saved results-store run(s) {', '.join(f'#{i}' for i in ids)} (kind reader-study); the "
                "Leaderboard tab lists them next to the automatic scores of the same model names.")

    x.save.click(on_save, x.id, x.saved)
