"""Refit a study's winner: retrain its configuration on its training and validation images (or more).

How is the task's own (:class:`objectives.hooks.Refit`): mynet retrains on its training + validation images
for the trial's best epoch count (its schedule spanning them); numpy-mlp on every training image and
finetune on every photo, each for the *confirmed* epoch count (the median best epoch of its confirmation
replicates, see ``search/selection/confirm.py``; the trial's own best epoch when it was not confirmed).

A refit is stored *with the study it refits*: its state dict goes beside the trial checkpoints as
``refit-NNNNN.pt`` (NNNNN: the trial number) and the study gets a user attribute ``refit:N`` holding the
refit's record (epochs, images, seed, device, seconds, training losses, t10k test accuracy for information).
``rpztune export`` of trial N uses the refit's weights when that record and file exist, and says so.
A refit has no validation images left, so it is never ranked against trials; refitting again replaces it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

import objectives
from objectives.files import remove_stale_temps
from objectives.hooks import RefitRequest
from objectives.training.fit import resolve_device
from search.engine.checkpoints import check_checkpoint
from search.engine.study import StudyError, study_dir
from search.selection.winner import Winner, find_trial

__all__ = ["RefitResult", "find_refit", "refit", "refit_key"]


@dataclass(frozen=True)
class RefitResult:
    """A finished refit: the study and trial it refits, its stored record and its weights file."""

    study: str
    trial: int
    record: dict[str, Any]
    path: Path
    attr: str


def refit_key(trial_number: int) -> str:
    """The study user attribute holding the refit of trial ``trial_number``."""
    return f"refit:{trial_number}"


def refit(
    storage: str,
    study_name: str,
    trial_number: int | None = None,
    *,
    data: str | None = None,
    data_fraction: float | None = None,
    device: str = "auto",
    seed: int | None = None,
    checkpoints: str | Path | None = None,
    epochs: int | None = None,
    deadline: float | None = None,
    teachers: int | None = None,
) -> RefitResult:
    """Retrain the winner (or trial ``trial_number``) of a study for its best epoch count; store the refit.

    Args:
        data: The study's data on this machine (default: the path stored in the study).
        data_fraction: Training share of the training images, the validation images coming on top
            (default: the study's ``data_fraction``, i.e. train + validation).
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: Default: the trial's own seed.
        epochs: The refit's epochs, where the task lets a user set them (mynet; default: the study's
            ``refit_epochs`` setting, at least the trial's best epoch).
        deadline: ``time.time()`` by which the refit must end (the pipeline's budget): past it the task's
            refit stops and raises :class:`objectives.DeadlineReached`, and nothing is stored.
        teachers: Distil the refit from this many trials (:func:`teacher_trials`), where the task can
            (mynet).

    Raises:
        StudyError: when the study, trial or checkpoint is missing, or ``data`` is not the study's data.
        ValueError: for a task without refit, an unusable device or a bad ``data_fraction``.
    """
    study, trial = find_trial(storage, study_name, trial_number)
    task = objectives.get_task(str(study.user_attrs["task"]))
    refitter = task.refit
    if refitter is None:
        raise ValueError(f"task {task.name!r} has no refit")
    for option, value in (("data_fraction", data_fraction), ("epochs", epochs), ("teachers", teachers)):
        if value is not None and option not in refitter.options:
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} does not apply to a {task.name} refit: {refitter.fixed}")
    if data_fraction is not None and not 0 < data_fraction < 1:
        raise ValueError(f"--data-fraction must lie in (0, 1), got {data_fraction}")
    if teachers is not None and teachers < 1:
        raise ValueError(f"--teachers must be at least 1, got {teachers}")
    resolve_device(device)
    settings = dict(study.user_attrs.get("settings", {}))
    dataset = task.load_data(data or study.user_attrs.get("data"), settings)
    expected = study.user_attrs.get("data_fingerprint")
    if dataset.fingerprint != expected:
        raise StudyError(
            f"study {study_name!r} was run on data {study.user_attrs.get('data_source')} "
            f"(fingerprint {expected}), but {dataset.source} has fingerprint {dataset.fingerprint}; "
            "pass the study's --data"
        )
    folder = study_dir(storage, study_name, checkpoints)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)  # a refit killed mid-write (kill -9) left its temporary file
    path = folder / f"refit-{trial.number:05d}{refitter.suffix}"
    request = RefitRequest(
        epochs=epochs,
        confirmed_epochs=confirmed_epochs(study.user_attrs.get("confirm"), trial.number),
        seed=seed,
        data_fraction=data_fraction,
        device=device,
        settings=settings,
        deadline=deadline,
        teachers=[] if teachers is None else teacher_trials(study, folder, teachers),
    )
    record = refitter.train(trial, dataset, path, request)
    record["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    key = refit_key(trial.number)
    study.set_user_attr(key, record)
    return RefitResult(study_name, trial.number, record, path, key)


def teacher_trials(study: Any, folder: Path, count: int) -> list[tuple[FrozenTrial, Path]]:
    """The ``count`` best trials with a usable checkpoint in ``folder``: the confirmed ones first, by their
    confirmed mean, then the other completed trials by value (the winner is usually the first).

    Raises:
        StudyError: when fewer than ``count`` trials have a usable checkpoint.
    """
    trials = study.get_trials(deepcopy=False)
    confirmed = sorted((study.user_attrs.get("confirm") or {}).get("estimates", []), key=lambda e: -e["mean"])
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = -1 if study.direction == StudyDirection.MAXIMIZE else 1
    order = [trials[e["trial"]] for e in confirmed] + sorted(complete, key=lambda t: sign * t.value)
    chosen: dict[int, tuple[FrozenTrial, Path]] = {}
    for trial in order:
        name = trial.user_attrs.get("checkpoint")
        if len(chosen) == count or trial.number in chosen or not name or not (folder / name).is_file():
            continue
        what = f"teacher trial {trial.number} of {study.study_name!r}"
        chosen[trial.number] = (trial, check_checkpoint(folder / name, what=what))
    if len(chosen) < count:
        raise StudyError(
            f"--teachers {count}: only {len(chosen)} trials of {study.study_name!r} kept a checkpoint"
        )
    return list(chosen.values())


def confirmed_epochs(record: dict[str, Any] | None, trial_number: int) -> int | None:
    """The confirmed epoch count of a trial (its replicates' median best epoch), if it was confirmed."""
    for estimate in (record or {}).get("estimates", []):
        if estimate["trial"] == trial_number:
            return int(estimate["epochs"])
    return None


def find_refit(winner: Winner) -> tuple[dict[str, Any], Path] | None:
    """The stored refit of the winner's trial and its weights file; ``None`` when no refit is recorded.

    Raises:
        CheckpointError: when a refit is recorded but its file is missing or does not load (export must
            not fall back to the trial's own weights without saying so).
    """
    record = winner.study.user_attrs.get(refit_key(winner.trial.number))
    if not record:
        return None
    path = winner.checkpoint.parent / record["checkpoint"]
    what = f"the refit of trial {winner.trial.number} of {winner.study.study_name!r} (study attribute "
    check_checkpoint(path, what=what + f"{refit_key(winner.trial.number)!r}; run rpztune refit again)")
    return record, path
