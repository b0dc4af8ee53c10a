"""The study engine: create or resume a task's study and run trials on it.

Everything that can be wrong with the user's input (task, space, sampler, pruner, data, storage URL) is
checked before the storage is written, so a mistake leaves the storage as it was.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import objectives
from spaces import Space, parse_assignment

from .algorithms import make_pruner, make_sampler
from .checkpoints import KeepTopCheckpoints
from .storage import DEFAULT_STORAGE, check_storage_url, checkpoint_root, get_storage, study_dirname

__all__ = ["RunSummary", "StudyError", "build_space", "load_study", "run_study", "study_dir"]

_FORMAT_VERSION = 1


class StudyError(ValueError):
    """A study that does not exist, or whose task, settings or data disagree with the request."""


@dataclass
class RunSummary:
    """What one ``run`` did: its study, how many trials it added, and the study's state after it."""

    study_name: str
    storage: str
    task: str
    metric: str
    new_trials: int
    counts: dict[str, int] = field(default_factory=dict)
    best_value: float | None = None
    best_trial: int | None = None


def build_space(task: objectives.Task, space_file: str | Path | None, overrides: Sequence[str]) -> Space:
    """The task's space with a TOML file's and then ``--set key=value`` overrides applied."""
    space = task.space
    if space_file is not None:
        space = space.with_file(space_file)
    if overrides:
        space = space.with_overrides(dict(parse_assignment(text) for text in overrides))
    return space


def run_study(
    task_name: str,
    *,
    study_name: str | None = None,
    storage: str = DEFAULT_STORAGE,
    n_trials: int | None = None,
    timeout: float | None = None,
    sampler: str = "tpe",
    pruner: str = "asha",
    seed: int | None = None,
    data: str | None = None,
    space_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    checkpoints: str | Path | None = None,
    keep_top: int = 5,
    device: str = "auto",
    progress: bool = True,
) -> RunSummary:
    """Create (or resume) the study and run ``n_trials`` more trials, or until ``timeout`` seconds.

    Raises:
        TaskError, SpaceError, DataError, StorageError, StudyError, ValueError: on bad input, before
            anything is written to the storage.
    """
    task = objectives.get_task(task_name)
    space = build_space(task, space_file, overrides)
    max_epochs = task.max_epochs(space)
    pruner_obj = make_pruner(pruner, max_epochs)
    make_sampler(sampler, seed)  # validates the name before anything is written
    if n_trials is not None and n_trials < 1:
        raise ValueError(f"--trials must be at least 1, but got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"--timeout must be positive, but got {timeout}")
    check_storage_url(storage)
    dataset = task.load_data(data, space.settings())
    optuna.logging.set_verbosity(logging.WARNING)
    storage_obj = get_storage(storage)
    study_name = study_name or task.name
    existing = _existing_attrs(storage_obj, study_name)
    if existing is not None:
        _check_compatible(existing, study_name, task, space, dataset)
    n_before = len(existing["_trials"]) if existing else 0
    study = optuna.create_study(
        study_name=study_name,
        storage=storage_obj,
        sampler=make_sampler(sampler, None if seed is None else seed + n_before),
        pruner=pruner_obj,
        direction=task.direction,
        load_if_exists=True,
    )
    if existing is None:
        _write_metadata(study, task, space, dataset, data, seed)
    study.set_user_attr("space", space.describe())
    ckpt_dir = study_dir(storage, study_name, checkpoints)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    context = objectives.TrialContext(checkpoint_dir=ckpt_dir, device=device)
    callbacks = [KeepTopCheckpoints(ckpt_dir, keep_top), _ProgressLine(task.metric, enabled=progress)]
    study.optimize(
        lambda trial: task.objective(trial, dataset, space, context),
        n_trials=n_trials,
        timeout=timeout,
        catch=(Exception,),
        callbacks=callbacks,
        gc_after_trial=False,
    )
    return summarize(study, storage, new_trials=len(study.trials) - n_before)


def load_study(storage: str, study_name: str) -> optuna.Study:
    """Load an existing study.

    Raises:
        StudyError: naming the studies that do exist.
    """
    storage_obj = get_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage_obj, include_best_trial=False)]
    if study_name not in names:
        known = ", ".join(names) or "none"
        raise StudyError(f"no study {study_name!r} in {storage}; studies there: {known}")
    return optuna.load_study(study_name=study_name, storage=storage_obj)


