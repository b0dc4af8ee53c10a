"""Trials -> pandas: one row per trial, and the per-epoch curves in long format (read-only, no rendering)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

__all__ = ["FIXED_COLUMNS", "curves_frame", "trials_frame"]

FIXED_COLUMNS = (
    "number",
    "state",
    "value",
    "started",
    "duration_s",
    "epochs",
    "epochs_run",
    "pruned_epoch",
    "best_epoch",
    "test_error",
    "test_accuracy",
    "n_test",
    "checkpoint",
    "checkpoint_kept",
    "reason",
)
"""The columns every trials frame has, in order; ``params_<name>`` and ``extra_<name>`` columns follow."""

_KNOWN_ATTRS = {"best_epoch", "test_error", "test_accuracy", "n_test", "pruned_epoch", "checkpoint", "config"}
_KNOWN_ATTRS |= {"curves"}
_INT_COLUMNS = ("epochs", "epochs_run", "pruned_epoch", "best_epoch", "n_test")


def trials_frame(
    study: optuna.Study,
    *,
    checkpoint_dir: Path | None = None,
    trials: Sequence[FrozenTrial] | None = None,
) -> pd.DataFrame:
    """One row per trial of ``study``, in trial-number order.

    Columns: ``FIXED_COLUMNS`` (state as its name, duration in seconds, configured (``epochs`` or
    ``train.epochs`` of the trial's config) and run epochs, the epoch a pruned trial stopped at, the test
    error or accuracy the objective recorded (NaN when not), the checkpoint's path and whether that file
    still exists, the prune or fail reason), then ``params_<name>`` for every parameter of any trial
    (missing where a trial did not draw it), then ``extra_<name>`` for every other numeric user attribute
    (an objective's extra parts, e.g. ``extra_orig``).

    Args:
        study: Any loaded study; it is only read.
        checkpoint_dir: The study's checkpoint folder; checkpoint names are joined to it.
        trials: The study's trials when already read (saves reading them again).

    Returns:
        The frame; empty (with the fixed columns) for a study without trials.

    Example:
        >>> frame = trials_frame(optuna.load_study(study_name="numpy-mlp", storage="sqlite:///studies.db"))
        >>> frame[frame.state == "COMPLETE"].sort_values("value").head()
    """
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    return records_frame([trial_record(t, checkpoint_dir) for t in trials])


def trial_record(trial: FrozenTrial, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """The trials-frame row of one trial, as a dict."""
    attrs = trial.user_attrs
    config = attrs.get("config") if isinstance(attrs.get("config"), dict) else {}
    checkpoint = attrs.get("checkpoint")
    path = None
    if checkpoint:
        path = (checkpoint_dir / str(checkpoint)) if checkpoint_dir is not None else Path(str(checkpoint))
    duration = trial.duration.total_seconds() if trial.duration is not None else math.nan
    reason = attrs.get("prune_reason") or attrs.get("fail_reason") or trial.system_attrs.get("fail_reason")
    record: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "value": float(trial.values[0]) if trial.values else math.nan,  # multi-objective: the first
        "started": trial.datetime_start,
        "duration_s": duration,
        "epochs": configured_epochs(config),
        "epochs_run": epochs_run(trial),
        "pruned_epoch": _int_or_none(attrs.get("pruned_epoch")),
        "best_epoch": _int_or_none(attrs.get("best_epoch")),
        "test_error": _float_or_nan(attrs.get("test_error")),
        "test_accuracy": _float_or_nan(attrs.get("test_accuracy")),
        "n_test": _int_or_none(attrs.get("n_test")),
        "checkpoint": None if path is None else str(path),
        "checkpoint_kept": path is not None and checkpoint_dir is not None and path.is_file(),
        "reason": None if reason is None else str(reason),
    }
    if trial.state.name == "PRUNED" and record["pruned_epoch"] is None:
        record["pruned_epoch"] = record["epochs_run"]
    for name, value in trial.params.items():
        record[f"params_{name}"] = value
    for name, value in attrs.items():
        if name not in _KNOWN_ATTRS and _is_number(value):
            record[f"extra_{name}"] = float(value)
    return record


def records_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Trial records (``trial_record``) -> the trials frame, columns in the documented order."""
    params: dict[str, None] = {}
    extras: dict[str, None] = {}
    for record in records:
        for key in record:
            if key.startswith("params_"):
                params.setdefault(key)
            elif key.startswith("extra_"):
                extras.setdefault(key)
    frame = pd.DataFrame.from_records(list(records), columns=[*FIXED_COLUMNS, *params, *extras])
    for column in _INT_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    for column in ("value", "duration_s", "test_error", "test_accuracy"):
        frame[column] = frame[column].astype("float64")
    frame["checkpoint_kept"] = frame["checkpoint_kept"].astype(bool)
    return frame


def curves_frame(study: optuna.Study, *, trials: Sequence[FrozenTrial] | None = None) -> pd.DataFrame:
    """The per-epoch curves of every trial in long format: ``trial, state, curve, epoch, value``.

    Curves come from a trial's ``curves`` user attribute (``{"train_loss": [...], ...}``, epoch 1 first;
    pruned trials up to where they stopped); a trial without it contributes its reported intermediate
    values under the study's metric name. Epochs count from 1. ``trials``: as for ``trials_frame``.
    """
    metric = str(study.user_attrs.get("metric", "value"))
    columns: dict[str, list[Any]] = {"trial": [], "state": [], "curve": [], "epoch": [], "value": []}
    for trial in study.get_trials(deepcopy=False) if trials is None else trials:
        for curve, points in _trial_curves(trial, metric).items():
            for epoch, value in points:
                columns["trial"].append(trial.number)
                columns["state"].append(trial.state.name)
                columns["curve"].append(curve)
                columns["epoch"].append(epoch)
                columns["value"].append(value)
    frame = pd.DataFrame(columns)
    return frame.astype(
        {"trial": "int64", "state": "str", "curve": "str", "epoch": "int64", "value": "float64"}
    )


def configured_epochs(config: dict[str, Any]) -> int | None:
    """The epoch count a trial's ``config`` asked for: top-level ``epochs`` (numpy-mlp) or ``train.epochs``
    (mynet, finetune)."""
    train = config.get("train")
    if "epochs" not in config and isinstance(train, dict):
        return _int_or_none(train.get("epochs"))
    return _int_or_none(config.get("epochs"))


def epochs_run(trial: FrozenTrial) -> int | None:
    """How many epochs a trial ran: the longest recorded curve, else its last reported step."""
    curves = trial.user_attrs.get("curves")
    lengths = [len(v) for v in curves.values() if isinstance(v, list)] if isinstance(curves, dict) else []
    if lengths and max(lengths) > 0:
        return max(lengths)
    if trial.intermediate_values:
        return int(max(trial.intermediate_values))
    return None


def _trial_curves(trial: FrozenTrial, metric: str) -> dict[str, list[tuple[int, float]]]:
    curves = trial.user_attrs.get("curves")
    if isinstance(curves, dict) and curves:
        return {
            str(name): [(i, _float_or_nan(v)) for i, v in enumerate(values, start=1)]
            for name, values in curves.items()
            if isinstance(values, list)
        }
    if trial.intermediate_values:
        return {metric: sorted((int(step), float(v)) for step, v in trial.intermediate_values.items())}
    return {}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    return int(value) if _is_number(value) and math.isfinite(value) else None


def _float_or_nan(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan
