"""Recovering from dead workers: who runs a trial, and failing (then retrying) the trials of the dead.

Heartbeats (RDB storages) catch dead workers anywhere after the grace period. On the worker's own host
we need not wait: every trial records ``host``/``pid``/process start time (and its own number) in
its ``worker`` user attribute, and a RUNNING trial whose process is gone is failed at once and
re-queued with its parameters (Optuna's retry callback), so no RUNNING ghost outlives the next run.
A retry inherits its original's user attributes except ``fail_reason`` (a retry that completes did not fail).
"""

from __future__ import annotations

import copy
import os
import socket
import warnings
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from objectives.optuna_internals import study_storage, trial_id

__all__ = [
    "MAX_RETRY",
    "alive_here",
    "recover_orphans",
    "retry_callback",
    "trials_lost_with",
    "worker_identity",
]

MAX_RETRY = 2


class _Retry(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a failed trial, without the failed trial's ``fail_reason``."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if "fail_reason" in trial.user_attrs:
            trial = copy.copy(trial)
            trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"}
        super().__call__(study, trial)


def retry_callback(max_retry: int = MAX_RETRY) -> RetryHeartbeatStaleTrialCallback:
    """The callback that re-queues a dead worker's trial (up to ``max_retry`` times), built quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _Retry(max_retry=max_retry)


def worker_identity() -> dict[str, Any]:
    """This process as a trial records it: host name, pid and the process's start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _process_start(pid)}


def recover_orphans(study: optuna.Study, *, pids: set[int] | None = None) -> list[int]:
    """Fail this host's RUNNING trials whose worker process is gone, and re-queue each (up to MAX_RETRY).

    Args:
        study: The study to clean.
        pids: Only consider trials of these process ids (e.g. a child that just died).

    Returns:
        The numbers of the trials that were failed.
    """
    host = socket.gethostname()
    storage = study_storage(study)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = _worker_here(trial)
        if worker is None:
            continue
        pid = int(worker.get("pid", -1))
        if pids is not None and pid not in pids:
            continue
        if _alive(pid, worker.get("started")):
            continue
        reason = f"worker process {pid} on {host} died while running this trial"
        try:
            storage.set_trial_user_attr(trial_id(trial), "fail_reason", reason)
            if not storage.set_trial_state_values(trial_id(trial), TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished (or another worker failed it) meanwhile
        retry_callback()(study, storage.get_trial(trial_id(trial)))
        failed.append(trial.number)
    return failed


def alive_here(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` is run by a live process on this host (its ``worker`` attribute): such a trial is
    not stale however late its heartbeat (a loaded machine can delay a heartbeat write past the grace)."""
    worker = _worker_here(trial)
    return worker is not None and _alive(int(worker.get("pid", -1)), worker.get("started"))


def _worker_here(trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    """The trial's ``worker`` attribute when it names a process on this host that started this trial."""
    worker = trial.user_attrs.get("worker")
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return None
    if worker.get("trial") != trial.number:
        return None  # a retry that inherited its failed original's attrs and has not started yet
    return worker


def trials_lost_with(study: optuna.Study, pid: int) -> list[int]:
    """The trials this host's process ``pid`` was running when it died, whoever failed them first (this
    process's parent, or a worker that started meanwhile and cleaned the study)."""
    host = socket.gethostname()
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        worker = trial.user_attrs.get("worker")
        if not isinstance(worker, dict) or worker.get("trial") != trial.number:
            continue
        if worker.get("host") == host and worker.get("pid") == pid:
            if trial.user_attrs.get("fail_reason", "").startswith(f"worker process {pid} "):
                lost.append(trial.number)
    return lost


def _process_start(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _stat(pid: int) -> list[str] | None:
    # /proc/PID/stat after the command name: state is field 0, start time (clock ticks) field 19.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc (not Linux): trust the signal check
    if fields[0] == "Z":
        return False  # exited, not yet reaped
    return started is None or int(fields[19]) == started
