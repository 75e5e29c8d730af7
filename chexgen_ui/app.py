"""The Gradio app: seven tabs over :class:`chexgen_ui.services.Studio`, one module each in :mod:`chexgen_ui.tabs`.

Callbacks only convert widget values, call a service, and convert results to components; every
computation lives in the engine (``evaluators``) or in :mod:`chexgen_ui.services`. What the tabs share
(error and progress adapters, the set chooser, job control) is in :mod:`chexgen_ui.widgets`.
"""

from __future__ import annotations

import gradio as gr

from . import public_paths
from .services import Studio
from .tabs import batch, embedding_map, fidelity, generate, leaderboard, reader_study, setup
from .widgets import AppContext


def _header(studio: Studio, public: bool) -> str:
    return (
        "# CheXGen Studio\nSynthetic chest X-rays: generate and inspect, check memorisation, and measure "
        f"fidelity per pathology against the reference set `{public_paths.scrub(studio.reference) if public else studio.reference}`."
        + (" **Public mode**: uploads only (size limits apply); your uploads and runs are seen only by "
           "this browser session, next to the shared runs." if public else "")
    )


def build_app(reference: str = "demo@train", public: bool = False, studio: Studio | None = None) -> gr.Blocks:
    """The whole app. ``studio`` may be given (tests); otherwise one is made for ``reference``.

    Every tab's widgets are laid out first, then every tab's callbacks are wired, in the tabs' order: a callback
    may update another tab (Generate redraws the Embedding map), and the events keep their order and API names.
    """
    studio = studio or Studio(reference, public=public)
    public = public or studio.public
    ctx = AppContext.create(studio, public)

    # public mode: Gradio's own upload cache is emptied of files older than the retention time, hourly
    cache = (3600, int(studio.quota.retention_s)) if public else None
    with gr.Blocks(title="CheXGen Studio", delete_cache=cache) as demo:
        ctx.gen_state = gr.State(None)
        gr.Markdown(_header(studio, public))
        with gr.Tabs():
            gen_tab = generate.layout(ctx)
            map_tab = embedding_map.layout(ctx)
            pp_tab = fidelity.layout(ctx)
            batch_tab = batch.layout(ctx)
            lb_tab = leaderboard.layout(ctx)
            reader_study.build(studio, public, ctx.source_choices)  # lays out and wires itself
            setup_tab = setup.layout(ctx)

        generate.wire(ctx, gen_tab, map_tab)
        embedding_map.wire(ctx, map_tab)
        fidelity.wire(ctx, pp_tab)
        batch.wire(ctx, batch_tab)
        leaderboard.wire(ctx, lb_tab)
        setup.wire(ctx, setup_tab)
        embedding_map.wire_first_load(ctx, demo, map_tab)
    if public:
        public_paths.scrub_app(demo)  # no server path in any output or error
    demo.studio = studio  # for tests and scripts
    return demo
