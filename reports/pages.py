"""Report data -> HTML pages: one page per study and an index comparing the studies of a storage."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from . import figures
from ._html import (
    cell,
    esc,
    figure,
    fmt_seconds,
    fmt_value,
    key_value_groups,
    key_values,
    page,
    table,
)
from .analysis import StudyData, select_curves
from .trust import trust_section

__all__ = ["index_page", "study_page"]

TOP_TRIALS = 50
"""Rows of a study page's table of top trials."""
TOP_CURVES = 10
"""Completed trials whose curves are drawn one trace each; the rest are sampled (``CURVE_CAP``)."""
CURVE_CAP = 300
"""At most this many other completed, and this many pruned, trials' curves are drawn."""
PARALLEL_PARAMS = 8
SLICE_PARAMS = 4
LISTED_PROBLEMS = 100


def study_page(
    data: StudyData,
    *,
    plotlyjs: str = "inline",
    generated: dt.datetime | None = None,
    index: str | None = None,
) -> str:
    """The HTML page of one study.

    Args:
        data: The study's report data (``StudyData.load``).
        plotlyjs: ``"inline"`` (the page is one self-contained file) or the relative URL of plotly.js.
        generated: The time printed on the page (default: now).
        index: The relative URL of the index page, linked at the top (``None``: no link).

    Returns:
        The page, every user-given string escaped.
    """
    best = data.best()
    sections = [
        _header(data, generated, index),
        _summary(data),
        _best_trial(data, best),
        trust_section(data),
        _history(data),
        _curves(data),
        _importances(data),
        _parallel_and_slices(data),
        _top_trials(data),
        _problems(data),
        _study_info(data),
    ]
    return page(f"{data.name} — rpztune report", "\n".join(s for s in sections if s), plotlyjs=plotlyjs)


