"""Fewer storage round trips per trial: a worker's own short trial is written behind, in one transaction.

Optuna writes every report, pruner rung and user attribute of a trial as its own SQL transaction (on SQLite a
commit each) and reads the running trial back from the database several times per epoch. A worker knows
its own running trial, so :class:`WriteBehindStorage` keeps it in memory and answers reads of it locally.
During a trial's first ``max_delay`` seconds its intermediate values and user/system attributes are held
back and written together: when the trial ends, when a parameter is written (parameters go at once: a
retried trial needs them), or at its first write after those seconds; from then on every write goes
through at once, so other workers see a long trial's epochs as Optuna alone would show them. A flush is one
transaction of multi-row upserts (one check that the trial is still running, not one per value).

Reads: the study's user attributes are read once per worker. ``get_all_trials`` and reads of this process's
running trial read the study's trials from the database at most once per ``refresh`` seconds (and always
after this process finished a trial): the several reads of one ask (the trial queue, the sampler's search
space, its history, the pruner) share one, so a sampler sees the study as it was at most ``refresh`` seconds
before, which Optuna's own parallel workers risk as well between their ask and their first suggestion.
Everything else goes to Optuna's cached RDB storage.

Optuna's storage contract holds (``tests/search_tests/test_storage_contract.py`` runs Optuna's storage
suite against this storage), except where this storage differs by design:

- held back: another process sees a short trial's intermediate values and user/system attributes when
  the trial ends (or writes a parameter, or passes ``max_delay``), not at once;
- own trial: this process reads its running trial from memory, and sees another process finish or fail it
  (a user's ``tell``, a recovery, a heartbeat) at its next read of the study's trials (at most ``refresh``
  seconds later), or at once when its next write of that trial is rejected (``UpdateFinishedTrialError``);
  from then on its reads answer the stored trial, as Optuna's cached storage does;
- stale trials: a trial whose worker process is alive on this host (this process's own or a sibling's) is
  never stale, however late its heartbeat (``_get_stale_trial_ids``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
import time
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from objectives.optuna_internals import CachedStorage, StudyInfo, create_scoped_session, rdb_models
from objectives.optuna_internals import trial_id as id_of
from search.engine.recovery import alive_here

__all__ = ["MAX_DELAY_S", "REFRESH_S", "WriteBehindStorage", "write_behind"]

MAX_DELAY_S = 5.0
REFRESH_S = 0.25
_LOCKED_TRIES = 6
_UPSERT = sqlite3.sqlite_version_info >= (3, 24, 0)  # INSERT ... ON CONFLICT DO UPDATE


@dataclass
class _Pending:
    intermediate: dict[int, float] = field(default_factory=dict)
    user: dict[str, Any] = field(default_factory=dict)
    system: dict[str, Any] = field(default_factory=dict)


def write_behind(
    storage: optuna.storages.BaseStorage, max_delay: float = MAX_DELAY_S, refresh: float = REFRESH_S
) -> Any:
    """``storage`` with its worker's trials written behind (SQLite; any other storage unchanged).

    Only one machine uses an SQLite file, so nobody else needs to see a trial's first seconds as they
    happen; on a server storage other machines watch them (progress, heartbeats, recovery), and its round
    trips are not the local file commits this saves."""
    if isinstance(storage, RDBStorage) and storage.engine.url.get_backend_name() == "sqlite":
        return WriteBehindStorage(storage, max_delay, refresh)
    return storage


class WriteBehindStorage(CachedStorage):
    """Optuna's cached RDB storage, with this process's running trials kept in memory and written behind.

    Args:
        backend: The RDB storage.
        max_delay: Seconds from a trial's start during which its values and attributes are held back.
        refresh: Seconds for which one read of a study's trials from the database answers the next reads.
    """

    def __init__(
        self, backend: RDBStorage, max_delay: float = MAX_DELAY_S, refresh: float = REFRESH_S
    ) -> None:
        super().__init__(backend)
        self.max_delay = max_delay
        self.refresh = refresh
        self._fresh_until: dict[int, float] = {}  # study id -> when its last read of trials gets stale
        self._own: dict[int, FrozenTrial] = {}  # this process's running trials, as they are now
        self._since: dict[int, float] = {}  # when this process took each of them (monotonic)
        self._pending: dict[int, _Pending] = {}
        self._study_attrs: dict[int, dict[str, Any]] = {}

    # --- the study's user attributes: read once per worker
    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        if study_id not in self._study_attrs:
            self._study_attrs[study_id] = super().get_study_user_attrs(study_id)
        return dict(self._study_attrs[study_id])

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        super().set_study_user_attr(study_id, key, value)
        if study_id in self._study_attrs:
            self._study_attrs[study_id][key] = value

    @staticmethod
    def _with_retry(write: Callable[[], bool], tries: int = _LOCKED_TRIES) -> bool:
        """``write()``, tried again when SQLite answered "database is locked" at once: a transaction whose
        read snapshot another process's commit made stale cannot wait for the lock (SQLITE_BUSY_SNAPSHOT,
        no busy timeout), so it starts over (SIGTERM: two workers failing trials at once)."""
        for attempt in range(tries):
            try:
                return write()
            except optuna.exceptions.StorageInternalError as exc:
                if attempt + 1 == tries or "database is locked" not in str(exc.__cause__):
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    # --- heartbeats: the trials Optuna fails as stale (at a trial's start; heartbeat.watching_stale_trials)
    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """The backend's stale trials, less those run by a live process on this host: this process's own
        trials and its siblings' (a heartbeat delayed by load is not a dead worker; a dead local worker's
        trial is failed at once by ``recovery.recover_orphans``, another host's by its heartbeat)."""
        stale = self._backend._get_stale_trial_ids(study_id)
        return [i for i in stale if i not in self._own and not alive_here(self._backend.get_trial(i))]

    # --- this process's running trials
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        # _CachedStorage.create_new_trial, keeping the created trial (no second read of it)
        trial = self._backend._create_new_trial(study_id, template_trial)
        with self._lock:
            if study_id not in self._studies:
                self._studies[study_id] = StudyInfo()
            self._add_trials_to_cache(study_id, [trial])
        if template_trial is None:  # study.ask(); a template is a trial queued for later (or any worker)
            self._own[id_of(trial)] = copy.deepcopy(trial)
            self._since[id_of(trial)] = time.monotonic()
        return id_of(trial)

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        self._flush(trial_id)
        with self._unless_finished_elsewhere(trial_id):
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        trial = self._own.get(trial_id)
        if trial is not None:
            trial.params = {**trial.params, param_name: distribution.to_external_repr(param_value_internal)}
            trial.distributions = {**trial.distributions, param_name: distribution}

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        if not self._defer(trial_id, "intermediate", step, intermediate_value):
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._defer(trial_id, "user", key, value):
            super().set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._defer(trial_id, "system", key, value):
            super().set_trial_system_attr(trial_id, key, value)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self._flush(trial_id)
        with self._unless_finished_elsewhere(trial_id):
            changed = self._with_retry(
                lambda: super(WriteBehindStorage, self).set_trial_state_values(trial_id, state, values)
            )
        if state == TrialState.RUNNING and changed:  # this process took a waiting trial
            self._own[trial_id] = self._backend.get_trial(trial_id)
            self._since[trial_id] = time.monotonic()
        elif state.is_finished():
            self._since.pop(trial_id, None)
            if self._own.pop(trial_id, None) is not None:  # the cache holds it as running: read it back
                self._read_trials_from_remote_storage(self._study_of(trial_id))  # for Optuna's next get_trial
        return changed

    def get_trial(self, trial_id: int) -> FrozenTrial:
        if trial_id in self._own:  # another process may have finished it: see so within ``refresh``
            self._refresh(self._study_of(trial_id))
        trial = self._own.get(trial_id)
        return _copy(trial) if trial is not None else super().get_trial(trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        # _CachedStorage.get_all_trials, with its read of the database shared within ``refresh``
        self._refresh(study_id)
        with self._lock:
            study = self._studies[study_id]
            found = study.trials.values()
            if states is not None:
                found = [t for t in found if t.state in states]
            trials = sorted(found, key=lambda t: t.number)  # samplers expect trials by number
            trials = copy.deepcopy(trials) if deepcopy else trials
        if self._own:  # a copy: the caller's list must not change when the trial does
            own = self._own
            trials = [_copy(own[id_of(t)]) if id_of(t) in own else t for t in trials]
        return trials

    def _refresh(self, study_id: int) -> None:
        """Read the study's trials from the database unless this process did less than ``refresh`` s ago."""
        if time.monotonic() >= self._fresh_until.get(study_id, -1.0):
            self._read_trials_from_remote_storage(study_id)

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        """Read the study's new and unfinished trials from the database (always: Optuna's contract); a running
        trial of this process's that another process finished is read from the database from then on."""
        now = time.monotonic()
        super()._read_trials_from_remote_storage(study_id)
        self._fresh_until[study_id] = now + self.refresh
        if not self._own:
            return
        with self._lock:
            stored = self._studies[study_id].trials
            ended = [i for i in list(self._own) if _finished(stored, self._placed(i, study_id))]
        for trial_id in ended:
            self._forget(trial_id)

    def _placed(self, trial_id: int, study_id: int) -> int | None:
        """``trial_id``'s number when it belongs to ``study_id``."""
        where = self._trial_id_to_study_id_and_number.get(trial_id)
        return where[1] if where is not None and where[0] == study_id else None

    def _study_of(self, trial_id: int) -> int:
        return self._trial_id_to_study_id_and_number[trial_id][0]

    def _forget(self, trial_id: int) -> None:
        """Stop answering ``trial_id`` from memory (another process finished it); its held-back writes
        cannot be stored any more and are dropped."""
        self._own.pop(trial_id, None)
        self._since.pop(trial_id, None)
        self._pending.pop(trial_id, None)

    @contextlib.contextmanager
    def _unless_finished_elsewhere(self, trial_id: int) -> Iterator[None]:
        """Within the block, a write of this process's trial that the database rejects because another
        process finished the trial makes the trial's later reads answer what is stored (then re-raises)."""
        try:
            yield
        except optuna.exceptions.UpdateFinishedTrialError:
            if self._own.get(trial_id) is not None:
                self._forget(trial_id)
                self._read_trials_from_remote_storage(self._study_of(trial_id))
            raise

    def _defer(self, trial_id: int, kind: str, key: Any, value: Any) -> bool:
        trial = self._own.get(trial_id)
        if trial is None:
            return False
        if kind == "intermediate":
            trial.intermediate_values[key] = value  # FrozenTrial has no setter for these
        elif kind == "user":
            trial.user_attrs = {**trial.user_attrs, key: value}
        else:
            trial.system_attrs = {**trial.system_attrs, key: value}
        if time.monotonic() - self._since[trial_id] >= self.max_delay:
            self._flush(trial_id)
            return False  # a long trial: the caller writes this one now
        getattr(self._pending.setdefault(trial_id, _Pending()), kind)[key] = value
        return True

    def flush(self, trial_id: int) -> None:
        """Write a trial's deferred values and attributes now, in one transaction."""
        self._flush(trial_id)

    def _flush(self, trial_id: int) -> None:
        pending = self._pending.pop(trial_id, None)
        if pending is None:
            return
        with self._unless_finished_elsewhere(trial_id):
            self._write(trial_id, pending)

    def _write(self, trial_id: int, pending: _Pending) -> None:
        models = rdb_models()

        rdb = self._backend
        with create_scoped_session(rdb.scoped_session) as session:
            if not _UPSERT:  # an SQLite older than 3.24: Optuna's own statements, a few per value
                _write_each(rdb, session, trial_id, pending)
                return
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            rdb.check_trial_is_updatable(trial_id, trial.state)
            to_stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
            steps = []
            for step, value in pending.intermediate.items():
                stored, kind = to_stored(value)
                steps.append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "intermediate_value": stored,
                        "intermediate_value_type": kind,
                    }
                )
            _upsert(session, models.TrialIntermediateValueModel, ("trial_id", "step"), steps)
            for model, attrs in (
                (models.TrialUserAttributeModel, pending.user),
                (models.TrialSystemAttributeModel, pending.system),
            ):
                rows = [
                    {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
                ]
                _upsert(session, model, ("trial_id", "key"), rows)


def _upsert(session: Any, model: Any, unique: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``model``'s table, replacing those whose ``unique`` columns exist already."""
    if not rows:
        return
    from sqlalchemy.dialects.sqlite import insert

    statement = insert(model.__table__)
    changed = [column for column in rows[0] if column not in unique]
    statement = statement.on_conflict_do_update(
        index_elements=list(unique), set_={column: statement.excluded[column] for column in changed}
    )
    session.execute(statement, rows)


def _write_each(rdb: RDBStorage, session: Any, trial_id: int, pending: _Pending) -> None:
    models = rdb_models()
    for step, value in pending.intermediate.items():
        rdb._set_trial_intermediate_value_without_commit(session, trial_id, step, value)
    for model, attrs in (
        (models.TrialUserAttributeModel, pending.user),
        (models.TrialSystemAttributeModel, pending.system),
    ):
        for key, value in attrs.items():
            rdb._set_trial_attr_without_commit(session, model, trial_id, key, value)


def _finished(stored: dict[int, FrozenTrial], number: int | None) -> bool:
    return number is not None and number in stored and stored[number].state.is_finished()


def _copy(trial: FrozenTrial) -> FrozenTrial:
    # Callers (Optuna's Trial) change a trial's top-level dicts, never the values in them: copying those is
    # enough, and a fraction of what a deep copy costs per read.
    twin = copy.copy(trial)
    twin.params, twin.distributions = dict(trial.params), dict(trial.distributions)
    twin.user_attrs, twin.system_attrs = dict(trial.user_attrs), dict(trial.system_attrs)
    twin.intermediate_values = dict(trial.intermediate_values)
    return twin
