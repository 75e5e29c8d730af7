"""The "Embedding map" tab: UMAP of the reference set's encoder features with the generated images on it; a
click on a point shows that image. Also the app's first load (build/load the index, calibrate, draw the map)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from evaluators.errors import InputError
from evaluators.runs import ct_map, embedding_map, inspect
from evaluators.runs.generate import Generated
from evaluators.space import gpu

from .. import figures, search_panel
from ..display import window_level
from ..services import Studio
from ..widgets import GPU_DURATION, GPU_QUEUE, AppContext, _progress, _session, _user_errors, log, plotly_html


def map_json(studio: Studio, gen: Generated | None) -> str:
    """The map figure (reference points, plus ``gen``'s images as stars) as plotly JSON."""
    points = embedding_map.map_points(studio.ctx)
    xy = gen.umap if gen is not None else None
    text = [f"#{i} seed {s}: {p}" for i, (s, p) in enumerate(zip(gen.seeds, gen.prompts))] if gen else None
    return figures.umap_figure(points, xy, text).to_json()


def _reference_image(studio: Studio, row: int):
    img, caption = embedding_map.reference_image(studio.ctx, row)
    return _shown(img), caption


def _shown(img):
    """uint8 for the "Chosen point" box, a small image enlarged to 300 px (not a 64 px thumbnail)."""
    return window_level(img, min_size=300)


CT_CHOICE = "C_T cell (data copying)"
COLOUR_CHOICES = ("pathology", CT_CHOICE)


def map_outputs(studio: Studio, gen: Generated | None, colour: str = "pathology", run_id=None,
                session: str | None = None) -> tuple[str, str]:
    """(map JSON, the status line under it: size, encoder and folder of the reference index). ``colour`` CT_CHOICE:
    coloured by the C_T cells of privacy run ``run_id`` (blank: the newest), or, without one, the pathology map and
    what to run."""
    return map_view(studio, gen, colour, run_id, session)[:2]


def privacy_run_id(value) -> int | None:
    """The privacy run the map is coloured by: None (the newest) for a blank box, which Gradio shows and sends as 0
    (with ``minimum=1`` the empty box was drawn as an invalid 0 in red)."""
    return None if value in (None, "") or int(value) == 0 else int(value)


def map_view(studio: Studio, gen: Generated | None, colour: str = "pathology", run_id=None,
             session: str | None = None) -> tuple[str, str, ct_map.SetImages | None]:
    """:func:`map_outputs` and, coloured by C_T cell, the run's synthetic set behind the stars ``set:I`` (for the
    tab's session state: the files stay on the server); None otherwise."""
    idx = studio.index()
    line = f"{len(idx)} reference images · encoder {idx.encoder} · index `{idx.dir.name}`"
    if colour != CT_CHOICE:
        return map_json(studio, gen), line, None
    try:
        cells = studio.ct_cells(run_id=privacy_run_id(run_id), session=session)
    except InputError as exc:
        return map_json(studio, gen), f"{line}\n\n**C_T cell colouring not available**: {exc}", None
    return ct_map_json(studio, gen, cells), f"{line}\n\n{ct_map.summary_line(cells)}", ct_map.set_images(cells)


def ct_map_json(studio: Studio, gen: Generated | None, cells) -> str:
    """The map coloured by ``cells`` (:class:`evaluators.runs.ct_map.CtCells`), with ``gen``'s images as stars."""
    ref, syn = ct_map.points(studio.ctx, cells)
    xy = gen.umap if gen is not None else None
    text = [f"#{i} seed {s}: {p}" for i, (s, p) in enumerate(zip(gen.seeds, gen.prompts))] if gen else None
    title = f"C_T cells of {cells.source} ({cells.synthetic_name})"
    return figures.ct_cell_figure(ref, syn, title, xy, text).to_json()


def layout(ctx: AppContext) -> SimpleNamespace:
    """The tab's widgets (call inside the app's ``gr.Tabs``)."""
    t = SimpleNamespace()
    with gr.Tab("Embedding map", id="map"):
        gr.Markdown("UMAP of the reference set's encoder features, coloured by pathology (click legend "
                    "entries to toggle). Generated images appear as orange stars. Click a point to see it; *Search from this "
                    "point* lists its nearest training images (follow them to trace a suspected copy).")
        with gr.Row():
            with gr.Column(scale=3):
                t.map_html = plotly_html("umap", ctx.static_dir)
                t.map_status = gr.Markdown()
                with gr.Row():
                    t.colour = gr.Radio(list(COLOUR_CHOICES), value="pathology", label="Colour points by",
                                        info="C_T cell: each point takes the Z of its k-means cell in the data-copying "
                                             "test of a privacy run on this reference (Batch suite tab, Privacy); "
                                             "< 0 (red): synthetic images closer to training than held-out real ones",
                                        elem_id="map-colour")
                    t.ct_run = gr.Number(None, precision=0, label="privacy run # (blank or 0: the newest)")
            with gr.Column(scale=1, min_width=280):
                t.map_img = gr.Image(label="Chosen point", type="numpy", interactive=False, height=300,
                                     elem_id="map-image")
                t.map_caption = gr.Markdown(elem_id="map-caption")
                with gr.Row():
                    t.row_nb = gr.Number(0, precision=0, label="or reference row")
                    t.row_btn = gr.Button("Show")
                t.map_search_btn = gr.Button("Search from this point", elem_id="map-search")
                t.map_btn = gr.Button("Redraw map")
        t.map_key = gr.State("")  # the chosen point: gen:I, ref:ROW or set:I@RUN
        t.map_set = gr.State(None)  # coloured by C_T cell: the run's synthetic set (ct_map.SetImages; server side)
        t.search = search_panel.layout("map-search")
    return t


def wire(ctx: AppContext, t: SimpleNamespace) -> None:
    """Redraw, click a point, show a reference row."""
    studio = ctx.studio

    @_user_errors
    @gpu(GPU_DURATION)
    @ctx.job
    def on_map(gen, colour="pathology", run_id=None, progress=gr.Progress(),  # noqa: B008 - Gradio's idiom
               request: gr.Request = None):
        studio.index(_progress(progress))
        return map_view(studio, gen, colour, run_id, _session(request))

    for event in (t.map_btn.click, t.colour.change):
        event(on_map, [ctx.gen_state, t.colour, t.ct_run], [t.map_html, t.map_status, t.map_set],
              concurrency_id=GPU_QUEUE)

    @_user_errors
    def on_point(gen, synthetic, evt: gr.EventData):
        key = _point_key(evt)
        kind, _, num = key.partition(":")
        if kind == "gen" and gen is not None:
            i = int(num)
            return _shown(gen.images[i]), f"generated #{i} (seed {gen.seeds[i]})\n\n{gen.prompts[i]}\n\n" \
                + inspect.verdict_text(studio.ctx, gen, i, studio.reid_status(short=True))
        if kind == "ref":
            return _reference_image(studio, int(num))
        if kind == "set":
            img, caption = ct_map.set_image(synthetic, key)
            return _shown(img), caption
        raise InputError(f"Unrecognised point {key!r}.")

    t.map_html.click(on_point, [ctx.gen_state, t.map_set], [t.map_img, t.map_caption])

    @_user_errors
    def on_row(row):
        return _reference_image(studio, int(row or 0))

    t.row_btn.click(on_row, t.row_nb, [t.map_img, t.map_caption])
    _wire_search(ctx, t)


def _point_key(evt: gr.EventData) -> str:
    """The clicked point's key (``gen:I``, ``ref:ROW`` or ``set:I``, the figure's customdata)."""
    return str(getattr(evt, "key", None) or (evt._data or {}).get("key", ""))


def _wire_search(ctx: AppContext, t: SimpleNamespace) -> None:
    """Remember the chosen point (a click, or a reference row shown); "Search from this point" searches from it."""
    studio = ctx.studio

    def on_key(synthetic, evt: gr.EventData):
        key = _point_key(evt)  # a set star is remembered with its run, so a redraw in between cannot swap images
        return synthetic.named(key) if synthetic is not None else key

    def on_row_key(row):
        return f"ref:{int(row or 0)}"

    t.map_html.click(on_key, t.map_set, t.map_key, show_progress="hidden")
    t.row_btn.click(on_row_key, t.row_nb, t.map_key, show_progress="hidden")

    @_user_errors
    def on_search(gen, key, synthetic=None):
        if not key:
            raise InputError("Click a point on the map (or show a reference row) first.")
        return search_panel.show(studio, gen, [key], synthetic)

    t.map_search_btn.click(on_search, [ctx.gen_state, t.map_key, t.map_set], search_panel.outputs(t.search))
    search_panel.wire(studio, t.search, ctx.gen_state, t.map_set)


def wire_first_load(ctx: AppContext, demo: gr.Blocks, t: SimpleNamespace) -> None:
    """First load of the page: build/load the index (first start shows progress), calibrate, draw the map."""
    studio = ctx.studio

    @_user_errors
    @gpu(GPU_DURATION)
    @ctx.job
    def on_load(progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        report = _progress(progress)
        studio.index(report)
        try:  # calibrate the memorisation threshold now (once; cached), not on the first Generate click
            report(0, 1, "calibrating the memorisation threshold on held-out patients")
            inspect.calibration(studio.ctx)
            report(0, 1, "calibrating the re-ID verdict threshold on held-out patients")
            inspect.reid_calibration(studio.ctx)
        except InputError as exc:
            log.warning("memorisation threshold not calibrated: %s", exc)
        return map_outputs(studio, None)

    demo.load(on_load, None, [t.map_html, t.map_status], concurrency_id=GPU_QUEUE)
