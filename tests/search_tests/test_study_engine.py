"""The study engine in-process: failing trials, trial budgets, samplers and pruners by name."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from objectives import Task, TrialContext, register
from search.engine.algorithms import PRUNERS, SAMPLERS, asha_rungs, make_pruner, make_sampler
from search.engine.study import StudyError, run_study
from spaces import Choice, FloatRange, Param, Space


@dataclass(frozen=True)
class _Data:
    source: str = "in-memory"
    fingerprint: str = "fixed"


def _flaky_objective(trial: optuna.Trial, data: _Data, space: Space, context: TrialContext) -> float:
    x = space.suggest(trial, "x")
    if trial.number % 3 == 1:
        raise RuntimeError(f"boom in trial {trial.number}")
    for epoch in range(1, 4):
        context.report(trial, x * epoch, epoch)
    return x


X = Param("x", "float", FloatRange(0.0, 1.0), bounds=(0.0, 1.0))


def _register(name: str, params: list[Param], objective: Any, max_epochs: int = 1, **extra: Any) -> Task:
    """An in-memory task minimising ``x`` (no data, no evaluation)."""
    return register(
        Task(
            name=name,
            space=Space(name, params),
            metric="x",
            direction="minimize",
            load_data=lambda data, settings: _Data(),
            objective=objective,
            evaluate=lambda *args: {},
            max_epochs=lambda space: max_epochs,
            **extra,
        )
    )


FLAKY = _register("test-flaky", [X], _flaky_objective, max_epochs=3)
BASELINE_TASK = _register(
    "test-baseline",
    [X, Param("k", "choice", Choice(("a", "b")), allowed=("a", "b"))],
    lambda trial, data, space, context: space.suggest(trial, "x") + len(space.suggest(trial, "k")),
    baseline={"x": 0.25, "k": "b"},
)
SETTING_TASK = _register(
    "test-setting",
    [X, Param("mode", "setting", "a", check=lambda v: None if v in ("a", "b") else "must be a or b")],
    lambda trial, data, space, context: space.suggest(trial, "x"),
)


def test_resuming_with_other_settings_names_what_changed_and_how_to_resume(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    run_study("test-setting", storage=storage, n_trials=1, progress=False, overrides=["mode=b"])
    with pytest.raises(StudyError) as error:
        run_study("test-setting", storage=storage, n_trials=1, progress=False, overrides=["mode=a"])
    assert str(error.value) == (
        "study 'test-setting' was created with mode='b' (this run: 'a'); settings cannot change within a "
        "study: pass --set mode=b to resume it, or start a new --study"
    )
    summary = run_study("test-setting", storage=storage, n_trials=1, progress=False, overrides=["mode=b"])
    assert summary.counts == {"COMPLETE": 2}, "resumed with the hint, nothing lost"
    summary = run_study("test-setting", storage=storage, n_trials=1, progress=False)  # no --set: its own
    assert summary.counts == {"COMPLETE": 3}


def test_an_exception_fails_only_its_trial_and_the_worker_goes_on(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    summary = run_study("test-flaky", storage=storage, n_trials=9, pruner="none", progress=False)
    assert summary.new_trials == 9
    study = optuna.load_study(study_name="test-flaky", storage=storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [1, 4, 7]
    assert all("boom in trial" in t.user_attrs["fail_reason"] for t in failed)
    assert summary.counts == {"COMPLETE": 6, "FAIL": 3}


def test_trials_count_what_this_run_adds_and_resume_keeps_earlier_trials(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    run_study("test-flaky", storage=storage, n_trials=4, progress=False, seed=1)
    summary = run_study("test-flaky", storage=storage, n_trials=3, progress=False, seed=1)
    assert summary.new_trials == 3
    assert sum(summary.counts.values()) == 7


def test_timeout_stops_starting_trials(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    summary = run_study("test-flaky", storage=storage, timeout=1.0, progress=False)  # no --trials: the time
    trials = optuna.load_study(study_name="test-flaky", storage=storage).trials
    assert summary.new_trials == len(trials) >= 1  # the deadline ended it; how many fit depends on the load
    # the deadline was set just before the first trial started: no trial started after it
    first = trials[0].datetime_start
    assert all(t.datetime_start <= first + datetime.timedelta(seconds=1.0) for t in trials)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_drives_a_study(name: str, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    summary = run_study("test-flaky", storage=storage, n_trials=5, sampler=name, seed=0, progress=False)
    assert summary.new_trials == 5 and summary.best_value is not None


def test_pruners_stop_a_bad_trial_through_ask_and_tell() -> None:
    for name in PRUNERS:
        # Hyperband picks a trial's bracket from a hash of the study name: fix it for a repeatable test.
        study = optuna.create_study(
            study_name="pruning", pruner=make_pruner(name, 27), sampler=make_sampler("random", 0)
        )
        for value in [0.1, 0.2, 0.15, 0.12, 0.11, 0.13]:  # finished trials with good curves
            trial = study.ask()
            state = TrialState.COMPLETE
            for step in range(1, 28):
                trial.report(value, step)
                if trial.should_prune():  # asking also records ASHA's rung values
                    state = TrialState.PRUNED
                    break
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        bad = study.ask()
        pruned_at = None
        for step in range(1, 28):
            bad.report(0.9, step)
            if bad.should_prune():
                pruned_at = step
                break
        if name == "none":
            assert pruned_at is None
        else:
            assert pruned_at is not None and pruned_at < 27, name


@pytest.mark.parametrize("max_epochs", [3, 30, 120])
def test_asha_rungs_are_the_epochs_where_the_asha_pruner_compares_trials(max_epochs: int) -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner("asha", max_epochs))
    trial = study.ask()
    compared = []
    for epoch in range(1, max_epochs + 1):
        trial.report(0.5, epoch)
        rungs_before = len(study._storage.get_trial(trial._trial_id).system_attrs)
        assert not trial.should_prune()  # the first trial at every rung is promoted
        if len(study._storage.get_trial(trial._trial_id).system_attrs) > rungs_before:
            compared.append(epoch)
    assert compared == asha_rungs(max_epochs)


def test_unknown_names_are_rejected_before_the_storage_is_touched(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    with pytest.raises(ValueError, match="unknown sampler 'sobol'; valid samplers: tpe, random, cmaes, gp"):
        run_study("test-flaky", storage=storage, sampler="sobol")
    with pytest.raises(ValueError, match="unknown pruner"):
        run_study("test-flaky", storage=storage, pruner="never")
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        run_study("test-flaky", storage=storage, workers=0)
    assert not (tmp_path / "studies.db").exists()


def test_a_new_study_starts_from_the_tasks_baseline_once(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    first = run_study("test-baseline", storage=storage, n_trials=3, seed=0, progress=False)
    again = run_study("test-baseline", storage=storage, n_trials=2, seed=0, progress=False)  # not again
    assert (first.new_trials, again.new_trials, sum(again.counts.values())) == (3, 2, 5)
    trials = optuna.load_study(study_name="test-baseline", storage=storage).trials
    assert trials[0].params == {"x": 0.25, "k": "b"} and trials[0].user_attrs["baseline"] is True
    assert [t.number for t in trials if t.user_attrs.get("baseline")] == [0]


def test_the_baseline_keeps_only_what_the_space_draws_and_can_be_switched_off(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    run_study("test-baseline", study_name="narrow", storage=storage, overrides=["x=0.5"], n_trials=1, seed=0)
    run_study("test-baseline", study_name="off", storage=storage, baseline=False, n_trials=1, seed=3)
    narrow = optuna.load_study(study_name="narrow", storage=storage).trials[0]
    assert narrow.params == {"k": "b"} and narrow.user_attrs["baseline"] is True
    assert "baseline" not in optuna.load_study(study_name="off", storage=storage).trials[0].user_attrs


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_the_pruner_never_stops_the_baseline_trial(tmp_path) -> None:
    study = optuna.create_study(pruner=_AlwaysPrune())
    study.enqueue_trial({}, user_attrs={"baseline": True})
    context = TrialContext(tmp_path)
    baseline, other = study.ask(), study.ask()
    for epoch in (1, 2, 3):
        context.report(baseline, 0.1, epoch)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
        context.report(other, 0.1, 1)
