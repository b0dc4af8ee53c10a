"""Heartbeat settings stored with a study, the stale-trial watcher, a trial taken over by another worker."""

from __future__ import annotations

import subprocess
import threading
import time

import optuna
import pytest
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from search.cli import main
from search.engine.heartbeat import apply_heartbeat, check_grace, taken_over, watching_stale_trials
from search.engine.recovery import worker_identity
from search.engine.storage import get_storage
from search.engine.write_behind import write_behind

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")


def test_heartbeat_grace_below_the_minimum_is_refused_before_the_storage_is_written(tmp_path, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert main([*RUN, "numpy-mlp", "--heartbeat-grace", "1", "--storage", storage]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "rpztune run: error: --heartbeat-grace must be at least 3 seconds, but got 1"
    ]
    assert not (tmp_path / "s.db").exists()
    check_grace(None)


@pytest.mark.slow
def test_heartbeat_watcher_fails_and_requeues_a_silent_trial_within_grace_and_interval(tmp_path) -> None:
    storage = get_storage(f"sqlite:///{tmp_path / 's.db'}")
    apply_heartbeat(storage, 3)
    assert (storage.heartbeat_interval, storage.grace_period) == (1, 3)
    study = optuna.create_study(storage=storage)
    silent = study.ask()
    storage.record_heartbeat(silent._trial_id)  # its worker beat once, then went silent (a lost machine)
    started = time.monotonic()
    state = lambda: storage.get_trial(silent._trial_id).state  # noqa: E731
    with watching_stale_trials(study):
        while state() == TrialState.RUNNING and time.monotonic() < started + 30:
            time.sleep(0.1)
    waited = time.monotonic() - started
    assert state() == TrialState.FAIL
    assert 3 <= waited <= 3 + 1 + 10, f"failed after {waited:.1f} s (grace 3, interval 1, slack 10)"
    for _ in range(100):  # the watcher queues the retry just after failing the trial
        retry = study.get_trials(states=(TrialState.WAITING,))
        if retry:
            break
        time.sleep(0.1)
    assert [t.system_attrs["failed_trial"] for t in retry] == [silent.number]
    assert taken_over(study, silent._trial_id) and not taken_over(study, None)


@pytest.mark.slow
def test_heartbeat_watcher_leaves_a_beating_trial_alone(tmp_path) -> None:
    storage = get_storage(f"sqlite:///{tmp_path / 's.db'}")
    apply_heartbeat(storage, 3)
    study = optuna.create_study(storage=storage)
    alive = study.ask()
    with watching_stale_trials(study):
        for _ in range(10):  # 5 s: past the grace
            storage.record_heartbeat(alive._trial_id)
            time.sleep(0.5)
    assert storage.get_trial(alive._trial_id).state == TrialState.RUNNING
    assert not taken_over(study, alive._trial_id)


@pytest.mark.slow
def test_heartbeat_watcher_fails_a_late_trial_only_when_its_worker_is_not_alive_here(tmp_path) -> None:
    """A heartbeat past the grace fails another host's trial, but not one whose worker process is alive here:
    this process's own, or a sibling's (a loaded machine delays heartbeat writes); the sibling's fails once
    that process is gone."""
    backend = get_storage(f"sqlite:///{tmp_path / 's.db'}")
    apply_heartbeat(backend, 3)
    study = optuna.create_study(storage=write_behind(backend), study_name="s")
    own = study.ask()  # this worker's trial (its write-behind storage knows it)
    direct = optuna.load_study(study_name="s", storage=backend)  # as another process would write them
    sibling_process = subprocess.Popen(["sleep", "120"])
    try:
        trials = {"own": own, "sibling": direct.ask(), "remote": direct.ask()}
        here = worker_identity()
        workers = {
            "sibling": {**here, "pid": sibling_process.pid, "started": None},
            "remote": {**here, "host": here["host"] + "-elsewhere"},
        }
        for name, trial in trials.items():
            if name in workers:
                worker = {**workers[name], "trial": trial.number}
                backend.set_trial_user_attr(trial._trial_id, "worker", worker)
            backend.record_heartbeat(trial._trial_id)  # each beat once, then none of them again
        state = lambda name: backend.get_trial(trials[name]._trial_id).state  # noqa: E731
        with watching_stale_trials(study):
            started = time.monotonic()
            while state("remote") == TrialState.RUNNING and time.monotonic() < started + 30:
                time.sleep(0.1)
            time.sleep(2.5)  # two more watcher passes (interval 1 s) over the late local trials
            assert (state("remote"), state("own"), state("sibling")) == (
                TrialState.FAIL,
                TrialState.RUNNING,
                TrialState.RUNNING,
            )
            sibling_process.kill()
            sibling_process.wait()
            started = time.monotonic()
            while state("sibling") == TrialState.RUNNING and time.monotonic() < started + 30:
                time.sleep(0.1)
            assert state("sibling") == TrialState.FAIL and state("own") == TrialState.RUNNING
    finally:
        sibling_process.kill()
        sibling_process.wait()


@pytest.mark.parametrize("url", ["journal:///{}/j.log"])
def test_heartbeat_settings_leave_storages_without_heartbeats_alone(tmp_path, url) -> None:
    storage = get_storage(url.format(tmp_path))
    apply_heartbeat(storage, 3)
    assert not is_heartbeat_enabled(storage), "a storage without heartbeats gets none"
    assert not hasattr(storage, "grace_period") and not hasattr(storage, "heartbeat_interval")
    study = optuna.create_study(storage=storage)
    trial = study.ask()  # never beats: with heartbeats it would be failed after the grace
    before = set(threading.enumerate())
    with watching_stale_trials(study):
        started = [t.name for t in threading.enumerate() if t not in before]
    assert started == [], "no watcher thread for a storage without heartbeats"
    assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING
