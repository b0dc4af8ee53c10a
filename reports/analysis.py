"""A study's report data: its frames plus what the pages show about them (best trial, pruning savings,
parameter importances, which curves to draw). Pure data: nothing here renders or writes."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution
from optuna.importance import FanovaImportanceEvaluator
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from .trials import curves_frame, trials_frame

__all__ = [
    "CurveSelection",
    "Importances",
    "Savings",
    "StudyData",
    "param_importances",
    "param_scales",
    "pruning_savings",
    "select_curves",
]

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass(frozen=True)
class Savings:
    """Trial time spent, and the time pruning saved: for each pruned trial with a configured ``epochs``,
    (configured epochs - epochs run) x its mean seconds per epoch (duration / epochs run)."""

    pruned: int
    epochs_saved: int
    seconds_saved: float
    seconds_spent: float
    unknown: int
    """Pruned trials left out of the estimate (no configured epochs, duration or epoch count)."""


@dataclass(frozen=True)
class Importances:
    """fANOVA parameter importances (summing to 1, largest first), or a sentence saying why there are none."""

    values: dict[str, float]
    note: str


@dataclass(frozen=True)
class CurveSelection:
    """Which trials' curves a figure draws: the best few one by one, samples of the rest as groups."""

    top: list[int]
    other_complete: list[int]
    pruned: list[int]
    n_other_complete: int
    n_pruned: int


@dataclass
class StudyData:
    """Everything a study's report shows, read once from the storage.

    Attributes:
        name: The study name.
        direction: ``"minimize"`` or ``"maximize"`` (the first objective's, for multi-objective studies).
        metric: The objective's name (``metric`` study attribute, else ``"value"``).
        attrs: The study's user attributes (task, settings, space, data source, ...).
        trials: ``trials_frame`` of the study.
        curves: ``curves_frame`` of the study.
        importances: Parameter importances over the completed trials.
        scales: ``"linear"``, ``"log"`` or ``"categorical"`` per parameter name.
        n_objectives: 1 for the studies rpztune makes.
        storage: How the report names the storage (no password).
        best_config: The best trial's ``config`` user attribute (how it was trained), if it has one.
    """

    name: str
    direction: str
    metric: str
    attrs: dict[str, Any]
    trials: pd.DataFrame
    curves: pd.DataFrame
    importances: Importances
    scales: dict[str, str]
    n_objectives: int = 1
    storage: str = ""
    best_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        study: optuna.Study,
        *,
        checkpoint_dir: Path | None = None,
        storage: str = "",
        importances: bool = True,
    ) -> StudyData:
        """Read ``study`` (only reading) and compute its frames and, unless told not to, its importances."""
        frozen = study.get_trials(deepcopy=False)
        trials = trials_frame(study, checkpoint_dir=checkpoint_dir, trials=frozen)
        directions = study.directions
        data = cls(
            name=study.study_name,
            direction="maximize" if directions[0] == StudyDirection.MAXIMIZE else "minimize",
            metric=str(study.user_attrs.get("metric", "value")),
            attrs=dict(study.user_attrs),
            trials=trials,
            curves=curves_frame(study, trials=frozen),
            importances=param_importances(study, trials) if importances else Importances({}, "not computed"),
            scales=param_scales(frozen),
            n_objectives=len(directions),
            storage=storage,
        )
        best = data.best()
        if best is not None:
            config = next(t for t in frozen if t.number == best["number"]).user_attrs.get("config")
            data.best_config = dict(config) if isinstance(config, dict) else {}
        return data

    @property
    def task(self) -> str:
        """The rpztune task that made the study (empty for other studies)."""
        return str(self.attrs.get("task", ""))

    def counts(self) -> dict[str, int]:
        """Trials by state name, every state present (zeros included)."""
        found = self.trials["state"].value_counts()
        return {state: int(found.get(state, 0)) for state in STATES}

    def complete(self) -> pd.DataFrame:
        """The completed trials with a finite value, best first (ties: lowest number first)."""
        frame = self.trials[(self.trials["state"] == "COMPLETE") & np.isfinite(self.trials["value"])]
        return frame.sort_values(
            ["value", "number"], ascending=[self.direction == "minimize", True], kind="stable"
        )

    def best(self) -> pd.Series | None:
        """The best completed trial's row, or ``None`` when no trial completed."""
        complete = self.complete()
        return None if complete.empty else complete.iloc[0]

    def savings(self) -> Savings:
        """Trial time spent and saved by pruning (see ``Savings``)."""
        return pruning_savings(self.trials)

    def param_columns(self) -> list[str]:
        """The parameter names, most important first, then the others in the order they appear."""
        names = [c.removeprefix("params_") for c in self.trials.columns if c.startswith("params_")]
        ranked = [n for n in self.importances.values if n in names]
        return ranked + [n for n in names if n not in ranked]

    def extra_columns(self) -> list[str]:
        """The objective's extra parts (``extra_<name>`` columns), without the prefix."""
        return [c.removeprefix("extra_") for c in self.trials.columns if c.startswith("extra_")]