def study_dir(storage: str, study_name: str, checkpoints: str | Path | None = None) -> Path:
    """The folder holding one study's checkpoints."""
    return checkpoint_root(storage, checkpoints) / study_dirname(study_name)


def summarize(study: optuna.Study, storage: str, *, new_trials: int = 0) -> RunSummary:
    """Trial counts by state and the best trial of ``study``."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return RunSummary(
        study_name=study.study_name,
        storage=storage,
        task=str(study.user_attrs.get("task", "?")),
        metric=str(study.user_attrs.get("metric", "value")),
        new_trials=new_trials,
        counts=counts,
        best_value=None if best is None else best.value,
        best_trial=None if best is None else best.number,
    )


def _existing_attrs(storage: optuna.storages.BaseStorage, study_name: str) -> dict[str, Any] | None:
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    attrs = dict(storage.get_study_user_attrs(study_id))
    attrs["_trials"] = storage.get_all_trials(study_id, deepcopy=False)
    return attrs


def _check_compatible(
    attrs: dict[str, Any], name: str, task: objectives.Task, space: Space, dataset: Any
) -> None:
    if attrs.get("task") != task.name:
        raise StudyError(
            f"study {name!r} is a {attrs.get('task', 'non-rpztune')} study, not {task.name}; "
            "use another --study"
        )
    settings = attrs.get("settings", {})
    if settings != space.settings():
        raise StudyError(
            f"study {name!r} was created with settings {settings}, not {space.settings()}; "
            "settings cannot change within a study: start a new --study"
        )
    if attrs.get("data_fingerprint") != dataset.fingerprint:
        raise StudyError(
            f"study {name!r} was run on data {attrs.get('data_source')} (fingerprint "
            f"{attrs.get('data_fingerprint')}), but this data ({dataset.source}) has fingerprint "
            f"{dataset.fingerprint}; pass the study's --data or start a new --study"
        )


def _write_metadata(
    study: optuna.Study, task: objectives.Task, space: Space, dataset: Any, data: str | None, seed: int | None
) -> None:
    study.set_user_attr("rpztune_format", _FORMAT_VERSION)
    study.set_user_attr("task", task.name)
    study.set_user_attr("metric", task.metric)
    study.set_user_attr("settings", space.settings())
    study.set_user_attr("seed", 0 if seed is None else seed)
    study.set_user_attr("data", None if data is None else str(Path(data).resolve()))
    study.set_user_attr("data_source", dataset.source)
    study.set_user_attr("data_fingerprint", dataset.fingerprint)


class _ProgressLine:
    """Prints one line per finished trial to stderr: state, value, epoch reached, best so far, time."""

    def __init__(self, metric: str, *, enabled: bool) -> None:
        self.metric = metric
        self.enabled = enabled
        self.started = time.monotonic()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not self.enabled:
            return
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        if trial.state == TrialState.COMPLETE:
            what = f"{self.metric}={trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            what = trial.user_attrs.get("prune_reason", "pruned")
        else:
            what = trial.system_attrs.get("fail_reason", "failed").splitlines()[0][:100]
        try:
            best = f"best {study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        print(
            f"[{study.study_name}] trial {trial.number:4d} {trial.state.name:8s} {what} | {best} | "
            f"{seconds:.1f}s, {time.monotonic() - self.started:.0f}s total",
            file=sys.stderr,
            flush=True,
        )
