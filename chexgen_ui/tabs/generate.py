"""The "Generate & inspect" tab: generate images from a model and a report-style prompt, then inspect one
(window/level, nearest real training images, memorisation / same-patient verdict with its evidence)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np

from evaluators import catalogue, limits
from evaluators.errors import InputError, UnavailableError
from evaluators.pathologies import PATHOLOGIES
from evaluators.privacy.verdict import count, counts_text
from evaluators.runs import inspect
from evaluators.runs.generate import Generated, example_prompts
from evaluators.space import gpu

from .. import search_panel
from ..display import to_uint8, window_level
from ..services import Studio
from ..widgets import (
    GPU_CONCURRENCY,
    GPU_DURATION,
    GPU_QUEUE,
    AppContext,
    _progress,
    _session,
    _user_errors,
    log,
)
from .embedding_map import map_view


def _gallery_items(gen: Generated) -> list[tuple[np.ndarray, str]]:
    items = []
    for i, img in enumerate(gen.images):
        tag = ""
        if gen.flags is not None and gen.flags[i]:
            tag = " · FLAGGED"
        score = f"copy {gen.copy_score[i]:.3f}" if gen.copy_score is not None else f"nn sim {gen.top1[i]:.3f}"
        items.append((to_uint8(img), f"#{i} seed {gen.seeds[i]} · {score}{tag}"))
    return items


def _status(studio: Studio, gen: Generated, model: str) -> str:
    """The line under the Generate button: verdict counts, the copy threshold, re-ID status and the notes."""
    flagged = int(gen.flags.sum()) if gen.flags is not None else 0
    counts = count(inspect.image_verdict(studio.ctx, gen, i) for i in range(len(gen)))
    status = (f"{len(gen)} image(s) from **{model}**; verdicts: " + counts_text(counts)
              + f" ({flagged} above the copy threshold"
              + (f" {gen.threshold:.4f}" if gen.threshold is not None else "")
              + "). " + studio.reid_status(short=True) + ". Select an image to inspect it.")
    notes = list(gen.notes) + studio.ctx.domain_notes()
    if notes:
        status += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return status


def layout(ctx: AppContext) -> SimpleNamespace:
    """The tab's widgets (call inside the app's ``gr.Tabs``)."""
    studio, public, presets = ctx.studio, ctx.public, ctx.presets
    try:
        first_prompts = example_prompts(studio.ctx, "Pleural Effusion")
    except (InputError, UnavailableError) as exc:
        log.warning("no example prompts: %s", exc)
        first_prompts = [""]
    t = SimpleNamespace()
    with gr.Tab("Generate & inspect", id="generate"), gr.Row():
        with gr.Column(scale=1, min_width=320):
            t.model_dd = gr.Dropdown(ctx.models, value=ctx.default_model, label="Model", elem_id="model")
            t.model_md = gr.Markdown(catalogue.model_status(ctx.default_model) if ctx.default_model else "")
            t.path_dd = gr.Dropdown(list(PATHOLOGIES), value="Pleural Effusion", label="Pathology",
                                    elem_id="pathology")
            t.examples_dd = gr.Dropdown(first_prompts, value=first_prompts[0], label="Example prompts (composed, then real reference reports)",
                                        allow_custom_value=True)
            t.prompt_tb = gr.Textbox(first_prompts[0], label="Prompt (report style, editable)", lines=4,
                                     elem_id="prompt")
            with gr.Row():
                t.n_sl = gr.Slider(1, min(16, limits.maximum("n_generate", public)),
                                   value=limits.default("n_generate", public), step=1,
                                   label="Number of images")
                t.seed_nb = gr.Number(0, precision=0, label="First seed")
            with gr.Row():
                t.steps_sl = gr.Slider(1, min(150, limits.maximum("steps", public)),
                                       value=min(int(presets.get("steps", 25)), limits.maximum("steps", public)),
                                       step=1, label="Steps")
                t.guid_sl = gr.Slider(0.0, 20.0, value=float(presets.get("guidance", 7.5)), step=0.5,
                                      label="Guidance")
            t.gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
            t.gen_status = gr.Markdown()
            t.zip_file = gr.File(label="Download images + metadata (zip)", interactive=False)
        with gr.Column(scale=2):
            _inspector(t)
    return t


def _inspector(t: SimpleNamespace) -> None:
    """The right-hand column: gallery, the selected image with window/level, neighbours, verdict, evidence."""
    t.gallery = gr.Gallery(label="Generated images (select one to inspect)", columns=4, height=300,
                           elem_id="gallery", allow_preview=False)
    with gr.Row():
        with gr.Column(scale=1):
            t.view_img = gr.Image(label="Selected image (window/level applied)", type="numpy",
                                  interactive=False, elem_id="selected", height=340)
            with gr.Row():
                t.level_sl = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Window level")
                t.width_sl = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Window width")
                t.zoom_sl = gr.Slider(1.0, 4.0, value=1.0, step=0.25, label="Zoom")
        with gr.Column(scale=1):
            t.nn_gallery = gr.Gallery(label="Nearest real training images", columns=3,
                                      height=340, elem_id="neighbours", allow_preview=True)
            with gr.Row():
                t.search_sel_btn = gr.Button("Search from this image", size="sm", elem_id="search-selected")
                t.search_nb_btn = gr.Button("Search from the selected neighbour", size="sm",
                                            elem_id="search-neighbour")
    t.verdict_md = gr.Markdown(elem_id="verdict", elem_classes=["chexgen-verdict"])
    t.evidence_img = gr.Image(label="Evidence: synthetic | matched training image, aligned | overlay "
                              "(green synthetic, magenta training) | difference x4",
                              type="numpy", interactive=False, elem_id="evidence", height=200)
    t.nn_table = gr.Dataframe(label="Nearest training images", wrap=True, elem_id="nn-table",
                              interactive=False)
    t.sel_idx = gr.Number(value=-1, visible=False)
    t.nn_pick = gr.State(-1)  # the neighbour selected in the neighbours gallery
    t.search = search_panel.layout("search")


def wire(ctx: AppContext, t: SimpleNamespace, map_tab: SimpleNamespace) -> None:
    """The tab's callbacks; Generate also redraws the Embedding map (``map_tab``) with the new images."""
    _wire_prompt(ctx, t)
    _wire_generate(ctx, t, map_tab)
    _wire_inspect(ctx, t)
    _wire_search(ctx, t)


