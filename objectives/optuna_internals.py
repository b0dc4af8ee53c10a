"""The Optuna internals rpztune relies on, in one place, for the Optuna versions pyproject.toml pins.

Optuna has no public API for these; each is imported or reached here and nowhere else, and
``tests/objectives_tests/test_optuna_internals.py`` fails when an Optuna release changes one of them:

- the storage behind a cache (``_CachedStorage._backend``);
- a trial's storage id (``Trial._trial_id``, ``FrozenTrial._trial_id``) and a study's storage object
  (``Study._storage``): storage calls of a trial another process runs (recovery, resume, confirmation);
- ``is_heartbeat_enabled``: whether a storage writes heartbeats;
- ``_CachedStorage`` and ``_StudyInfo``: the base of the write-behind storage
  (:mod:`search.engine.write_behind`), which also uses the members :data:`CACHED_STORAGE_MEMBERS` and
  :data:`RDB_STORAGE_MEMBERS` of its base and of ``RDBStorage``;
- ``_create_scoped_session`` and the ORM models of ``optuna.storages._rdb``: one transaction per flush.
"""

from __future__ import annotations

from types import ModuleType

import optuna
from optuna.storages import BaseStorage
from optuna.storages._cached_storage import _CachedStorage as CachedStorage
from optuna.storages._cached_storage import _StudyInfo as StudyInfo
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.storages._rdb.storage import _create_scoped_session as create_scoped_session

__all__ = [
    "CACHED_STORAGE_MEMBERS",
    "RDB_STORAGE_MEMBERS",
    "CachedStorage",
    "StudyInfo",
    "backend_of",
    "create_scoped_session",
    "heartbeat_enabled",
    "rdb_models",
    "study_storage",
    "trial_id",
]

# What the write-behind storage uses of the classes it builds on (checked by the test above).
CACHED_STORAGE_MEMBERS = (
    "_backend",
    "_lock",
    "_studies",
    "_add_trials_to_cache",
    "_read_trials_from_remote_storage",
    "_trial_id_to_study_id_and_number",
)
RDB_STORAGE_MEMBERS = (
    "_get_stale_trial_ids",
    "_create_new_trial",
    "_set_trial_intermediate_value_without_commit",
    "_set_trial_attr_without_commit",
    "check_trial_is_updatable",
    "scoped_session",
)


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of ``trial`` (not its number, which counts within its study)."""
    return trial._trial_id


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object ``study`` reads and writes through."""
    return study._storage


def backend_of(storage: BaseStorage) -> BaseStorage:
    """The storage behind Optuna's (or the write-behind) cache: what is stored, not what this process
    remembers of its own trials; ``storage`` itself when it is no cache."""
    return getattr(storage, "_backend", storage)


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether ``storage`` writes heartbeats of running trials."""
    return is_heartbeat_enabled(storage)


def rdb_models() -> ModuleType:
    """Optuna's SQLAlchemy ORM models (imported on call: processes that never write skip the ORM)."""
    from optuna.storages._rdb import models

    return models
