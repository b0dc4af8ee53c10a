"""A timed mynet run ends by its deadline: a rung that would end after it does not start, nor a trial that
could not finish all its rungs (objectives/training/time_plan.py ``rung_overruns``), on real FashionMNIST
with a tiny network."""

from __future__ import annotations

import importlib
import json
import re
import time

import optuna
import pytest
from rpz_mynet import TINY as SHARED_TINY

from objectives import OutOfTime, TrialContext, WouldOverrun
from objectives.mynet.objective import load_data, objective
from objectives.rung_pruner import RungPlan, RungPruner
from objectives.training.time_plan import EpochCost, rung_overruns
from search import run_study
from search.engine.workers import LATE_STARTS
from spaces.mynet import SPACE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {**SHARED_TINY, "batch_size": 32, "data_fraction": 0.01, "val_images": 1000, "val_subset": 200}
PLAN = RungPlan(4, factor=2)  # rungs of 1, 2 and 4 epochs


@pytest.fixture(scope="module")
def fashion(data_dir):
    return load_data(str(data_dir), SPACE.with_overrides(TINY).settings())


def run_one(fashion, folder, context: TrialContext, **overrides) -> optuna.trial.FrozenTrial:
    space = SPACE.with_overrides({**TINY, **overrides})
    study = optuna.create_study(direction="maximize", pruner=RungPruner(PLAN))
    study.optimize(lambda t: objective(t, fashion, space, context), n_trials=1)
    return study.trials[0]


