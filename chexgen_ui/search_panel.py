""""Search from this image": a panel that shows an image's nearest training images (evaluators.runs.neighbours)
and lets the clinician follow a suspected copy from result to result, with a trail of the images followed and a
Back button. The Generate tab and the Embedding map each hold one (``prefix`` keeps their element ids apart).

Images are named by keys: ``gen:I`` (generated image I of the app's current images), ``ref:ROW`` (a training
image of the reference index) and, on the Embedding map, ``set:I`` (a star of the C_T run's synthetic set, whose
files the map tab keeps in its session state: :class:`evaluators.runs.ct_map.SetImages`)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from evaluators import limits
from evaluators.errors import InputError

from .display import to_uint8, window_level
from .services import Generated, Studio
from .widgets import _user_errors

MAX_TRAIL = 20  # images kept in the trail (the oldest fall off)
K = 5  # nearest training images listed per query (within the public k limit)


def layout(prefix: str) -> SimpleNamespace:
    """The panel's widgets; element ids ``{prefix}-trail``, ``-query``, ``-results``, ``-summary``, ``-table``,
    ``-follow``, ``-back``."""
    p = SimpleNamespace()
    p.trail = gr.State([])  # [(key, label)] of the images searched from, oldest first
    p.rows = gr.State([])  # training rows of the results shown
    p.picked = gr.State(-1)  # the result selected in the results gallery
    with gr.Accordion("Search from this image: its nearest training images", open=True, elem_id=f"{prefix}-panel"):
        p.trail_md = gr.Markdown("Choose an image and press *Search from this image*.", elem_id=f"{prefix}-trail")
        with gr.Row():
            p.query_img = gr.Image(label="Query image", type="numpy", interactive=False, height=260,
                                   elem_id=f"{prefix}-query")
            p.gallery = gr.Gallery(label="Its nearest training images (select one, then follow it)", columns=3,
                                   height=260, allow_preview=False, elem_id=f"{prefix}-results")
        p.summary_md = gr.Markdown(elem_id=f"{prefix}-summary")
        p.table = gr.Dataframe(label="Nearest training images of the query", wrap=True, interactive=False,
                               elem_id=f"{prefix}-table")
        with gr.Row():
            p.follow_btn = gr.Button("Search from the selected result", elem_id=f"{prefix}-follow")
            p.back_btn = gr.Button("Back", elem_id=f"{prefix}-back")
    return p


def outputs(p: SimpleNamespace) -> list:
    """What :func:`show` returns, in order."""
    return [p.trail, p.rows, p.picked, p.trail_md, p.query_img, p.gallery, p.summary_md, p.table]


def trail_text(trail: list) -> str:
    steps = " → ".join(f"**{label}**" if j == len(trail) - 1 else label for j, (_, label) in enumerate(trail))
    return f"Trail ({len(trail)}): {steps}"


def show(studio: Studio, gen: Generated | None, trail: list, synthetic=None) -> tuple:
    """Search from the last image of ``trail`` (a list of keys, or of (key, label) pairs); the panel's outputs.
    ``synthetic``: the map's C_T synthetic set, for ``set:`` keys."""
    from evaluators.runs.neighbours import neighbour_images, search_key

    if not trail:
        raise InputError("Nothing to search from: choose an image first.")
    trail = [t if isinstance(t, (list, tuple)) else (t, t) for t in trail][-MAX_TRAIL:]
    s = search_key(studio.ctx, trail[-1][0], gen, k=limits.check("k", K, studio.public), synthetic=synthetic)
    trail[-1] = (s.key or trail[-1][0], s.query)
    gallery = [(to_uint8(img), caption) for img, caption in neighbour_images(s)]
    query = window_level(s.image, min_size=256)  # the full grey range, a small image enlarged for display
    return (trail, [nb.row for nb in s.neighbours], -1, trail_text(trail), query, gallery, s.summary,
            s.table())


def wire(studio: Studio, p: SimpleNamespace, gen_state, set_state=None) -> None:
    """Follow the selected result, go back one step. ``set_state``: the map's C_T synthetic set (``set:`` keys)."""
    sets = [set_state] if set_state is not None else []

    def on_pick(evt: gr.SelectData):
        return int(evt.index)

    p.gallery.select(on_pick, None, p.picked, show_progress="hidden")

    @_user_errors
    def on_follow(gen, trail, rows, picked, synthetic=None):
        if picked is None or int(picked) < 0 or int(picked) >= len(rows or []):
            raise InputError("Select one of the nearest training images first, then follow it.")
        return show(studio, gen, [*(trail or []), f"ref:{rows[int(picked)]}"], synthetic)

    p.follow_btn.click(on_follow, [gen_state, p.trail, p.rows, p.picked, *sets], outputs(p))

    @_user_errors
    def on_back(gen, trail, synthetic=None):
        if not trail or len(trail) < 2:
            raise InputError("This is the first image of the trail.")
        return show(studio, gen, trail[:-1], synthetic)

    p.back_btn.click(on_back, [gen_state, p.trail, *sets], outputs(p))
