"""How soon a worker on another machine is declared dead: the heartbeat settings a study stores.

With an RDB storage (PostgreSQL, MySQL, SQLite) every running trial's worker writes a heartbeat every
``interval`` seconds; a RUNNING trial whose last heartbeat is older than ``grace`` seconds is failed and
re-queued by any live worker: Optuna checks when a worker starts a trial, and :func:`watching_stale_trials`
every interval meanwhile, so a dead machine's trial is failed within grace + interval even while every
other worker is in the middle of a long trial. A study's grace is set by ``rpztune run --heartbeat-grace``
and stored as its ``heartbeat_grace`` attribute, so every worker, on every machine, uses the same one.
A trial whose worker process is alive on the checking worker's host is never stale (a worker's storage,
:class:`~search.write_behind.WriteBehindStorage`, leaves it out): load can delay a heartbeat, not kill it.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import TrialState

from objectives.optuna_internals import backend_of, heartbeat_enabled, study_storage
from search.engine.storage import GRACE_PERIOD_S as DEFAULT_GRACE_S

__all__ = [
    "DEFAULT_GRACE_S",
    "MIN_GRACE_S",
    "apply_heartbeat",
    "check_grace",
    "interval_for",
    "taken_over",
    "watching_stale_trials",
]

MIN_GRACE_S = 3


def check_grace(grace: int | None) -> None:
    """Raises ``ValueError`` for a grace under ``MIN_GRACE_S`` seconds (``None``: the default)."""
    if grace is not None and grace < MIN_GRACE_S:
        raise ValueError(f"--heartbeat-grace must be at least {MIN_GRACE_S} seconds, but got {grace}")


def interval_for(grace: int) -> int:
    """Seconds between heartbeats: a third of the grace, so two may be lost before a trial is failed."""
    return max(1, grace // 3)


def apply_heartbeat(backend: optuna.storages.BaseStorage, grace: int | None) -> None:
    """Give an RDB storage the study's grace (``None``: keep the default); other storages have none."""
    if grace is None or not isinstance(backend, RDBStorage):
        return
    backend.heartbeat_interval = interval_for(grace)
    backend.grace_period = grace


def taken_over(study: optuna.Study, trial_id: int | None) -> bool:
    """Whether this worker's trial ``trial_id`` was failed by another worker meanwhile: its heartbeats did not
    reach the storage within the grace (a lost connection), so the trial was re-queued and runs elsewhere."""
    if trial_id is None:
        return False
    storage = backend_of(study_storage(study))  # the stored state, not a cache of this worker's own
    return storage.get_trial(trial_id).state == TrialState.FAIL


@contextlib.contextmanager
def watching_stale_trials(study: optuna.Study) -> Iterator[None]:
    """While the block runs, fail and re-queue ``study``'s stale trials every heartbeat interval."""
    storage = study_storage(study)
    if not heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(storage.get_heartbeat_interval()):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    fail_stale_trials(study)
            except Exception:  # the storage is unreachable for now: the next beat tries again
                continue

    # A daemon, never joined: a call hanging on a lost connection must not keep the worker from exiting.
    threading.Thread(target=watch, name="rpztune-stale-trials", daemon=True).start()
    try:
        yield
    finally:
        stop.set()