def pruning_savings(trials: pd.DataFrame) -> Savings:
    """Estimate the trial time pruning saved from a ``trials_frame`` (see ``Savings``)."""
    pruned = trials[trials["state"] == "PRUNED"]
    run = pruned["epochs_run"].astype("float64")
    epochs = pruned["epochs"].astype("float64")
    seconds = pruned["duration_s"]
    known = np.isfinite(run) & (run > 0) & np.isfinite(epochs) & np.isfinite(seconds)
    saved_epochs = (epochs[known] - run[known]).clip(lower=0)
    saved_seconds = saved_epochs * seconds[known] / run[known]
    return Savings(
        pruned=len(pruned),
        epochs_saved=int(saved_epochs.sum()),
        seconds_saved=float(saved_seconds.sum()),
        seconds_spent=float(trials["duration_s"].sum(skipna=True)),
        unknown=int((~known).sum()),
    )


def param_importances(study: optuna.Study, trials: pd.DataFrame) -> Importances:
    """fANOVA importances of the parameters every completed trial has (seeded, so reports are stable)."""
    n_complete = int((trials["state"] == "COMPLETE").sum())
    if n_complete < 2:
        return Importances(
            {}, f"Parameter importances need at least 2 completed trials; this study has {n_complete}."
        )
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=FanovaImportanceEvaluator(seed=0), target=target
            )
    except (ValueError, RuntimeError) as exc:
        return Importances({}, f"Parameter importances could not be computed: {exc}")
    values = {name: float(v) for name, v in values.items() if math.isfinite(v)}
    if not values:
        return Importances({}, "No parameter varies across the completed trials, so none has an importance.")
    return Importances(
        values, f"fANOVA over the {n_complete} completed trials (parameters all of them have)."
    )


def param_scales(trials: Sequence[FrozenTrial]) -> dict[str, str]:
    """``"categorical"``, ``"log"`` or ``"linear"`` for each parameter, from its distribution."""
    scales: dict[str, str] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            if name not in scales:
                if isinstance(dist, CategoricalDistribution):
                    scales[name] = "categorical"
                else:
                    scales[name] = "log" if getattr(dist, "log", False) else "linear"
    return scales


def select_curves(data: StudyData, *, top: int = 10, cap: int = 300) -> CurveSelection:
    """The best ``top`` completed trials, and up to ``cap`` of the other completed and of the pruned trials
    (evenly spaced by trial number) — enough to see the study's shape without huge figures."""
    complete = data.complete()["number"].tolist()
    pruned = data.trials.loc[data.trials["state"] == "PRUNED", "number"].tolist()
    others = sorted(complete[top:])
    return CurveSelection(
        top=complete[:top],
        other_complete=_evenly(others, cap),
        pruned=_evenly(pruned, cap),
        n_other_complete=len(others),
        n_pruned=len(pruned),
    )


def _evenly(items: list[int], cap: int) -> list[int]:
    if len(items) <= cap:
        return list(items)
    picks = np.unique(np.linspace(0, len(items) - 1, cap).round().astype(int))
    return [items[i] for i in picks]
