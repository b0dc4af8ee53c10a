"""The study engine: create or resume a task's study and run trials on it.

Everything that can be wrong with the user's input (task, space, sampler, pruner, data, storage URL) is
checked before the storage is written, so a mistake leaves the storage as it was.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

import objectives
from search.engine.algorithms import make_sampler, study_pruner
from search.engine.heartbeat import check_grace
from search.engine.progress import ProgressBoard
from search.engine.storage import (
    DEFAULT_STORAGE,
    check_storage_url,
    check_writable,
    checkpoint_root,
    get_storage,
    open_existing,
    storage_exists,
    study_dirname,
)
from search.engine.workers import WorkerSpec, available_cores, run_workers
from spaces import Space, parse_assignment

__all__ = [
    "Execution",
    "RunSummary",
    "StudyError",
    "build_space",
    "join_study",
    "load_study",
    "run_study",
    "study_dir",
]

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
    reasons: dict[str, int] = field(default_factory=dict)  # why trials ended pruned or failed, with counts
    at_deadline: list[str] = field(default_factory=list)  # this run's trials the deadline ended, in words


def build_space(task: objectives.Task, space_file: str | Path | None, overrides: Sequence[str]) -> Space:
    """The task's space with a TOML file's and then ``--set key=value`` overrides applied."""
    space = task.space
    if space_file is not None:
        space = space.with_file(space_file)
    if overrides:
        space = space.with_overrides(dict(parse_assignment(text) for text in overrides))
    return space


WORKERS_PER_CORE = 4  # trials are CPU-bound: more workers than this only queue for the cores
WORKER_MB = 256  # resident memory of a numpy-mlp worker after its imports (a torch task's: more)


def max_workers() -> int:
    """The most worker processes ``run`` starts on this machine (by its cores and its RAM)."""
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    return max(1, min(WORKERS_PER_CORE * available_cores(), ram_mb // WORKER_MB))


@dataclass(frozen=True)
class Execution:
    """How one invocation runs trials, whatever the study.

    Args:
        n_trials: Trials this invocation runs across all its workers (``None``: until ``timeout``/Ctrl-C).
        timeout: Seconds after which no new trial starts.
        workers: Worker processes (1: in this process).
        threads: BLAS/torch threads per worker (default: cores // workers, capped by the task).
        checkpoints: Checkpoint folder (default: beside a file storage).
        keep_top: Checkpoints kept, of the best completed trials.
        device: Torch device for torch tasks: ``auto``, ``cpu`` or ``cuda``.
        progress: Live per-worker lines (default: when stderr is a terminal).
        timed_trials: Trials see ``timeout`` and plan to end by it (mynet's rungs, finetune's stages and
            epochs); ``False``: it only stops new trials (a bench's slices of one longer run).
        deadline: The ``time.time()`` at which ``timeout`` ends, when the caller fixed it before loading
            anything (the pipeline's search stage); default: ``timeout`` from when the workers start.
    """

    n_trials: int | None = None
    timeout: float | None = None
    workers: int = 1
    threads: int | None = None
    checkpoints: str | Path | None = None
    keep_top: int = 5
    device: str = "auto"
    progress: bool | None = None
    timed_trials: bool = True
    deadline: float | None = None

    def check(self) -> None:
        """Raises ``ValueError`` naming the first out-of-range setting."""
        if self.n_trials is not None and self.n_trials < 1:
            raise ValueError(f"--trials must be at least 1, but got {self.n_trials}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"--timeout must be positive, but got {self.timeout}")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, but got {self.workers}")
        if self.workers > max_workers():
            raise ValueError(
                f"--workers {self.workers} is more than this machine can run: at most {max_workers()} "
                f"({WORKERS_PER_CORE} per core on {available_cores()} cores, {WORKER_MB} MiB of RAM each)"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, but got {self.threads}")
        if self.keep_top < 1:
            raise ValueError(f"--keep-top must be at least 1, but got {self.keep_top}")
        if self.device != "auto":  # "auto" is always valid; the check imports torch
            from objectives.training.fit import resolve_device

            resolve_device(self.device)  # --device cuda without CUDA: one error now, not a failed trial each


def run_study(
    task_name: str,
    *,
    study_name: str | None = None,
    storage: str = DEFAULT_STORAGE,
    sampler: str | None = None,
    pruner: str | None = None,
    seed: int | None = None,
    data: str | None = None,
    space_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    baseline: bool = True,
    heartbeat_grace: int | None = None,
    **execution: Any,
) -> RunSummary:
    """Create (or resume) the study of ``task_name`` and run trials on it.

    Args:
        sampler: A name of ``search.engine.algorithms.SAMPLERS`` (``None``: the study's, else ``tpe``).
        pruner: A name of ``search.engine.algorithms.PRUNERS`` (``None``: the study's, else the task's
            ``default_pruner``).
        space_file, overrides: The space of a new study; a study resumed without them keeps its own, and one
            resumed with a different space (or sampler, or pruner) is refused: its trials would mix.
        baseline: Enqueue the task's known-good configuration (``Task.baseline``, as far as the space draws
            it) as a new study's first trial.
        heartbeat_grace: Seconds without a heartbeat after which a worker's trial is failed and retried
            (RDB storages; stored with the study for every worker; default 30).
        execution: Fields of :class:`Execution` (``n_trials``, ``timeout``, ``workers``, ...).

    Raises:
        TaskError, SpaceError, DataError, StorageError, StudyError, ValueError: on bad input, before
            anything is written to the storage.
    """
    task = objectives.get_task(task_name)
    space = build_space(task, space_file, overrides)
    run = Execution(**execution)
    run.check()
    check_grace(heartbeat_grace)
    if study_name is not None and not study_name.strip():
        raise StudyError("--study must name a study (leave it out to use the task's name)")
    check_storage_url(storage)
    check_writable(storage, run.checkpoints)
    study_name = study_name or task.name
    existing = _existing_attrs(get_storage(storage), study_name) if storage_exists(storage) else None
    if existing is not None and "space" in existing and space_file is None and not overrides:
        space = task.space.with_overrides(existing["space"], origin=f"study {study_name!r}")  # as created
    sampler = _same_as_stored(existing, study_name, "sampler", sampler) or "tpe"
    make_sampler(sampler, seed)  # bad names fail here, before anything is written
    pruner, built = study_pruner(task, space, _same_as_stored(existing, study_name, "pruner", pruner))
    dataset = task.load_data(data, space.settings())
    optuna.logging.set_verbosity(logging.WARNING)
    backend = get_storage(storage)
    if existing is not None:
        _check_compatible(existing, study_name, task, space, dataset)
    study = optuna.create_study(
        study_name=study_name, storage=backend, direction=task.direction, load_if_exists=True
    )
    if existing is None:
        _write_metadata(study, task, space, dataset, data, seed)
        fixed = space.searched(task.baseline or {}) if baseline else {}
        if fixed:
            study.enqueue_trial(fixed, user_attrs={"baseline": True})
    study.set_user_attr("space", space.describe())
    study.set_user_attr("sampler", sampler)
    study.set_user_attr("pruner", pruner)
    if heartbeat_grace is not None:
        study.set_user_attr("heartbeat_grace", heartbeat_grace)
    return _execute(
        study, storage, task, space, data, sampler, built, seed, dataset.fingerprint, run, dataset
    )


def join_study(study_name: str, *, storage: str, data: str | None = None, **execution: Any) -> RunSummary:
    """Join an existing study (e.g. from another machine) with its stored task, space, sampler and data.

    Args:
        data: This machine's copy of the data (default: the path stored in the study); it must have
            the study's fingerprint.
        execution: Fields of :class:`Execution`.

    Raises:
        StudyError: when the study does not exist or was not made by ``rpztune run``.
        DataError: when this machine's data differs from the study's.
    """
    run = Execution(**execution)
    run.check()
    study = load_study(storage, study_name)
    check_writable(storage, run.checkpoints)
    attrs = study.user_attrs
    if "task" not in attrs or "space" not in attrs:
        raise StudyError(f"study {study_name!r} was not created by rpztune run; it cannot be joined")
    task = objectives.get_task(attrs["task"])
    space = task.space.with_overrides(attrs["space"], origin=f"study {study_name!r}")
    data = data if data is not None else attrs.get("data")
    _, pruner = study_pruner(task, space, attrs.get("pruner"))
    fingerprint = attrs.get("data_fingerprint")
    return _execute(
        study, storage, task, space, data, attrs.get("sampler", "tpe"), pruner, None, fingerprint, run
    )


def _execute(
    study: optuna.Study,
    storage: str,
    task: objectives.Task,
    space: Space,
    data: str | None,
    sampler: str,
    pruner: optuna.pruners.BasePruner,
    seed: int | None,
    fingerprint: str | None,
    execution: Execution,
    dataset: Any = None,
) -> RunSummary:
    n_before = _started(study)
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING}
    # no more workers than trials; but a run asked for worker processes keeps trials out of its own (two)
    workers = min(execution.workers, max(execution.n_trials or execution.workers, 2))
    threads = max(1, available_cores() // workers)
    if task.max_threads is not None:
        threads = min(threads, task.max_threads)
    spec = WorkerSpec(
        task=task.name,
        study_name=study.study_name,
        storage=storage,
        data=data,
        space=space.describe(),
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        fingerprint=fingerprint,
        checkpoints=None if execution.checkpoints is None else str(execution.checkpoints),
        keep_top=execution.keep_top,
        device=execution.device,
        threads=execution.threads or threads,  # an explicit --threads wins over the task's cap
        deadline=execution.deadline
        or (None if execution.timeout is None else time.time() + execution.timeout),
        timeout=execution.timeout,
        timed_trials=execution.timed_trials,
        heartbeat_grace=study.user_attrs.get("heartbeat_grace"),
    )
    board = ProgressBoard(workers, task.metric, enabled=execution.progress)
    try:
        run_workers(spec, execution.n_trials, workers, board, dataset=dataset)
    finally:
        board.close()
    return summarize(study, storage, new_trials=_started(study) - n_before, before=before)


def _started(study: optuna.Study) -> int:
    # Trials that ran or run; a WAITING one (the baseline, a queued retry) is counted when a worker takes it.
    return sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))


def load_study(storage: str, study_name: str) -> optuna.Study:
    """Load an existing study (never creating a storage).

    Raises:
        StudyError: naming the studies that do exist.
        StorageError: when the storage does not exist or cannot be opened.
    """
    if not storage_exists(storage):
        raise StudyError(f"no study {study_name!r} in {storage}: the file does not exist")
    backend = open_existing(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)]
    if study_name not in names:
        known = ", ".join(names) or "none"
        raise StudyError(f"no study {study_name!r} in {storage}; studies there: {known}")
    return optuna.load_study(study_name=study_name, storage=backend)


def study_dir(storage: str, study_name: str, checkpoints: str | Path | None = None) -> Path:
    """The folder holding one study's checkpoints."""
    return checkpoint_root(storage, checkpoints) / study_dirname(study_name)


def summarize(
    study: optuna.Study, storage: str, *, new_trials: int = 0, before: set[int] | None = None
) -> RunSummary:
    """Trial counts by state and the best trial of ``study``; with ``before`` (the trial numbers that had
    started before this run), what the deadline did to this run's trials."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    reasons: dict[str, int] = {}
    for trial in trials:
        reason = trial.user_attrs.get("prune_reason") or trial.user_attrs.get("fail_reason")
        if reason and trial.state in (TrialState.PRUNED, TrialState.FAIL):
            reasons[str(reason)] = reasons.get(str(reason), 0) + 1
    return RunSummary(
        study_name=study.study_name,
        storage=storage,
        task=str(study.user_attrs.get("task", "?")),
        metric=str(study.user_attrs.get("metric", "value")),
        new_trials=new_trials,
        counts=counts,
        best_value=None if best is None else best.value,
        best_trial=None if best is None else best.number,
        reasons=reasons,
        at_deadline=[] if before is None else _deadline_lines(trials, before),
    )


def _deadline_lines(trials: list[optuna.trial.FrozenTrial], before: set[int]) -> list[str]:
    """One line per trial of this run that the deadline ended: where it stopped and what it became."""
    lines = []
    for trial in trials:
        where = trial.user_attrs.get("deadline_stop")
        if trial.number in before or not where:
            continue
        if trial.state == TrialState.COMPLETE:
            outcome = f"completed with {trial.value:.4f} (best epoch {trial.user_attrs.get('best_epoch')})"
        else:
            outcome = f"{trial.state.name.lower()}: {trial.user_attrs.get('prune_reason', 'no valid value')}"
        lines.append(f"trial {trial.number} was running when the time was up ({where}); {outcome}")
    return lines


def _existing_attrs(backend: optuna.storages.BaseStorage, study_name: str) -> dict[str, Any] | None:
    try:
        study_id = backend.get_study_id_from_name(study_name)
    except KeyError:
        return None
    return dict(backend.get_study_user_attrs(study_id))


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
        raise StudyError(f"study {name!r} {_settings_change(settings, space.settings())}")
    change = _space_change(attrs.get("space", {}), json.loads(json.dumps(space.describe())))
    if "space" in attrs and change is not None:
        raise StudyError(
            f"study {name!r} searches another space ({change}): its trials would mix two searches; run it "
            "with its own --space/--set (or none: it keeps its own), or start a new --study"
        )
    if attrs.get("data_fingerprint") != dataset.fingerprint:
        raise StudyError(
            f"study {name!r} was run on data {attrs.get('data_source')} (fingerprint "
            f"{attrs.get('data_fingerprint')}), but this data ({dataset.source}) has fingerprint "
            f"{dataset.fingerprint}; pass the study's --data or start a new --study"
        )


def _same_as_stored(existing: dict[str, Any] | None, name: str, what: str, asked: str | None) -> str | None:
    """The study's stored sampler or pruner when this run asks none; a different one is refused."""
    stored = None if existing is None else existing.get(what)
    if asked is not None and stored is not None and asked != stored:
        raise StudyError(
            f"study {name!r} searches with the {what} {stored!r}, not {asked!r}: its trials would mix two "
            f"searches; leave --{what} out to resume it, or start a new --study"
        )
    return asked or stored


def _space_change(stored: dict[str, Any], requested: dict[str, Any]) -> str | None:
    """The first searched key whose range differs between a study's stored space and this run's."""
    for key in sorted({*stored, *requested}):
        if stored.get(key, ...) != requested.get(key, ...):
            return f"{key}: {stored.get(key, 'absent')!r} (this run: {requested.get(key, 'absent')!r})"
    return None


def _settings_change(stored: dict[str, Any], requested: dict[str, Any]) -> str:
    """What differs between a study's stored settings and this run's, and how to resume it (a default that
    changed since the study was created shows up here too)."""
    keys = [key for key in sorted({*stored, *requested}) if stored.get(key, ...) != requested.get(key, ...)]
    shown = ", ".join(
        f"{key}={stored[key]!r} (this run: {requested.get(key)!r})"
        if key in stored
        else f"no {key} (this run: {requested[key]!r})"
        for key in keys
    )
    resume = " ".join(
        f"--set {key}={str(stored[key]).lower() if isinstance(stored[key], bool) else stored[key]}"
        for key in keys
        if stored.get(key) is not None and key in requested
    )
    hint = f"pass {resume} to resume it, or start a new --study" if resume else "start a new --study"
    return f"was created with {shown}; settings cannot change within a study: {hint}"


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
