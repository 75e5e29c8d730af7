"""Plotly figures for the app (built from plain tables; no engine calls here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

# Colour-blind-safe-ish qualitative palette (Plotly's "Safe" + "Dark24" tail), stable per group name.
PALETTE = (
    "#88CCEE", "#CC6677", "#DDCC77", "#117733", "#332288", "#AA4499", "#44AA99", "#999933", "#882255",
    "#661100", "#6699CC", "#888888", "#1F77B4", "#E377C2", "#8C564B", "#17BECF", "#BCBD22",
)
GENERATED_COLOUR = "#FF6600"
SVG_MAX_POINTS = 5_000


def umap_figure(points: pd.DataFrame, generated: np.ndarray | None = None,
                generated_text: list[str] | None = None, height: int = 560) -> go.Figure:
    """Reference images on the UMAP map, one trace per pathology group (legend toggles), plus the images
    just generated as large outlined stars. ``customdata`` holds ``ref:<row>`` / ``gen:<i>`` for clicks."""
    fig = go.Figure()
    # SVG markers (clickable, testable) for small maps; WebGL beyond a few thousand points
    scatter = go.Scatter if len(points) <= SVG_MAX_POINTS else go.Scattergl
    groups = sorted(points["group"].unique(), key=lambda g: (g in ("Other / unlabelled", "Multiple findings"), g))
    for gi, g in enumerate(groups):
        sub = points[points["group"] == g]
        text = [f"<b>{lab}</b><br>patient {pat}<br>{_wrap(rep)}" for lab, pat, rep in
                zip(sub["labels"], sub["patient"], sub["report"])]
        fig.add_trace(scatter(
            x=sub["x"], y=sub["y"], mode="markers", name=f"{g} ({len(sub)})",
            marker={"size": 7, "color": PALETTE[gi % len(PALETTE)], "opacity": 0.8, "line": {"width": 0}},
            text=text, hovertemplate="%{text}<extra></extra>",
            customdata=[f"ref:{i}" for i in sub.index],
        ))
    _add_generated(fig, generated, generated_text)
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10}, template="plotly_white",
        legend={"title": {"text": "pathology (click to toggle)"}, "itemsizing": "constant"},
        xaxis={"title": "UMAP 1", "showticklabels": False}, yaxis={"title": "UMAP 2", "showticklabels": False},
        title={"text": "Reference images (UMAP of encoder features)", "font": {"size": 14}},
        hovermode="closest", clickmode="event",
    )
    return fig


CT_COLOURSCALE = "RdBu"  # red: Z < 0 (copying), blue: Z > 0; the midpoint 0 is white
UNSCORED_COLOUR = "#BBBBBB"


def _cell_colour(df: pd.DataFrame, scored: bool) -> dict:
    """Marker colour of C_T-cell points: their cell's Z on the shared diverging scale, or grey when not scored."""
    return {"color": df["Z_U"].astype(float).tolist(), "coloraxis": "coloraxis"} if scored else {"color": UNSCORED_COLOUR}


