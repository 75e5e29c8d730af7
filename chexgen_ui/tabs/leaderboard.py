"""The "Leaderboard" tab: every saved run of the results store (this session's and the shared ones), a chart across
runs and two runs side by side."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from evaluators.errors import InputError
from evaluators.leaderboard import run_choices

from .. import figures
from ..tables import rounded
from ..widgets import AppContext, _session, _user_errors


def layout(ctx: AppContext) -> SimpleNamespace:
    """The tab's widgets (call inside the app's ``gr.Tabs``)."""
    t = SimpleNamespace()
    with gr.Tab("Leaderboard", id="leaderboard") as t.tab:
        with gr.Row():
            t.kind = gr.Dropdown(["", "fidelity", "privacy", "utility", "report-utility", "reader-study", "full"], value="",
                                 label="Kind")
            t.btn = gr.Button("Refresh")
        # One line per run, scrolled sideways past the metric columns with id and date pinned; long
        # settings are cut in the cell (the side-by-side view below shows them in full).
        t.table = gr.Dataframe(label="Runs (click a header to sort)", elem_id="leaderboard",
                               interactive=False, wrap=False, max_chars=48, pinned_columns=2)
        t.plot = gr.Plot(label="Across runs")
        with gr.Row():
            t.a = gr.Dropdown([], value=None, label="Run A", elem_id="lb-a")
            t.b = gr.Dropdown([], value=None, label="Run B", elem_id="lb-b")
            t.cmp = gr.Button("Compare side by side")
        t.side = gr.Dataframe(label="Side by side", interactive=False, wrap=True, elem_id="lb-side",
                              headers=["field", "run A", "run B"])
    return t


def wire(ctx: AppContext, t: SimpleNamespace) -> None:
    """Refresh (button, opening the tab, changing the kind) and Compare."""
    studio = ctx.studio

    @_user_errors
    def on_board(kind, request: gr.Request = None):
        board = studio.leaderboard(kind or None, session=_session(request))
        choices, a, b = run_choices(board)
        return (rounded(board), figures.leaderboard_figure(board), gr.update(choices=choices, value=a),
                gr.update(choices=choices, value=b))

    t.btn.click(on_board, t.kind, [t.table, t.plot, t.a, t.b])
    t.tab.select(on_board, t.kind, [t.table, t.plot, t.a, t.b])
    t.kind.change(on_board, t.kind, [t.table, t.plot, t.a, t.b])

    @_user_errors
    def on_compare(a, b, request: gr.Request = None):
        if a is None or b is None:
            raise InputError("Pick two runs (Run A and Run B) from the lists; Refresh lists new runs.")
        return studio.compare_runs(int(a), int(b), session=_session(request))

    t.cmp.click(on_compare, [t.a, t.b], t.side)
