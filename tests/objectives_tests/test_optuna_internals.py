"""The Optuna internals behind objectives/optuna_internals.py still exist and behave as rpztune uses them.

This test fails first when an Optuna release outside the range pyproject.toml pins changes one of them.
"""

from __future__ import annotations

import optuna
from optuna.storages import RDBStorage

from objectives import optuna_internals as internals


def _storage(tmp_path) -> RDBStorage:
    return RDBStorage(f"sqlite:///{tmp_path / 'internals.db'}", heartbeat_interval=60)


def test_every_member_the_write_behind_storage_uses_exists(tmp_path) -> None:
    backend = _storage(tmp_path)
    cached = internals.CachedStorage(backend)
    for name in internals.CACHED_STORAGE_MEMBERS:
        assert hasattr(cached, name), f"_CachedStorage lost {name}"
    for name in internals.RDB_STORAGE_MEMBERS:
        assert hasattr(backend, name), f"RDBStorage lost {name}"
    assert {"trials", "unfinished_trial_ids", "name", "directions"} <= set(internals.StudyInfo().__dict__)


def test_ids_storage_heartbeat_and_orm_round_trip(tmp_path) -> None:
    backend = _storage(tmp_path)
    study = optuna.create_study(study_name="s", storage=backend)
    wrapped = internals.study_storage(study)  # Optuna wraps an RDBStorage in its cache
    assert isinstance(wrapped, internals.CachedStorage) and internals.backend_of(wrapped) is backend
    assert internals.backend_of(backend) is backend
    assert internals.heartbeat_enabled(wrapped) and internals.heartbeat_enabled(backend)
    assert not internals.heartbeat_enabled(optuna.storages.InMemoryStorage())

    trial = study.ask()
    assert internals.trial_id(trial) == internals.trial_id(study.trials[0])
    assert backend.get_trial(internals.trial_id(trial)).number == trial.number

    models = internals.rdb_models()
    with internals.create_scoped_session(backend.scoped_session) as session:
        row = session.query(models.TrialModel).filter_by(trial_id=internals.trial_id(trial)).one()
        assert row.number == trial.number
        assert row.state == optuna.trial.TrialState.RUNNING
