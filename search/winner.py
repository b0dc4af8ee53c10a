"""Find a study's winning (or a chosen) trial and its checkpoint; score it on a test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import objectives

from .checkpoints import check_checkpoint, checkpoint_path
from .study import StudyError, load_study, study_dir

__all__ = ["Winner", "evaluate", "find_winner"]


class Winner:
    """A completed trial of a study together with its task and checkpoint file."""

    def __init__(self, study: optuna.Study, trial: FrozenTrial, checkpoint: Path) -> None:
        self.study = study
        self.trial = trial
        self.checkpoint = checkpoint
        self.task = objectives.get_task(str(study.user_attrs.get("task")))

    @property
    def data(self) -> str | None:
        """The data path the study was run on (``None``: the offline default)."""
        return self.study.user_attrs.get("data")

    @property
    def settings(self) -> dict[str, Any]:
        """The study's fixed settings (e.g. the pair of classes)."""
        return dict(self.study.user_attrs.get("settings", {}))


def find_winner(
    storage: str, study_name: str, trial_number: int | None = None, *, checkpoints: str | Path | None = None
) -> Winner:
    """The best completed trial of a study (or trial ``trial_number``), with a checkpoint that loads.

    Raises:
        StudyError: when the study or trial does not exist or is not complete.
        CheckpointError: when the trial's checkpoint is missing or does not load (naming trial and file).
    """
    study = load_study(storage, study_name)
    if "task" not in study.user_attrs:
        raise StudyError(f"study {study_name!r} was not made by rpztune (it has no task)")
    if trial_number is None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise StudyError(f"study {study_name!r} has no completed trial yet")
        trial = study.best_trial
    else:
        trials = study.get_trials(deepcopy=False)
        if not 0 <= trial_number < len(trials):
            raise StudyError(f"study {study_name!r} has no trial {trial_number} (it has {len(trials)})")
        trial = trials[trial_number]
        if trial.state != TrialState.COMPLETE:
            raise StudyError(f"trial {trial_number} of {study_name!r} is {trial.state.name}, not COMPLETE")
    path = checkpoint_path(study_dir(storage, study_name, checkpoints), trial)
    check_checkpoint(path, what=f"trial {trial.number} of {study_name!r}")
    return Winner(study, trial, path)


def evaluate(winner: Winner, data: str | None) -> dict[str, Any]:
    """Score the winner on the test split of ``data`` (the study's own data when ``None``)."""
    result = winner.task.evaluate(winner.trial, winner.checkpoint, data or winner.data, winner.settings)
    return {**result, "study": winner.study.study_name, "trial": winner.trial.number}