def ct_cell_figure(points: pd.DataFrame, synthetic: pd.DataFrame, title: str, generated: np.ndarray | None = None,
                   generated_text: list[str] | None = None, height: int = 560) -> go.Figure:
    """The map coloured by C_T cell: reference images (circles) and the C_T run's synthetic images (stars) take
    their cell's Z on one diverging scale centred on 0 (red: copying); points of cells C_T did not score are grey
    and their hover says why. ``points``/``synthetic`` are :func:`evaluators.runs.ct_map.points`'s tables."""
    fig = go.Figure()
    syn = synthetic.dropna(subset=["x", "y"])
    zs = pd.to_numeric(pd.concat([points.loc[points["scored"], "Z_U"], syn.loc[syn["scored"], "Z_U"]]))
    zmax = max(2.0, float(np.nanmax(np.abs(zs))) if len(zs) else 2.0)

    def hover(df: pd.DataFrame) -> list[str]:
        return [f"cell {c} · " + (f"Z {z:.2f}" if s else f"{st}" + (f" (Z {z:.2f} not counted)" if pd.notna(z) else ""))
                for c, z, s, st in zip(df["cell"], df["Z_U"], df["scored"], df["cell_status"])]

    scatter = go.Scatter if len(points) + len(syn) <= SVG_MAX_POINTS else go.Scattergl
    for scored in (True, False):
        sub = points[points["scored"] == scored]
        if len(sub):
            marker = _cell_colour(sub, scored)
            fig.add_trace(scatter(
                x=sub["x"], y=sub["y"], mode="markers", customdata=[f"ref:{i}" for i in sub.index],
                name=f"reference, cell {'scored' if scored else 'not scored'} ({len(sub)})",
                marker={"size": 7, "opacity": 0.85, "line": {"width": 0}, **marker},
                text=[f"{h}<br><b>{lab}</b> · patient {pat}" for h, lab, pat in
                      zip(hover(sub), sub["labels"], sub["patient"])],
                hovertemplate="%{text}<extra>reference</extra>"))
        ssub = syn[syn["scored"] == scored]
        if len(ssub):
            marker = _cell_colour(ssub, scored)
            fig.add_trace(scatter(
                x=ssub["x"], y=ssub["y"], mode="markers", customdata=[f"set:{i}" for i in ssub.index],
                name=f"synthetic, cell {'scored' if scored else 'not scored'} ({len(ssub)})",
                marker={"size": 12, "symbol": "star", "line": {"width": 1, "color": "black"}, **marker},
                text=[f"{h}<br>{Path(p).name}" for h, p in zip(hover(ssub), ssub["path"])],
                hovertemplate="%{text}<extra>synthetic</extra>"))
    _add_generated(fig, generated, generated_text)
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10}, template="plotly_white",
        coloraxis={"colorscale": CT_COLOURSCALE, "cmid": 0.0, "cmin": -zmax, "cmax": zmax,
                   "colorbar": {"title": {"text": "cell Z<br>(< 0: copying)"}}},
        legend={"title": {"text": "C_T cells (grey: not scored)"}, "itemsizing": "constant", "x": 0, "y": -0.05,
                "orientation": "h", "yanchor": "top"},
        xaxis={"title": "UMAP 1", "showticklabels": False}, yaxis={"title": "UMAP 2", "showticklabels": False},
        title={"text": title, "font": {"size": 14}}, hovermode="closest", clickmode="event")
    return fig


def _add_generated(fig: go.Figure, generated: np.ndarray | None, generated_text: list[str] | None) -> None:
    """The Generate tab's images as large orange stars on top of a map (click key ``gen:I``)."""
    if generated is None or not len(generated):
        return
    generated = np.asarray(generated)
    text = generated_text or [f"generated #{i}" for i in range(len(generated))]
    fig.add_trace(go.Scatter(
        x=generated[:, 0], y=generated[:, 1], mode="markers", name=f"generated ({len(generated)})",
        marker={"size": 16, "symbol": "star", "color": GENERATED_COLOUR, "line": {"width": 1.5, "color": "black"}},
        text=[_wrap(t) for t in text], hovertemplate="<b>generated</b><br>%{text}<extra></extra>",
        customdata=[f"gen:{i}" for i in range(len(generated))]))


def _wrap(text: str, width: int = 70, max_lines: int = 6) -> str:
    words, lines, cur = str(text).split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], "…"]
    return "<br>".join(lines)


