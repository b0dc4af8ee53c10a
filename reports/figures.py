"""Plotly figures of a study's report data: frames in, figures out.

Plotly reads a subset of HTML in its labels (``<b>``, ``<br>``, entities), so each user-given string that
reaches a figure (parameter, study and curve names, categorical values) goes through ``plotly_text``, and
no user string is ever put in a hover template. The one exception is parcoords tick text, which plotly
draws as plain text (entities would show as typed); the browser test checks both kinds.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .analysis import CurveSelection, Importances, StudyData

__all__ = [
    "best_curves_figure",
    "compare_figure",
    "curves_figure",
    "history_figure",
    "importance_figure",
    "parallel_figure",
    "plotly_text",
    "slices_figure",
]

_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "height": 420,
    "margin": {"l": 70, "r": 30, "t": 30, "b": 60},
    "legend": {"orientation": "h", "y": -0.18},
}
_BLUE, _RED, _GREY, _ORANGE = "#1f77b4", "#d62728", "#9e9e9e", "#ff7f0e"


def plotly_text(value: Any) -> str:
    """``value`` as text that plotly shows literally (``<``, ``>`` and ``&`` become entities)."""
    return html.escape(str(value), quote=False)


def history_figure(data: StudyData) -> go.Figure:
    """Each completed trial's value by trial number, the best value so far, and (hidden until clicked in the
    legend) the value pruned trials last reported."""
    complete = data.complete().sort_values("number")
    pruned = data.trials[(data.trials["state"] == "PRUNED") & np.isfinite(data.trials["value"])]
    best = complete["value"].cummin() if data.direction == "minimize" else complete["value"].cummax()
    hover = "trial %{x}<br>%{y:.4g}<extra></extra>"
    fig = go.Figure(layout=_LAYOUT)
    fig.add_scatter(
        x=pruned["number"], y=pruned["value"], mode="markers", name="pruned (last reported)",
        marker={"color": _GREY, "size": 5, "symbol": "x"}, visible="legendonly", hovertemplate=hover,
    )  # fmt: skip
    fig.add_scatter(
        x=complete["number"], y=complete["value"], mode="markers", name="complete",
        marker={"color": _BLUE, "size": 6}, hovertemplate=hover,
    )  # fmt: skip
    fig.add_scatter(
        x=complete["number"], y=best, mode="lines", line={"color": _RED, "shape": "hv"},
        name="best so far", hovertemplate=hover,
    )  # fmt: skip
    fig.update_layout(xaxis_title="trial", yaxis_title=plotly_text(data.metric))
    return fig


def curves_figure(data: StudyData, selection: CurveSelection, curve: str) -> go.Figure:
    """Curve ``curve`` per epoch: the best trials one trace each, sampled other completed trials in grey,
    sampled pruned trials in red ending in a cross where the pruner stopped them."""
    points = _curve_points(data.curves, curve)
    fig = go.Figure(layout=_LAYOUT)
    fig.add_trace(_grouped(points, selection.other_complete, "other complete trials", _GREY, 0.5))
    fig.add_trace(_grouped(points, selection.pruned, "pruned trials", _RED, 0.35))
    ends = [(n, *points[n]) for n in selection.pruned if n in points and len(points[n][0])]
    fig.add_scatter(
        x=[e[-1] for _, e, _ in ends], y=[v[-1] for _, _, v in ends], text=[f"trial {n}" for n, _, _ in ends],
        mode="markers", marker={"symbol": "x", "color": _RED, "size": 7}, name="pruned here",
        hovertemplate="%{text} pruned after epoch %{x}<br>%{y:.4g}<extra></extra>",
    )  # fmt: skip
    values = data.trials.set_index("number")["value"]
    for rank, number in enumerate(selection.top):
        if number not in points:
            continue
        epochs, ys = points[number]
        fig.add_scatter(
            x=epochs, y=ys, mode="lines+markers", name=f"#{number} ({values[number]:.4g})",
            marker={"size": 4}, line={"width": 2.5 if rank == 0 else 1.5},
            hovertemplate=f"trial {number}<br>epoch %{{x}}<br>%{{y:.4g}}<extra></extra>",
        )  # fmt: skip
    fig.update_layout(xaxis_title="epoch", yaxis_title=plotly_text(curve), height=480)
    return fig


def best_curves_figure(data: StudyData, number: int) -> go.Figure:
    """All curves of trial ``number``: losses on the left axis, other curves (errors) on the right, and a
    dashed line at its best epoch."""
    fig = go.Figure(layout=_LAYOUT)
    trial = data.curves[data.curves["trial"] == number]
    for curve, rows in trial.groupby("curve", sort=False):
        loss = "loss" in str(curve)
        fig.add_scatter(
            x=rows["epoch"], y=rows["value"], mode="lines+markers", name=plotly_text(curve),
            yaxis="y" if loss else "y2", line={"dash": "solid" if loss else "dot"},
        )  # fmt: skip
    fig.update_layout(
        xaxis_title="epoch",
        yaxis={"title": "loss"},
        # tickmode auto: plotly.js would otherwise sync an overlaying axis's ticks to the left axis's grid,
        # putting them at odd values (0.4212, 0.4716).
        yaxis2={
            "title": plotly_text(data.metric),
            "overlaying": "y",
            "side": "right",
            "showgrid": False,
            "tickmode": "auto",
        },
    )
    row = data.trials.loc[data.trials["number"] == number].iloc[0]
    if not pd.isna(row["best_epoch"]):
        fig.add_vline(x=int(row["best_epoch"]), line_dash="dash", line_color=_GREY)
    return fig


def importance_figure(importances: Importances) -> go.Figure:
    """Horizontal bars of the parameter importances, largest on top."""
    names = list(importances.values)[::-1]
    fig = go.Figure(layout={**_LAYOUT, "height": max(240, 60 + 28 * len(names))})
    fig.add_bar(
        x=[importances.values[n] for n in names], y=[plotly_text(n) for n in names], orientation="h",
        marker_color=_BLUE, hovertemplate="%{x:.3f}<extra></extra>",
    )  # fmt: skip
    fig.update_layout(xaxis_title="importance (fANOVA, sums to 1)", showlegend=False)
    return fig


def parallel_figure(data: StudyData, params: Sequence[str]) -> go.Figure:
    """Parallel coordinates of the completed trials over ``params`` and the value (colour: the value)."""
    complete = data.complete()
    dimensions = [_dimension(complete[f"params_{p}"], p, data.scales.get(p, "linear")) for p in params]
    dimensions.append({"label": plotly_text(data.metric), "values": complete["value"].to_numpy()})
    fig = go.Figure(layout={**_LAYOUT, "margin": {"l": 80, "r": 80, "t": 60, "b": 30}})
    fig.add_trace(
        go.Parcoords(
            dimensions=dimensions,
            line={
                "color": complete["value"].to_numpy(),
                "colorscale": "Viridis",
                "reversescale": data.direction == "minimize",
                "showscale": True,
                "colorbar": {"title": {"text": plotly_text(data.metric)}},
            },
        )
    )
    return fig


def slices_figure(data: StudyData, params: Sequence[str]) -> go.Figure:
    """The value of each completed trial against each of ``params`` (colour: trial number)."""
    complete = data.complete()
    fig = make_subplots(rows=1, cols=len(params), shared_yaxes=True, horizontal_spacing=0.04)
    for col, param in enumerate(params, start=1):
        values = complete[f"params_{param}"]
        keep = values.notna()
        scale = data.scales.get(param, "linear")
        x = values[keep].map(plotly_text) if scale == "categorical" else values[keep]
        fig.add_scatter(
            x=x, y=complete.loc[keep, "value"], mode="markers", row=1, col=col, showlegend=False,
            text=[f"trial {n}" for n in complete.loc[keep, "number"]],
            marker={"color": complete.loc[keep, "number"], "colorscale": "Blues", "size": 6,
                    "line": {"width": 0.5, "color": "#555"}},
            hovertemplate="%{text}<br>%{x}<br>%{y:.4g}<extra></extra>",
        )  # fmt: skip
        axis: dict[str, Any] = {"type": {"log": "log", "categorical": "category"}.get(scale, "linear")}
        if scale == "categorical":
            axis.update(categoryorder="array", categoryarray=sorted(set(x), key=_natural))
        fig.update_xaxes(title_text=plotly_text(param), row=1, col=col, **axis)
    fig.update_yaxes(title_text=plotly_text(data.metric), row=1, col=1)
    fig.update_layout(**{**_LAYOUT, "height": 380})
    return fig


def compare_figure(studies: Sequence[StudyData]) -> go.Figure:
    """The best value so far by trial number, one line per study (studies of one metric and direction)."""
    fig = go.Figure(layout=_LAYOUT)
    for data in studies:
        complete = data.complete().sort_values("number")
        best = complete["value"].cummin() if data.direction == "minimize" else complete["value"].cummax()
        fig.add_scatter(
            x=complete["number"], y=best, mode="lines", line={"shape": "hv"}, name=plotly_text(data.name),
            hovertemplate="trial %{x}<br>%{y:.4g}",
        )  # fmt: skip
    first = studies[0] if studies else None
    title = "" if first is None else f"best {plotly_text(first.metric)} so far ({first.direction})"
    fig.update_layout(xaxis_title="trial", yaxis_title=title)
    return fig


def _curve_points(curves: pd.DataFrame, curve: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    rows = curves[curves["curve"] == curve]
    return {
        int(n): (group["epoch"].to_numpy(), group["value"].to_numpy())
        for n, group in rows.groupby("trial", sort=False)
    }


def _grouped(
    points: dict[int, tuple[np.ndarray, np.ndarray]],
    numbers: Sequence[int],
    name: str,
    color: str,
    alpha: float,
) -> go.Scatter:
    # One trace for many trials (None between them): far lighter than a trace per trial.
    xs: list[Any] = []
    ys: list[Any] = []
    text: list[str] = []
    for number in numbers:
        if number not in points:
            continue
        epochs, values = points[number]
        xs.extend([*epochs.tolist(), None])
        ys.extend([*(None if not math.isfinite(v) else v for v in values.tolist()), None])
        text.extend([f"trial {number}"] * (len(epochs) + 1))
    return go.Scatter(
        x=xs, y=ys, text=text, mode="lines", name=name, opacity=alpha, line={"color": color, "width": 1},
        hovertemplate="%{text}<br>epoch %{x}<br>%{y:.4g}<extra></extra>", connectgaps=False,
    )  # fmt: skip


def _dimension(values: pd.Series, name: str, scale: str) -> dict[str, Any]:
    label = plotly_text(name)
    if scale == "categorical":
        labels = sorted({str(v) for v in values}, key=_natural)
        codes = {text: i for i, text in enumerate(labels)}
        return {
            "label": label,
            "values": [codes[str(v)] for v in values],
            "tickvals": list(range(len(labels))),
            "ticktext": labels,  # parcoords draws tick text as plain text (no entities): raw is right
        }
    numbers = values.astype("float64").to_numpy()
    if scale == "log" and (numbers > 0).all():
        return {"label": f"{label} (log10)", "values": np.log10(numbers)}
    return {"label": label, "values": numbers}


def _natural(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)
