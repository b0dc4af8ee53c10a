"""Heartbeat settings stored with a study, the stale-trial watcher, a trial taken over by another worker."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main
from search.heartbeat import apply_heartbeat, check_grace, taken_over, watching_stale_trials
from search.storage import get_storage

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")


def test_heartbeat_grace_below_the_minimum_is_refused_before_the_storage_is_written(tmp_path, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["run", "numpy-mlp", "--heartbeat-grace", "1", "--storage", storage]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "rpztune run: error: --heartbeat-grace must be at least 3 seconds, but got 1"
    ]
    assert not (tmp_path / "s.db").exists()
    check_grace(None)


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


@pytest.mark.parametrize("url", ["journal:///{}/j.log"])
def test_heartbeat_settings_leave_storages_without_heartbeats_alone(tmp_path, url) -> None:
    storage = get_storage(url.format(tmp_path))
    apply_heartbeat(storage, 3)
    study = optuna.create_study(storage=storage)
    with watching_stale_trials(study):
        pass