def index_page(
    studies: Sequence[StudyData],
    links: Mapping[str, str],
    *,
    storage: str = "",
    plotlyjs: str = "inline",
    generated: dt.datetime | None = None,
) -> str:
    """The index page comparing every study of a storage.

    Args:
        studies: The studies' report data (importances are not needed).
        links: Study name -> relative URL of its page (studies without a page are listed unlinked).
        storage: How to name the storage on the page.
        plotlyjs: As for ``study_page``.
        generated: The time printed on the page (default: now).
    """
    headers = ["study", "task", "metric", "trials", "complete", "pruned", "fail", "running"]
    headers += ["best value", "best trial", "time spent", "pruning saved", "data"]
    rows = []
    for data in studies:
        counts, savings, best = data.counts(), data.savings(), data.best()
        link = links.get(data.name)
        name = f'<a href="{esc(link)}">{esc(data.name)}</a>' if link else esc(data.name)
        rows.append(
            [
                f'<td class="text">{name}</td>',
                cell(data.task or "–"),
                cell(data.metric, text=f"{data.metric} ({data.direction[:3]})", cls="text"),
                cell(len(data.trials)),
                *(cell(counts[s]) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")),
                cell(None if best is None else best["value"]),
                cell(None if best is None else int(best["number"])),
                cell(savings.seconds_spent, text=fmt_seconds(savings.seconds_spent)),
                cell(savings.seconds_saved, text=fmt_seconds(savings.seconds_saved)),
                cell(data.attrs.get("data_source", "–"), cls="text"),
            ]
        )
    body = [
        "<h1>rpztune studies</h1>",
        f'<p class="sub">{esc(storage)} · {len(studies)} studies · generated {esc(_when(generated))}</p>',
        table(headers, rows, sortable=True, table_id="studies", classes="fit")
        if rows
        else "<p>No studies in this storage.</p>",
    ]
    groups: dict[tuple[str, str], list[StudyData]] = {}
    for data in studies:
        if not data.complete().empty:
            groups.setdefault((data.metric, data.direction), []).append(data)
    for i, ((metric, direction), group) in enumerate(groups.items()):
        body.append(f"<h2>Best {esc(metric)} so far ({esc(direction)})</h2>")
        body.append(figure(figures.compare_figure(group), f"compare-{i}"))
    return page("rpztune studies", "\n".join(body), plotlyjs=plotlyjs)


def _header(data: StudyData, generated: dt.datetime | None, index: str | None) -> str:
    parts = [data.task and f"task {data.task}", f"{data.metric} ({data.direction})", data.storage]
    sub = " · ".join(esc(p) for p in parts if p)
    note = ""
    if data.n_objectives > 1:
        note = (
            f'<p class="note">Multi-objective study ({data.n_objectives} objectives): showing the first.</p>'
        )
    back = f'<p class="sub"><a href="{esc(index)}">&larr; all studies</a></p>' if index else ""
    title = f"<h1>Study {esc(data.name)}</h1>"
    return f'{back}{title}<p class="sub">{sub} · generated {esc(_when(generated))}</p>{note}'


def _summary(data: StudyData) -> str:
    counts, savings, best = data.counts(), data.savings(), data.best()
    cards = [("trials", str(len(data.trials)))]
    cards += [(state.lower(), str(n)) for state, n in counts.items() if n or state in ("COMPLETE", "PRUNED")]
    cards.append((f"best {data.metric}", "–" if best is None else fmt_value(best["value"])))
    cards.append(("trial time spent", fmt_seconds(savings.seconds_spent)))
    cards.append(("time pruning saved (est.)", fmt_seconds(savings.seconds_saved)))
    html_cards = "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for k, v in cards)
    note = (
        f"Pruning stopped {_count(savings.pruned, 'trial')} early; they skipped "
        f"{_count(savings.epochs_saved, 'epoch')} in all. The time saved is estimated per pruned trial as "
        "(configured epochs − epochs run) × its mean seconds per epoch (its duration / epochs run)."
    )
    if savings.unknown:
        verb = "is" if savings.unknown == 1 else "are"
        note += f" {_count(savings.unknown, 'pruned trial')} {verb} left out (no epoch count or duration)."
    pruned_at = data.trials.loc[data.trials["state"] == "PRUNED", "pruned_epoch"].dropna().value_counts()
    stops = ""
    if not pruned_at.empty:
        rows = [[cell(int(e)), cell(int(n))] for e, n in sorted(pruned_at.items())]
        stops = "<details><summary>Pruned trials by the epoch they stopped at</summary>"
        stops += table(["epoch", "trials"], rows) + "</details>"
    return f'<h2>Summary</h2><div class="cards">{html_cards}</div><p class="note">{esc(note)}</p>{stops}'


def _best_trial(data: StudyData, best: pd.Series | None) -> str:
    if best is None:
        return "<h2>Best trial</h2><p>No trial has completed yet.</p>"
    number = int(best["number"])
    facts: dict[str, Any] = {
        "trial": number,
        data.metric: best["value"],
        "best epoch": best["best_epoch"],
        "epochs run / configured": f"{fmt_value(best['epochs_run'])} / {fmt_value(best['epochs'])}",
        "duration": fmt_seconds(best["duration_s"]),
    }
    test = _test_column(data)
    if test is not None:
        on = "" if pd.isna(best["n_test"]) else f" on {int(best['n_test'])} images"
        facts[f"{test.replace('_', ' ')} (never used for tuning)"] = (
            f"{fmt_value(best[test])}{on}" if not pd.isna(best[test]) else "–"
        )
    for extra in data.extra_columns():
        facts[extra] = best[f"extra_{extra}"]
    if best["checkpoint"] is not None and not pd.isna(best["checkpoint"]):
        kept = "on disk" if best["checkpoint_kept"] else "not on disk (only the best --keep-top keep one)"
        facts["checkpoint"] = f"{best['checkpoint']} ({kept})"
    config = data.best_config or {
        p: best[f"params_{p}"] for p in data.param_columns() if not pd.isna(best[f"params_{p}"])
    }
    curves = ""
    if (data.curves["trial"] == number).any():
        curves = figure(figures.best_curves_figure(data, number), "best-curves")
    return (
        f"<h2>Best trial: #{number}</h2>{key_values(facts, table_id='best-facts')}"
        f"<h3>How it was trained</h3>{_how_trained(config)}{curves}"
    )


def _how_trained(config: Mapping[str, Any]) -> str:
    # A config of sections (mynet, finetune: model / train / augment) reads best as one small table each.
    sections = {k: v for k, v in config.items() if isinstance(v, Mapping)}
    if not sections:
        return key_values(config, table_id="how-trained")
    rest = {k: v for k, v in config.items() if k not in sections}
    groups = {**({"": rest} if rest else {}), **sections}
    return key_value_groups(groups, group_id="how-trained")


def _test_column(data: StudyData) -> str | None:
    """``test_error`` or ``test_accuracy``: the test figure the study's trials recorded (None: neither)."""
    for column in ("test_error", "test_accuracy"):
        if data.trials[column].notna().any():
            return column
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _history(data: StudyData) -> str:
    if data.trials.empty:
        return ""
    return "<h2>Optimisation history</h2>" + figure(figures.history_figure(data), "history")


def _curves(data: StudyData) -> str:
    if data.curves.empty:
        return ""
    names = data.curves["curve"].unique().tolist()
    curve = data.metric if data.metric in names else names[0]
    sel = select_curves(data, top=TOP_CURVES, cap=CURVE_CAP)
    parts = []
    if sel.top:
        parts.append(f"the best {len(sel.top)} completed trials, one line each")
    if sel.n_other_complete:
        parts.append(
            f"{len(sel.other_complete)} of the {sel.n_other_complete} other completed trials in grey"
        )
    if sel.n_pruned:
        parts.append(
            f"{len(sel.pruned)} of the {sel.n_pruned} pruned trials in red, each ending in a cross at the "
            "epoch the pruner stopped it"
        )
    note = f"{curve} per epoch of " + "; ".join(parts or ["no trial"]) + "."
    if len(sel.other_complete) < sel.n_other_complete or len(sel.pruned) < sel.n_pruned:
        note += (
            f" To keep the page light, at most {CURVE_CAP} grey and {CURVE_CAP} red trials are drawn, evenly "
            "spread over the trial numbers."
        )
    return f'<h2>Per-epoch curves</h2><p class="note">{esc(note)}</p>' + figure(
        figures.curves_figure(data, sel, curve), "curves"
    )


def _importances(data: StudyData) -> str:
    if not data.importances.values:
        return f'<h2>Parameter importances</h2><p class="note">{esc(data.importances.note)}</p>'
    return f'<h2>Parameter importances</h2><p class="note">{esc(data.importances.note)}</p>' + figure(
        figures.importance_figure(data.importances), "importances"
    )


def _parallel_and_slices(data: StudyData) -> str:
    complete = data.complete()
    if complete.empty:
        return ""
    usable = [
        p
        for p in data.param_columns()
        if complete[f"params_{p}"].notna().all() and complete[f"params_{p}"].nunique() > 1
    ]
    out = []
    if usable:
        shown = usable[:PARALLEL_PARAMS]
        note = f"The {len(complete)} completed trials over {len(shown)} parameters"
        note += ", the most important first." if data.importances.values else "."
        out += [f'<h2>Parallel coordinates</h2><p class="note">{esc(note)}</p>']
        out.append(figure(figures.parallel_figure(data, shown), "parallel"))
    sliced = [p for p in data.param_columns() if complete[f"params_{p}"].nunique() > 1][:SLICE_PARAMS]
    if sliced:
        out.append(f'<h2>Slices</h2><p class="note">{esc(_slice_note(data, len(sliced)))}</p>')
        out.append(figure(figures.slices_figure(data, sliced), "slices"))
    return "".join(out)


def _slice_note(data: StudyData, n: int) -> str:
    which = "most important" if data.importances.values else "first"
    return f"The value of each completed trial against the {n} {which} parameters (darker: later trials)."


def _top_trials(data: StudyData) -> str:
    complete = data.complete().head(TOP_TRIALS)
    if complete.empty:
        return ""
    params, extras, test = data.param_columns(), data.extra_columns(), _test_column(data)
    headers = ["trial", data.metric, "duration", "epochs run", "best epoch"]
    headers += [*([test.replace("_", " ")] if test else []), *extras, *params]
    rows = []
    for _, row in complete.iterrows():
        rows.append(
            [
                cell(int(row["number"])),
                cell(row["value"]),
                cell(row["duration_s"], text=fmt_seconds(row["duration_s"])),
                cell(row["epochs_run"]),
                cell(row["best_epoch"]),
                *([cell(row[test])] if test else []),
                *(cell(row[f"extra_{e}"]) for e in extras),
                *(cell(row[f"params_{p}"]) for p in params),
            ]
        )
    n = len(data.complete())
    note = f"The best {len(complete)} of {n} completed trials; click a column to sort."
    return f'<h2>Top trials</h2><p class="note">{esc(note)}</p>' + table(
        headers, rows, sortable=True, table_id="top-trials"
    )


def _problems(data: StudyData) -> str:
    frame = data.trials[data.trials["state"].isin(["FAIL", "RUNNING", "WAITING"])]
    if frame.empty:
        return ""
    rows = []
    for _, row in frame.head(LISTED_PROBLEMS).iterrows():
        rows.append(
            [
                cell(int(row["number"])),
                cell(row["state"], cls=f"state-{row['state']}"),
                cell(None if pd.isna(row["started"]) else str(row["started"])[:19]),
                cell(_last_line(row["reason"]), cls="wrap"),
            ]
        )
    more = f" (the first {LISTED_PROBLEMS} of {len(frame)})" if len(frame) > LISTED_PROBLEMS else ""
    return f"<h2>Failed and unfinished trials{more}</h2>" + table(
        ["trial", "state", "started", "reason"], rows
    )


def _study_info(data: StudyData) -> str:
    info: dict[str, Any] = {"study": data.name, "storage": data.storage or "–"}
    for key in ("task", "metric", "settings", "seed", "data", "data_source", "data_fingerprint"):
        if key in data.attrs:
            info[key] = data.attrs[key]
    shown = set(info) | {"space", "rpztune_format"}
    info.update({k: v for k, v in data.attrs.items() if k not in shown})
    out = "<h2>Study settings</h2>" + key_values(info, table_id="study-settings")
    space = data.attrs.get("space")
    if isinstance(space, dict) and space:
        out += "<h3>Searched space</h3>" + key_values(space, table_id="searched-space")
    return out


def _last_line(reason: Any) -> str:
    if reason is None or pd.isna(reason):
        return "–"
    lines = [line for line in str(reason).splitlines() if line.strip()]
    return lines[-1][:500] if lines else "–"


def _when(generated: dt.datetime | None) -> str:
    return (generated or dt.datetime.now()).strftime("%Y-%m-%d %H:%M")