def run_timed(data_dir, tmp_path, settings: dict, *, n_trials: int, timeout: float, timed: bool = True):
    """``rpztune run mynet`` with one worker on ``settings``; its trials."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    run_study(
        "mynet",
        storage=storage,
        data=str(data_dir),
        overrides=[f"{key}={json.dumps(value)}" for key, value in settings.items()],
        baseline=False,
        seed=0,
        n_trials=n_trials,
        timeout=timeout,
        timed_trials=timed,
        device="cpu",
        threads=1,
        progress=False,
    )
    return optuna.load_study(study_name="mynet", storage=storage).trials


def test_a_rung_fits_when_its_epochs_end_within_the_share_of_the_time_left() -> None:
    assert rung_overruns(10.0, 100.0, 9) is None  # 90 s of 0.9 x 100 s
    late = rung_overruns(10.0, 100.0, 10)
    assert (
        late
        == "not enough time left: its next 10 epochs take about 100 s, 100 s of the run's --timeout remain"
    )
    assert rung_overruns(10.0, -5.0, 1).endswith("0 s of the run's --timeout remain")
    assert rung_overruns(10.0, 100.0, 15, finish=True).startswith(
        "not enough time left to finish: its 15 epochs take about 150 s"
    )


def test_a_trial_whose_first_rung_cannot_end_in_time_is_pruned_before_training(fashion, tmp_path) -> None:
    context = TrialContext(
        tmp_path, device="cpu", metric="val_accuracy", deadline=time.time() + 0.01, timeout=60
    )
    study = optuna.create_study(direction="maximize", pruner=RungPruner(PLAN))
    with pytest.raises(OutOfTime):  # its worker draws no more trials
        objective(study.ask(), fashion, SPACE.with_overrides(TINY), context)
    study.tell(study.trials[0].number, state=optuna.trial.TrialState.PRUNED)
    trial = study.trials[0]
    assert trial.user_attrs["epoch_estimate"] > 0
    assert trial.user_attrs["prune_reason"].startswith("not enough time left: its next 1 epochs take about")
    assert trial.user_attrs["rungs"] == [] and trial.user_attrs["epochs_trained"] == 0
    assert all(values == [] for values in trial.user_attrs["curves"].values()), "nothing trained"
    assert trial.intermediate_values == {} and trial.user_attrs["pruned_epoch"] == 0
    assert list(tmp_path.iterdir()) == [], "no checkpoint, no progress file"


def test_a_trial_that_could_not_finish_its_rungs_in_time_is_pruned_before_training(fashion, tmp_path) -> None:
    context = TrialContext(
        tmp_path, device="cpu", metric="val_accuracy", deadline=time.time() + 3, timeout=60
    )
    study = optuna.create_study(direction="maximize", pruner=RungPruner(RungPlan(200, factor=200)))
    with pytest.raises(WouldOverrun):  # a 1-epoch rung fits in 3 s, 200 epochs do not: draw another
        objective(study.ask(), fashion, SPACE.with_overrides(TINY), context)
    study.tell(study.trials[0].number, state=optuna.trial.TrialState.PRUNED)
    trial = study.trials[0]
    estimate = trial.user_attrs["epoch_estimate"]
    assert 0 < estimate < 2.7, "the first rung fitted"
    taken = re.match(
        r"not enough time left to finish: its 200 epochs take about (\d+) s, [0-3] s of",
        trial.user_attrs["prune_reason"],
    )
    assert taken and abs(int(taken[1]) - 200 * estimate) <= 2, trial.user_attrs["prune_reason"]
    assert trial.user_attrs["rungs"] == [] and trial.user_attrs["epochs_trained"] == 0
    assert trial.intermediate_values == {} and list(tmp_path.iterdir()) == [], "nothing trained"


@pytest.mark.parametrize("promotion", ["retrain", "continue"])
@pytest.mark.slow
def test_a_promotion_that_would_end_after_the_deadline_stops_at_its_rung(
    fashion, tmp_path, promotion
) -> None:
    deadline = time.time() + 5  # the first 1-epoch rung of 600 images fits (well under a second)
    slept = []

    def wait_out_the_deadline(number: int, epoch: int, value: float) -> None:  # real time passes
        if not slept:
            slept.append(epoch)
            time.sleep(max(0.0, deadline - time.time()))

    context = TrialContext(
        tmp_path,
        device="cpu",
        metric="val_accuracy",
        progress=wait_out_the_deadline,
        deadline=deadline,
        timeout=5,
    )
    space = SPACE.with_overrides({**TINY, "promotion": promotion})
    study = optuna.create_study(direction="maximize", pruner=RungPruner(PLAN))
    with pytest.raises(optuna.TrialPruned) as stopped:
        objective(study.ask(), fashion, space, context)
    assert not isinstance(stopped.value, OutOfTime), "it trained a rung: its worker may draw a cheaper one"
    study.tell(study.trials[0].number, state=optuna.trial.TrialState.PRUNED)
    trial = study.trials[0]
    assert slept == [1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    next_epochs = 2 if promotion == "retrain" else 1
    assert trial.user_attrs["prune_reason"].startswith(f"not enough time left: its next {next_epochs} epochs")
    assert [r["epochs"] for r in trial.user_attrs["rungs"]] == [1] and list(trial.intermediate_values) == [1]
    assert "completed_rung_0" in trial.system_attrs, "the pruner had promoted it: its rung value counts there"
    assert trial.user_attrs["pruned_epoch"] == 1 and trial.user_attrs["epochs_trained"] == 1
    assert trial.user_attrs["curves"] == trial.user_attrs["rungs"][0]["curves"]
    assert "checkpoint" not in trial.user_attrs


def test_without_a_timeout_no_estimate_is_made_and_every_rung_runs(fashion, tmp_path) -> None:
    trial = run_one(fashion, tmp_path, TrialContext(tmp_path, device="cpu", metric="val_accuracy"))
    assert trial.state == optuna.trial.TrialState.COMPLETE and "epoch_estimate" not in trial.user_attrs
    assert [r["epochs"] for r in trial.user_attrs["rungs"]] == [1, 2, 4]


@pytest.mark.parametrize("timed", [True, False])
def test_a_run_can_stop_new_trials_at_its_timeout_without_timing_the_trials(
    data_dir, tmp_path, timed
) -> None:
    """bench/pruning.py runs an arm in slices of one untimed study: ``timed_trials=False``."""
    (trial,) = run_timed(data_dir, tmp_path, TINY, n_trials=1, timeout=600, timed=timed)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert ("epoch_estimate" in trial.user_attrs) == timed


def test_a_worker_stops_drawing_once_a_trial_cannot_start_in_the_time_left(data_dir, tmp_path) -> None:
    # 10,000 epochs: the first rung trains 2,000, far more than fit in the 30 s run
    (trial,) = run_timed(data_dir, tmp_path, {**TINY, "epochs": 10_000}, n_trials=5, timeout=30)  # not five
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["prune_reason"].startswith("not enough time left: its next 2000 epochs")


def test_a_worker_stops_drawing_after_trials_in_a_row_that_could_not_finish(
    data_dir, tmp_path, monkeypatch
) -> None:
    # Every trial's estimate is 1 s per epoch, whatever this machine's speed or load (the real estimate is
    # tested above; one measured here and another in the run differed by more than twice on a loaded
    # machine, so some trials fitted, trained, and broke the run of late starts). With 1,000 epochs in a
    # 600 s run each trial needs 1,000 s, more than the 540 s it may use, while its first rung's 200 fit as
    # long as 222 s remain: every trial ends WouldOverrun, none OutOfTime.
    module = importlib.import_module("objectives.mynet.objective")  # the package's `objective`: a function
    monkeypatch.setattr(module, "_epoch_estimate", lambda *args: EpochCost(train=1.0, per_image=0.0))
    epochs = 1000
    trials = run_timed(data_dir, tmp_path, {**TINY, "epochs": epochs}, n_trials=LATE_STARTS + 3, timeout=600)
    assert len(trials) == LATE_STARTS, "it stopped drawing, long before the deadline"
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["epochs_trained"] == 0
        assert trial.user_attrs["epoch_estimate"] == 1.0
        assert trial.user_attrs["prune_reason"].startswith(
            f"not enough time left to finish: its {epochs} epochs"
        )
