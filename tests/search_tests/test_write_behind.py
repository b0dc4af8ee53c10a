"""The write-behind storage: the same trials as Optuna's own storage, in fewer transactions."""

from __future__ import annotations

from pathlib import Path

import optuna
import sqlalchemy

from search.engine.algorithms import make_pruner, make_sampler
from search.engine.storage import get_storage
from search.engine.write_behind import WriteBehindStorage, write_behind


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -3, 3)
    y = trial.suggest_int("y", 0, 4)
    value = 0.0
    for step in range(1, 10):
        value = (x - 1) ** 2 + y + 1 / step
        trial.report(value, step)
        if trial.should_prune():
            trial.set_user_attr("pruned_at", step)
            raise optuna.TrialPruned()
    trial.set_user_attr("curve", [value] * 3)
    return value


def _run(storage: optuna.storages.BaseStorage) -> tuple[list[tuple], int]:
    commits = []
    engine = (storage._backend if isinstance(storage, WriteBehindStorage) else storage).engine
    sqlalchemy.event.listen(engine, "commit", lambda conn: commits.append(1))
    study = optuna.create_study(
        study_name="s", storage=storage, sampler=make_sampler("tpe", 0), pruner=make_pruner("asha", 9)
    )
    study.enqueue_trial({"x": 1.0, "y": 0}, user_attrs={"baseline": True})
    for _ in range(16):
        study.optimize(_objective, n_trials=1)
    rows = [
        (t.number, t.state, t.params, t.intermediate_values, t.user_attrs, t.system_attrs, t.value)
        for t in optuna.load_study(study_name="s", storage=storage).trials
    ]
    return rows, len(commits)


def test_write_behind_stores_the_same_trials_in_fewer_transactions(tmp_path: Path) -> None:
    plain, plain_commits = _run(get_storage(f"sqlite:///{tmp_path / 'plain.db'}"))
    behind, behind_commits = _run(write_behind(get_storage(f"sqlite:///{tmp_path / 'behind.db'}")))
    assert behind == plain
    assert {row[1] for row in plain} >= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert behind_commits < 0.7 * plain_commits, (behind_commits, plain_commits)


def test_write_behind_defers_reports_but_not_parameters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    other = get_storage(url)  # another process's view of the study
    seen = {}

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", {"pid": 1})
        trial.suggest_float("x", 0, 1)
        trial.report(0.5, 1)
        stored = other.get_trial(trial._trial_id)
        seen["params"], seen["attrs"] = set(stored.params), dict(stored.user_attrs)
        seen["reports"] = dict(stored.intermediate_values)
        seen["local"] = dict(trial.study._storage.get_trial(trial._trial_id).intermediate_values)
        return 0.5

    storage = write_behind(get_storage(url), max_delay=3600)
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(objective, n_trials=1)
    assert seen["params"] == {"x"} and seen["attrs"] == {"worker": {"pid": 1}}  # written with the parameter
    assert seen["reports"] == {} and seen["local"] == {1: 0.5}  # deferred, yet this worker reads it
    assert other.get_trial(study.trials[0]._trial_id).intermediate_values == {1: 0.5}  # written at the end

    eager = write_behind(get_storage(url), max_delay=0)
    study = optuna.load_study(study_name="s", storage=eager)
    study.optimize(objective, n_trials=1)
    assert seen["reports"] == {1: 0.5}  # past max_delay: written at once


def _every_kind(trial: optuna.Trial) -> float:
    trial.set_user_attr("a", 1)
    trial.set_user_attr("config", {"widths": [3, 4]})
    trial.suggest_float("x", 0, 1)  # writes what came before
    trial.set_user_attr("a", 2)  # again, after it was written
    trial.study._storage.set_trial_system_attr(trial._trial_id, "s", [trial.number])
    for step, value in enumerate([float("inf"), float("-inf"), float("nan"), 0.5]):
        trial.report(value, step)
    if trial.number == 1:
        raise optuna.TrialPruned()
    if trial.number == 2:
        raise RuntimeError("a failing trial")
    return 0.5


def test_write_behind_stores_non_finite_reports_rewritten_attrs_and_every_end_state(tmp_path: Path) -> None:
    stored = []
    for name, wrap in (("plain", lambda s: s), ("behind", write_behind)):
        storage = wrap(get_storage(f"sqlite:///{tmp_path / name}.db"))
        study = optuna.create_study(study_name="s", storage=storage, sampler=make_sampler("random", 0))
        study.optimize(_every_kind, n_trials=3, catch=(RuntimeError,))
        trials = optuna.load_study(
            study_name="s", storage=get_storage(f"sqlite:///{tmp_path / name}.db")
        ).trials
        stored.append(
            [
                (t.state, t.params, repr(t.intermediate_values), t.user_attrs, t.system_attrs, t.value)
                for t in trials
            ]
        )
    plain, behind = stored
    assert behind == plain
    assert [row[0].name for row in behind] == ["COMPLETE", "PRUNED", "FAIL"]
    assert behind[2][3] == {"a": 2, "config": {"widths": [3, 4]}}
    assert behind[0][2] == repr({0: float("inf"), 1: float("-inf"), 2: float("nan"), 3: 0.5})


def test_one_read_of_the_trials_answers_the_reads_within_refresh(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="s", storage=write_behind(get_storage(url), refresh=3600))
    other = optuna.load_study(study_name="s", storage=get_storage(url))  # another process
    assert study.trials == []
    other.ask()  # another worker's trial starts
    assert study.trials == []  # the read above still answers
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    # this process finished a trial: the next read comes from the database, with that trial complete
    assert [t.state.name for t in study.trials] == ["RUNNING", "COMPLETE"]

    eager = optuna.load_study(study_name="s", storage=write_behind(get_storage(url), refresh=0))
    other.ask()
    assert len(eager.trials) == 3