def _wire_prompt(ctx: AppContext, t: SimpleNamespace) -> None:
    studio = ctx.studio

    @_user_errors
    def on_model(name):
        if not name:
            return "", gr.update(), gr.update()
        p = catalogue.model_presets(name)
        return (catalogue.model_status(name), gr.update(value=min(int(p.get("steps") or 25),
                                                               limits.maximum("steps", studio.public))),
                gr.update(value=float(p.get("guidance") if p.get("guidance") is not None else 7.5)))

    t.model_dd.change(on_model, t.model_dd, [t.model_md, t.steps_sl, t.guid_sl])

    @_user_errors
    def on_pathology(p):
        prompts = example_prompts(studio.ctx, p)
        return gr.update(value=prompts[0]), gr.update(choices=prompts, value=prompts[0])

    t.path_dd.change(on_pathology, t.path_dd, [t.prompt_tb, t.examples_dd])
    t.examples_dd.input(lambda t: t, t.examples_dd, t.prompt_tb)


def _wire_generate(ctx: AppContext, t: SimpleNamespace, map_tab: SimpleNamespace) -> None:
    studio = ctx.studio

    @_user_errors
    @gpu(GPU_DURATION)
    @ctx.job
    def on_generate(model, prompt, n, seed, steps, guidance, colour="pathology", run_id=None,
                    progress=gr.Progress(), request: gr.Request = None):  # noqa: B008 - Gradio's idiom
        gen = studio.generate(model, prompt, int(n), int(seed or 0), int(steps), float(guidance),
                              session=_session(request), progress=_progress(progress))
        status = _status(studio, gen, model)
        # the map redrawn with the new stars, coloured as the map tab's radio says (an index built without a map: kept)
        map_value = map_view(studio, gen, colour, run_id, _session(request)) if studio.index().has_umap else \
            (gr.update(),) * 3
        return gen, _gallery_items(gen), status, str(studio.export_zip(gen)), *map_value

    t.gen_btn.click(on_generate, [t.model_dd, t.prompt_tb, t.n_sl, t.seed_nb, t.steps_sl, t.guid_sl, map_tab.colour,
                                  map_tab.ct_run],
                    [ctx.gen_state, t.gallery, t.gen_status, t.zip_file, map_tab.map_html, map_tab.map_status,
                     map_tab.map_set], concurrency_id=GPU_QUEUE, concurrency_limit=GPU_CONCURRENCY)


