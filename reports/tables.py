"""Storage -> pandas tables (read-only)."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

__all__ = ["studies_frame"]

_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)


def studies_frame(storage: optuna.storages.BaseStorage) -> pd.DataFrame:
    """One row per study: task, metric, trial counts by state, best value and trial, data source."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
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
            }
        )
    columns = ["study", "task", "metric", "trials", *(s.name.lower() for s in _STATES)]
    return pd.DataFrame(rows, columns=[*columns, "best_value", "best_trial", "data"])
