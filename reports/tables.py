"""Storage -> pandas tables (read-only)."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

__all__ = ["confirmed_line", "is_confirmation", "studies_frame"]

_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)


def is_confirmation(summary: optuna.study.StudySummary) -> bool:
    """Whether a study holds the replicates of another study's confirmation (``rpztune confirm``), not a
    search: status and the pages show it on its search study's row and page."""
    return "confirm_of" in summary.user_attrs


def confirmed_line(attrs: dict, backend: optuna.storages.BaseStorage) -> str:
    """What a search study's confirmation found, from its study attributes: the winner and the replicates
    behind it, the progress of an unfinished one, or ``""`` when none was run."""
    confirmed = attrs.get("confirm")
    if confirmed:
        trials = len(confirmed.get("top", []))
        plan = f"({trials} trials × {confirmed['count']} {confirmed['scheme']}s)"
        mine = next((e for e in confirmed.get("estimates", []) if e["trial"] == confirmed["winner"]), None)
        if mine is None:
            return f"trial {confirmed['winner']} {plan}"
        metric = attrs.get("metric", "value")
        line = f"trial {confirmed['winner']}: {metric} {mine['mean']:.4f} ± {mine['sd']:.4f} {plan}"
        reference = confirmed.get("reference") or {}
        return line + (f"; {reference['line']}" if reference.get("line") else "")
    name = attrs.get("confirm_study")
    if not name:
        return ""
    try:
        replicates = optuna.load_study(study_name=name, storage=backend).get_trials(deepcopy=False)
    except KeyError:  # deleted by hand (optuna delete-study)
        return ""
    done = sum(t.state == TrialState.COMPLETE for t in replicates)
    return f"unfinished: {done} of {len(replicates)} replicates (rpztune confirm resumes it)"


def studies_frame(backend: optuna.storages.BaseStorage) -> pd.DataFrame:
    """One row per search study: task, metric, trial counts by state, best value and trial, data source and
    its confirmation (:func:`confirmed_line`; confirmation studies have no row of their own)."""
    rows = []
    for summary in optuna.get_all_study_summaries(backend, include_best_trial=False):
        if is_confirmation(summary):
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=backend)
        trials = study.get_trials(deepcopy=False)
        counts = {state.name.lower(): sum(t.state == state for t in trials) for state in _STATES}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = study.best_trial if complete else None
        rows.append(
            {
                "study": summary.study_name,
                "task": study.user_attrs.get("task", ""),
                "metric": study.user_attrs.get("metric", "value"),
                "trials": len(trials),
                **counts,
                "best_value": None if best is None else best.value,
                "best_trial": None if best is None else best.number,
                "data": study.user_attrs.get("data_source", ""),
                "confirmed": confirmed_line(summary.user_attrs, backend),
            }
        )
    columns = ["study", "task", "metric", "trials", *(s.name.lower() for s in _STATES)]
    return pd.DataFrame(rows, columns=[*columns, "best_value", "best_trial", "data", "confirmed"])
