"""Refit a study's winner: retrain its configuration on its training and validation images (or more).

Per task: mynet retrains on its training + validation images for the trial's best epoch count (its
schedule spanning them); numpy-mlp on every training image (train + validation) and finetune on every
photo, each for the *confirmed* epoch count (the median best epoch of its confirmation replicates, see
``search/confirm.py``; the trial's own best epoch when it was not confirmed). numpy-mlp's refit is a
``refit-NNNNN.npz`` like its trial checkpoints.

A refit is stored *with the study it refits*: its state dict goes beside the trial checkpoints as
``refit-NNNNN.pt`` (NNNNN: the trial number) and the study gets a user attribute ``refit:N`` holding the
refit's record (epochs, images, seed, device, seconds, training losses, t10k test accuracy for information).
``rpztune export`` of trial N uses the refit's weights when that record and file exist, and says so.
A refit has no validation images left, so it is never ranked against trials; refitting again replaces it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import objectives
from objectives import replicate as confirm_objectives
from objectives.mynet import objective as mynet
from objectives.training.fit import resolve_device
from search.engine.checkpoints import check_checkpoint
from search.engine.study import StudyError, study_dir
from search.selection.winner import Winner, find_trial

__all__ = ["REFITTERS", "RefitResult", "find_refit", "refit", "refit_key"]

Refitter = Callable[..., dict[str, Any]]
REFITTERS: dict[str, Refitter] = {"mynet": mynet.refit, **confirm_objectives.REFITTERS}
_SUFFIX = {"numpy-mlp": ".npz"}


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
) -> RefitResult:
    """Retrain the winner (or trial ``trial_number``) of a study for its best epoch count; store the refit.

    Args:
        data: The study's data on this machine (default: the path stored in the study).
        data_fraction: Training share of the training images, the validation images coming on top
            (default: the study's ``data_fraction``, i.e. train + validation).
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: Default: the trial's own seed.
        epochs: mynet: the refit's epochs (default: the study's ``refit_epochs`` setting, at least the
            trial's best epoch; a study without the setting: the trial's).

    Raises:
        StudyError: when the study, trial or checkpoint is missing, or ``data`` is not the study's data.
        ValueError: for a task without refit, an unusable device or a bad ``data_fraction``.
    """
    study, trial = find_trial(storage, study_name, trial_number)
    task = objectives.get_task(str(study.user_attrs["task"]))
    refitter = REFITTERS.get(task.name)
    if refitter is None:
        raise ValueError(f"no refit for task {task.name!r}; refit supports: {', '.join(REFITTERS)}")
    if data_fraction is not None and task.name != "mynet":
        raise ValueError(f"--data-fraction is for mynet; a {task.name} refit trains on all its images")
    if data_fraction is not None and not 0 < data_fraction < 1:
        raise ValueError(f"--data-fraction must lie in (0, 1), got {data_fraction}")
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
    path = folder / f"refit-{trial.number:05d}{_SUFFIX.get(task.name, '.pt')}"
    if task.name == "mynet":
        best = int(trial.user_attrs.get("best_epoch") or 0)
        epochs = epochs or max(best, int(settings.get("refit_epochs") or best))
        record = refitter(
            trial, dataset, path, data_fraction=data_fraction, device=device, seed=seed, epochs=epochs
        )
    else:
        if epochs is not None:
            raise ValueError(f"--epochs is for mynet; a {task.name} refit trains its confirmed epochs")
        seed = int(trial.user_attrs.get("seed", trial.number)) if seed is None else seed
        epochs = confirmed_epochs(study.user_attrs.get("confirm"), trial.number)
        epochs = epochs or int(trial.user_attrs.get("best_epoch") or trial.user_attrs["config"]["epochs"])
        extra = {"settings": settings} if task.name == "finetune" else {}
        record = refitter(trial, dataset, path, epochs=epochs, seed=seed, **extra)
        record |= {"trial": trial.number, "device": "cpu", "confirmed_epochs": epochs}
    record["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    key = refit_key(trial.number)
    study.set_user_attr(key, record)
    return RefitResult(study_name, trial.number, record, path, key)


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
