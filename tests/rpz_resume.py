"""A trial whose worker dies after an epoch, and its retry, in one process (for the objectives' tests)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from objectives import TrialContext
from objectives.training.resume import progress_path


class WorkerDied(Exception):
    """Stands in for a SIGKILL after an epoch's report."""


def die_then_retry(
    study: optuna.Study,
    objective: Callable[[optuna.Trial, TrialContext], float],
    checkpoint_dir: Path,
    *,
    die_after: int,
) -> tuple[FrozenTrial, FrozenTrial]:
    """Run a trial that dies at epoch ``die_after``'s report, then the retry the engine queues for it.

    An exception ends the trial through the objective's clean-up, which deletes its progress file; a killed
    process does not, so the file as it was at the moment of death is put back before the retry runs.

    Returns:
        The dead trial and its retry.
    """
    kept = checkpoint_dir.with_name(f"{checkpoint_dir.name}-kept.progress.pt")

    def die(number: int, epoch: int, value: float) -> None:
        if epoch == die_after:
            shutil.copy(progress_path(checkpoint_dir, number), kept)
            raise WorkerDied

    dying = TrialContext(checkpoint_dir, "cpu", progress=die)
    study.optimize(lambda t: objective(t, dying), n_trials=1, catch=(WorkerDied,))
    dead = study.trials[-1]
    assert dead.state == optuna.trial.TrialState.FAIL
    assert not progress_path(checkpoint_dir, dead.number).exists(), "an exception deletes the progress"
    shutil.copy(kept, progress_path(checkpoint_dir, dead.number))
    RetryHeartbeatStaleTrialCallback(max_retry=1)(study, dead)  # as the engine does for a dead worker
    study.optimize(lambda t: objective(t, TrialContext(checkpoint_dir, "cpu")), n_trials=1)
    return dead, study.trials[-1]
