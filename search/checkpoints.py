"""Trial checkpoints: where a study keeps them, and keeping only the best few."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["KeepTopCheckpoints", "checkpoint_path"]


def checkpoint_path(study_dir: Path, trial: FrozenTrial) -> Path | None:
    """The checkpoint a trial recorded, or ``None`` when it has none."""
    name = trial.user_attrs.get("checkpoint")
    return study_dir / name if name else None


class KeepTopCheckpoints:
    """A study callback deleting the checkpoints of completed trials outside the best ``k``.

    The current best trial's checkpoint is never deleted; trials of other workers are seen through the
    storage, so every worker applies the same rule.
    """

    def __init__(self, study_dir: Path, k: int = 5) -> None:
        if k < 1:
            raise ValueError(f"keep-top must be at least 1, but got {k=}.")
        self.study_dir = study_dir
        self.k = k

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE:
            return
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
        ranked = sorted(completed, key=lambda t: (t.value if not reverse else -t.value, t.number))
        for stale in ranked[self.k :]:
            path = checkpoint_path(self.study_dir, stale)
            if path is not None:
                path.unlink(missing_ok=True)
