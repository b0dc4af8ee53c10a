"""A study page's "Can you trust the winner?" section: how well the selection value predicts the test figure
(recorded per trial for information only), ties at the top, and the confirmed ranking with error bars."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from ._html import cell, figure, key_values, table
from .analysis import StudyData

__all__ = ["trust_section"]

_TEST_COLUMNS = ("test_error", "extra_test_accuracy", "test_accuracy")
_TOP = 10  # the top trials, where the choice is made


def trust_section(data: StudyData) -> str:
    """The section's HTML (empty for a study without completed trials)."""
    done = data.trials[data.trials.state == "COMPLETE"]
    if done.empty:
        return ""
    best = done.value.min() if data.direction == "minimize" else done.value.max()
    ties = int((done.value == best).sum())
    facts: dict[str, str] = {
        "completed trials": str(len(done)),
        f"trials sharing the best {data.metric}": f"{ties} (at {best:.4g})",
    }
    parts = []
    test = next((c for c in _TEST_COLUMNS if c in done.columns and done[c].notna().sum() >= 3), None)
    if test is not None:
        pairs = done[["number", "value", test]].dropna()
        rho = pairs.value.rank().corr(pairs[test].rank())
        facts[f"Spearman ({data.metric} vs {test}, {len(pairs)} trials)"] = (
            "n/a" if math.isnan(rho) else f"{rho:.2f}"
        )
        top = pairs.sort_values("value", ascending=data.direction == "minimize").head(_TOP)
        rho_top = top.value.rank().corr(top[test].rank())
        facts[f"Spearman over the {len(top)} best"] = "n/a" if math.isnan(rho_top) else f"{rho_top:.2f}"
        parts.append(figure(_scatter(pairs, data.metric, test), "trust-scatter"))
    confirmed = data.attrs.get("confirm")
    if confirmed:
        mine = next((e for e in confirmed["estimates"] if e["trial"] == confirmed["winner"]), None)
        figure_text = "" if mine is None else f"{data.metric} {mine['mean']:.4f} ± {mine['sd']:.4f}; "
        facts["confirmed winner"] = f"trial {confirmed['winner']}: {figure_text}{confirmed['reason']}"
        if confirmed.get("ensemble"):
            chosen = confirmed["ensemble"]
            members = ", ".join(map(str, chosen["members"])) + (" with flip TTA" if chosen["flip"] else "")
            gain = f"paired gain {chosen['gain']:+.4f} ± {chosen['gain_se']:.4f}"
            facts["ensemble exported"] = f"trials {members}: {gain}"
        if confirmed.get("reference"):
            facts["against the baseline"] = confirmed["reference"]["line"]
        parts.append(figure(_ranking(confirmed, data.metric), "trust-ranking"))
        parts.append(_ranking_table(confirmed, done, test))
    else:
        facts["confirmed winner"] = (
            "none: the best validation value below comes from one split, unconfirmed (rpztune run confirms)"
        )
    intro = (
        "<p>The test figure is recorded for information only; it never chose anything. A low Spearman or "
        "many ties at the top mean the best validation value is mostly noise: trust the confirmed "
        "ranking.</p>"
    )
    return "<h2>Can you trust the winner?</h2>" + intro + key_values(facts) + "".join(parts)


def _scatter(pairs: pd.DataFrame, metric: str, test: str) -> go.Figure:
    fig = go.Figure(
        go.Scatter(
            x=pairs.value,
            y=pairs[test],
            mode="markers",
            text=[f"trial {n}" for n in pairs.number],
            hovertemplate="%{text}<br>" + metric + " %{x:.4f}<br>" + test + " %{y:.4f}<extra></extra>",
        )  # fmt: skip
    )
    fig.update_layout(title=f"selection value vs {test} (per completed trial)", height=380)
    fig.update_xaxes(title=metric)
    fig.update_yaxes(title=test)
    return fig


def _ranking(confirmed: dict, metric: str) -> go.Figure:
    estimates = confirmed["estimates"]
    base = (confirmed.get("reference") or {}).get("trial")
    labels = [
        f"trial {e['trial']}" + (" ★" if e["trial"] == confirmed["winner"] else "")
        + (" (baseline)" if e["trial"] == base else "")
        for e in estimates
    ]  # fmt: skip
    fig = go.Figure(
        [
            go.Scatter(
                x=labels, y=[e["mean"] for e in estimates], mode="markers", name="confirmed mean ± sd",
                error_y={"type": "data", "array": [e["sd"] for e in estimates], "visible": True},
            ),
            go.Scatter(
                x=labels, y=[e["search_value"] for e in estimates], mode="markers", name="search value",
                marker={"symbol": "x"},
            ),
        ]
    )  # fmt: skip
    n = len(estimates[0]["values"]) if estimates else 0
    fig.update_layout(title=f"confirmed ranking ({n} {confirmed['scheme']}s per trial)", height=380)
    fig.update_yaxes(title=metric)
    return fig


def _ranking_table(confirmed: dict, done: pd.DataFrame, test: str | None) -> str:
    tests = dict(zip(done.number, done[test], strict=False)) if test else {}
    rows = []
    for rank, e in enumerate(confirmed["estimates"], start=1):
        rows.append(
            [
                cell(rank),
                cell(
                    e["trial"],
                    text=f"{e['trial']}" + (" (winner)" if e["trial"] == confirmed["winner"] else ""),
                ),
                cell(e["mean"], text=f"{e['mean']:.4f} ± {e['sd']:.4f}"),
                cell(e["search_value"], text=f"{e['search_value']:.4f}"),
                cell(e["complexity"]),
                cell(e["epochs"]),
                cell(tests.get(e["trial"], math.nan)),
            ]
        )
    headers = [
        "rank",
        "trial",
        "confirmed mean ± sd",
        "search value",
        "parameters",
        "epochs",
        test or "test",
    ]
    return table(headers, rows)
