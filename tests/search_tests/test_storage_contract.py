"""The write-behind storage keeps Optuna's storage contract (``optuna.storages.BaseStorage``).

Optuna ships its storage test suite for storages written outside Optuna
(``optuna.testing.pytest_storages.StorageTestCase``); it runs here against
``write_behind(RDBStorage(sqlite))``.
Below it, the contract points of Optuna's cached storage and heartbeats that suite leaves out, and the
deviations that are by design, each tested as such.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.testing.pytest_storages import StorageTestCase

from search.engine.write_behind import WriteBehindStorage, write_behind


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[WriteBehindStorage]:
    backend = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'contract.db'}")
    wrapped = write_behind(backend)
    assert isinstance(wrapped, WriteBehindStorage)
    yield wrapped
    backend.engine.dispose()


@pytest.mark.slow  # 59 tests, about a minute on a 2-core machine
class TestWriteBehindKeepsOptunasStorageContract(StorageTestCase):
    """Every test of Optuna's own storage suite, against the write-behind storage."""


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


SETTINGS = [(5.0, 0.25), (0.0, 0.0), (3600.0, 3600.0)]  # (max_delay, refresh): the default, eager, lazy


@pytest.mark.parametrize(("max_delay", "refresh"), SETTINGS)
def test_contract_a_read_of_the_trials_sees_another_process_finish_this_ones_trial(
    max_delay: float, refresh: float, url: str
) -> None:
    """Optuna's cached-storage contract (its test_read_trials_from_remote_storage): a trial this process
    created and another process finished reads as finished after the next read of the study's trials."""
    backend = optuna.storages.RDBStorage(url)
    storage = write_behind(optuna.storages.RDBStorage(url), max_delay, refresh)
    study_id = storage.create_new_study(directions=[optuna.study.StudyDirection.MINIMIZE], study_name="s")
    storage._read_trials_from_remote_storage(study_id)
    with pytest.raises(KeyError):
        storage._read_trials_from_remote_storage(study_id + 1)
    trial_id = storage.create_new_trial(study_id)  # this process's running trial
    distribution = optuna.distributions.FloatDistribution(-0.2, 2.3)
    backend.set_trial_param(trial_id, "a", 1.2, distribution)
    backend.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, values=[0.0])
    storage._read_trials_from_remote_storage(study_id)
    trial = storage.get_trial(trial_id)
    assert (trial.state, trial.params, trial.value) == (optuna.trial.TrialState.COMPLETE, {"a": 1.2}, 0.0)
    assert storage.get_all_trials(study_id)[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize(("max_delay", "refresh"), SETTINGS)
def test_contract_a_trial_failed_elsewhere_reads_failed_once_its_tell_is_rejected(
    max_delay: float, refresh: float, url: str
) -> None:
    """Another process (a user's tell, a recovery) fails this worker's trial while it trains: the worker's
    tell is rejected and the trial then reads FAIL, never RUNNING (Optuna's _run_trial reads it back)."""
    other = optuna.storages.RDBStorage(url)
    storage = write_behind(optuna.storages.RDBStorage(url), max_delay, refresh)
    study = optuna.create_study(study_name="s", storage=storage)

    def objective(trial: optuna.Trial) -> float:
        trial.report(0.5, 1)  # held back (max_delay > 0): it cannot be stored any more
        other.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        return 1.0

    # Optuna 5.1 raises "Should not reach." for a completed objective whose trial is finished elsewhere
    # (its own cached storage does the same); workers.py goes on when heartbeat.taken_over says so.
    with pytest.raises((AssertionError, ValueError, optuna.exceptions.UpdateFinishedTrialError)):
        study.optimize(objective, n_trials=1)
    trial_id = study.trials[0]._trial_id
    assert storage.get_trial(trial_id).state == optuna.trial.TrialState.FAIL
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)  # the worker goes on
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]


def test_contract_a_trial_failed_elsewhere_reads_failed_within_refresh_without_a_write(url: str) -> None:
    other = optuna.storages.RDBStorage(url)
    storage = write_behind(optuna.storages.RDBStorage(url), refresh=0)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    assert storage.get_trial(trial._trial_id).state == optuna.trial.TrialState.RUNNING
    other.set_trial_user_attr(trial._trial_id, "fail_reason", "failed by a user")
    other.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    stored = storage.get_trial(trial._trial_id)
    assert (stored.state, stored.user_attrs) == (
        optuna.trial.TrialState.FAIL,
        {"fail_reason": "failed by a user"},
    )
    with pytest.raises(ValueError, match="Cannot tell a FAIL trial"):
        study.tell(trial, 1.0)


# --- deviations by design (search/engine/write_behind.py's docstring lists them)


def test_deviation_held_back_values_reach_other_processes_when_the_trial_ends(url: str) -> None:
    """Held back: within max_delay another process sees a trial's reports and attributes when it ends
    (Optuna's cached storage writes each at once)."""
    other = optuna.storages.RDBStorage(url)
    storage = write_behind(optuna.storages.RDBStorage(url), max_delay=3600)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.report(0.5, 1)
    trial.set_user_attr("epoch", 1)
    assert storage.get_trial(trial._trial_id).intermediate_values == {1: 0.5}  # this process sees them
    stored = other.get_trial(trial._trial_id)
    assert (stored.intermediate_values, stored.user_attrs) == ({}, {})  # another does not, yet
    study.tell(trial, 0.5)
    stored = other.get_trial(trial._trial_id)
    assert (stored.intermediate_values, stored.user_attrs) == ({1: 0.5}, {"epoch": 1})


def test_deviation_own_trial_reads_from_memory_until_the_study_is_read_again(url: str) -> None:
    """Own trial: within refresh this process answers its running trial from memory, however another
    process changed it; the next read of the study's trials shows the change."""
    other = optuna.storages.RDBStorage(url)
    storage = write_behind(optuna.storages.RDBStorage(url), refresh=3600)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    storage.get_all_trials(study._study_id)  # one read: fresh for the next hour
    other.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    assert storage.get_trial(trial._trial_id).state == optuna.trial.TrialState.RUNNING  # from memory
    storage._read_trials_from_remote_storage(study._study_id)
    assert storage.get_trial(trial._trial_id).state == optuna.trial.TrialState.FAIL


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_deviation_a_late_heartbeat_of_a_trial_alive_on_this_host_is_not_stale(url: str) -> None:
    """Own-host staleness: Optuna fails any trial whose heartbeat is older than the grace; this storage
    leaves out trials whose worker process is alive on this host (this process's own, here), and fails
    another host's. tests/search_tests/test_heartbeat.py covers a sibling process's trial."""
    backend = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    storage = write_behind(backend)
    study = optuna.create_study(study_name="s", storage=storage)
    own = study.ask()
    other = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))  # another host's
    elsewhere = other.ask()
    elsewhere.set_user_attr("worker", {"host": "another-host", "pid": 1, "trial": elsewhere.number})
    for trial in (own, elsewhere):
        backend.record_heartbeat(trial._trial_id)
    stale_after = time.monotonic() + 2.5  # the grace (1 s) past, by whole seconds of the database's clock
    while time.monotonic() < stale_after:
        time.sleep(stale_after - time.monotonic())
    assert set(backend._get_stale_trial_ids(study._study_id)) == {own._trial_id, elsewhere._trial_id}
    assert storage._get_stale_trial_ids(study._study_id) == [elsewhere._trial_id]
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state.name for t in optuna.load_study(study_name="s", storage=backend).trials}
    assert states == {0: "RUNNING", 1: "FAIL"}