def _wire_inspect(ctx: AppContext, t: SimpleNamespace) -> None:
    studio = ctx.studio

    @_user_errors
    def on_select(gen, level, width, zoom, evt: gr.SelectData):
        if gen is None:
            raise InputError("Generate images first.")
        i = int(evt.index)
        neighbours = [(to_uint8(img), caption) for img, caption in inspect.neighbour_images(gen, i)]
        return (i, window_level(gen.images[i], level, width, zoom), neighbours, inspect.neighbour_table(gen, i),
                inspect.verdict_text(studio.ctx, gen, i, studio.reid_status(short=True)), inspect.evidence_image(studio.ctx, gen, i))

    t.gallery.select(on_select, [ctx.gen_state, t.level_sl, t.width_sl, t.zoom_sl],
                     [t.sel_idx, t.view_img, t.nn_gallery, t.nn_table, t.verdict_md, t.evidence_img])

    def on_window(gen, i, level, width, zoom):
        if gen is None or i is None or int(i) < 0:
            return gr.update()
        return window_level(gen.images[int(i)], level, width, zoom)

    for sl in (t.level_sl, t.width_sl, t.zoom_sl):
        sl.change(on_window, [ctx.gen_state, t.sel_idx, t.level_sl, t.width_sl, t.zoom_sl], t.view_img,
                  show_progress="hidden")


def _wire_search(ctx: AppContext, t: SimpleNamespace) -> None:
    """"Search from this image" on the selected generated image or on a selected neighbour (the trail then starts
    at the generated image, so Back returns to it)."""
    studio = ctx.studio

    def on_nn_pick(evt: gr.SelectData):
        return int(evt.index)

    def on_new_image():
        return -1  # another generated image selected: no neighbour chosen

    t.nn_gallery.select(on_nn_pick, None, t.nn_pick, show_progress="hidden")
    t.gallery.select(on_new_image, None, t.nn_pick, show_progress="hidden")

    @_user_errors
    def on_search_selected(gen, i):
        if gen is None or i is None or int(i) < 0:
            raise InputError("Generate images and select one first.")
        return search_panel.show(studio, gen, [f"gen:{int(i)}"])

    @_user_errors
    def on_search_neighbour(gen, i, j):
        if gen is None or i is None or int(i) < 0:
            raise InputError("Generate images and select one first.")
        nbs = gen.neighbours[int(i)] if gen.neighbours else []
        if j is None or not 0 <= int(j) < len(nbs):
            raise InputError("Select one of the nearest training images first.")
        first = (f"gen:{int(i)}", f"generated #{int(i)} (seed {gen.seeds[int(i)]})")
        return search_panel.show(studio, gen, [first, f"ref:{nbs[int(j)].row}"])

    out = search_panel.outputs(t.search)
    t.search_sel_btn.click(on_search_selected, [ctx.gen_state, t.sel_idx], out)
    t.search_nb_btn.click(on_search_neighbour, [ctx.gen_state, t.sel_idx, t.nn_pick], out)
    search_panel.wire(studio, t.search, ctx.gen_state)