def fidelity_bars(per_pathology: pd.DataFrame, metrics=None, result: dict | None = None) -> go.Figure:
    """One small bar chart per metric (default: every shown fidelity metric of the registry), a bar per evaluated
    pathology with its 95% CI when bootstrapped; each title says which direction is better."""
    from plotly.subplots import make_subplots

    from evaluators.metrics.registry import outputs

    shown = {o.key: o for o in outputs("fidelity", shown_only=True)}
    metrics = list(metrics or [m for m in shown if m in per_pathology])  # those this run computed
    df = per_pathology[per_pathology["skipped"].fillna("") == ""] if "skipped" in per_pathology else per_pathology
    rows = max(1, -(-len(metrics) // 3))

    withheld = _withheld_counts(result)

    def title(m: str) -> str:
        o = shown.get(m)
        text = m if o is None or o.direction == "none" else f"{o.label} ({o.direction} is better)"
        if withheld.get(m):  # an empty panel says why: too few images for a valid number (see the notes column)
            text += f"<br><sup>withheld on {withheld[m]} row(s): too few images (see notes)</sup>"
        return text

    fig = make_subplots(rows=rows, cols=3, subplot_titles=[title(m) for m in metrics], vertical_spacing=0.44 / rows)
    ci = {}
    if result is not None:
        for r in result.get("per_pathology", []):
            if r.get("ci95"):
                ci[r["pathology"]] = r["ci95"]
    for k, m in enumerate(metrics):
        if df.empty or m not in df:
            continue
        vals = pd.to_numeric(df[m], errors="coerce")
        err_hi = [(ci.get(p, {}).get(m) or [None, None])[1] for p in df["pathology"]]
        err_lo = [(ci.get(p, {}).get(m) or [None, None])[0] for p in df["pathology"]]
        error = None
        if any(e is not None for e in err_hi):
            error = {"type": "data", "symmetric": False,
                     "array": [(h - v) if h is not None else 0 for h, v in zip(err_hi, vals)],
                     "arrayminus": [(v - lo) if lo is not None else 0 for lo, v in zip(err_lo, vals)]}
        fig.add_trace(go.Bar(
            x=df["pathology"], y=vals, name=m, marker_color=PALETTE[k % len(PALETTE)], error_y=error,
            customdata=np.stack([df["n_real"], df["n_synthetic"]], axis=1),
            hovertemplate="%{x}<br>" + m + " %{y:.4g}<br>n real %{customdata[0]}, n synthetic %{customdata[1]}<extra></extra>",
            showlegend=False,
        ), row=k // 3 + 1, col=k % 3 + 1)
    fig.update_layout(height=310 * rows, margin={"l": 10, "r": 10, "t": 50, "b": 10}, template="plotly_white")
    fig.update_xaxes(tickangle=-40, tickfont={"size": 10})
    if df.empty:
        fig.add_annotation(text="No pathology had enough images on both sides (see the skipped column).",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def _withheld_counts(result: dict | None) -> dict[str, int]:
    """Per metric, the evaluated per-pathology rows whose number the engine withheld (``<key>_note`` in the JSON)."""
    out: dict[str, int] = {}
    for r in (result or {}).get("per_pathology", []):
        for key in r:
            if key.endswith("_note") and r[key]:
                out[key[: -len("_note")]] = out.get(key[: -len("_note")], 0) + 1
    return out


def counts_figure(counts: pd.DataFrame) -> go.Figure:
    """Long-tail view: real vs synthetic positives per pathology (log scale)."""
    fig = go.Figure()
    fig.add_trace(go.Bar(x=counts["pathology"], y=counts["n_real"], name="real (reference)", marker_color="#332288"))
    fig.add_trace(go.Bar(x=counts["pathology"], y=counts["n_synthetic"], name="synthetic", marker_color=GENERATED_COLOUR))
    fig.update_layout(barmode="group", height=360, template="plotly_white", yaxis={"type": "log", "title": "images"},
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, title={"text": "Long tail: positives per pathology"})
    return fig


def _metric_columns(sub: pd.DataFrame, skip: set[str], limit: int) -> list[str]:
    """Numeric columns of the shown runs, taken in turn from each kind of run (fidelity, privacy, utility...), so
    that one kind with many columns does not crowd the others out of the first ``limit``."""
    import itertools

    def has_values(rows: pd.DataFrame, c: str) -> bool:
        return bool(pd.to_numeric(rows[c], errors="coerce").notna().any())

    per_kind = [[c for c in sub.columns if c not in skip and has_values(sub[sub["kind"] == kind], c)]
                for kind in dict.fromkeys(sub["kind"])]
    chosen = dict.fromkeys(c for group in itertools.zip_longest(*per_kind) for c in group if c is not None)
    return list(chosen)[:limit]


def leaderboard_figure(board: pd.DataFrame, max_runs: int = 12) -> go.Figure:
    """Normalised metrics across runs (fidelity, privacy, utility columns that exist), one group per run."""
    fig = go.Figure()
    if board.empty:
        fig.add_annotation(text="No runs yet: run a job in the Batch suite tab or with the CLI.", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
        fig.update_layout(height=360, template="plotly_white")
        return fig
    fixed = {"id", "date", "kind", "model", "synthetic", "status", "settings"}
    not_metrics = {"n", "n_flagged", "reid_available", "reid_threshold", "memorisation_threshold",
                   "expected_fraction_flagged"}  # counts and settings that the store lists beside the metrics
    sub = board.head(max_runs)
    runs = [f"#{i} {m}" for i, m in zip(sub["id"], sub["model"])]
    from evaluators.metrics.registry import direction_of

    better = {"lower": " (lower is better)", "higher": " (higher is better)"}
    for c in _metric_columns(sub, fixed | not_metrics, limit=16):
        raw = pd.to_numeric(sub[c], errors="coerce")
        scale = float(np.nanmax(np.abs(raw))) or 1.0  # each metric scaled to its largest value across runs
        fig.add_trace(go.Bar(x=runs, y=raw / scale, name=c, customdata=raw,
                             hovertemplate=c + " = %{customdata:.4g}" + better.get(direction_of(c) or "", "") + "<extra>%{x}</extra>"))
    fig.update_layout(barmode="group", height=420, template="plotly_white", margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title={"text": "Metrics across runs, each scaled to its largest value (hover for the raw value)"},
                      yaxis={"title": "value / max over runs"},
                      legend={"font": {"size": 10}})
    return fig


def reader_roc_figure(curves: dict[str, dict], height: int = 420) -> go.Figure:
    """Reader study: ROC of the confidence ratings (positive = synthetic), one line per curve. ``curves`` maps a
    name ("pooled", a reader) to the engine's accuracy dict (``roc`` points, ``auc``, ``n_roc``)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance (AUC 0.5)", hoverinfo="skip",
                             line={"color": "#888888", "dash": "dot", "width": 1}))
    for k, (name, a) in enumerate(curves.items()):
        pts = a.get("roc") or []
        if not pts:
            continue
        auc = a.get("auc")
        label = f"{name} (AUC {auc:.3f}, n={a.get('n_roc', a.get('n'))})" if auc is not None else name
        thr = ["start" if p["threshold"] is None else f"score >= {p['threshold']:g}" for p in pts]
        fig.add_trace(go.Scatter(
            x=[p["fpr"] for p in pts], y=[p["tpr"] for p in pts], mode="lines+markers", name=label, text=thr,
            line={"width": 3 if name == "pooled" else 1.5, "color": "black" if name == "pooled" else
                  PALETTE[k % len(PALETTE)]},
            hovertemplate="%{text}<br>real called synthetic %{x:.2f}<br>synthetic called synthetic %{y:.2f}"
                          "<extra>" + name + "</extra>"))
    fig.update_layout(
        height=height, template="plotly_white", margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title={"text": "ROC of the confidence ratings (score: real 5 = 1 ... synthetic 5 = 10)", "font": {"size": 14}},
        xaxis={"title": "false positive rate (real images called synthetic)", "range": [0, 1], "constrain": "domain"},
        yaxis={"title": "true positive rate (synthetic called synthetic)", "range": [0, 1], "scaleanchor": "x"},
        legend={"font": {"size": 11}})
    if len(fig.data) == 1:
        fig.add_annotation(text="No answer with a confidence yet.", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5)
    return fig
