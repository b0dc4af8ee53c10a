"""A timed run's late trials: fine-tuning starts once its share of the time has come, and a fine-tune trial
trains only the epochs that fit in the time left, or is pruned before training with the reason."""

from __future__ import annotations

import time

import optuna
import pytest

from objectives import TrialContext, get_task
from objectives.finetune.objective import load_data
from objectives.training.time_plan import plan_epochs

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TASK = get_task("finetune")
SMALL = {
    "epochs": 3,
    "probe_trials": 50,  # far more than run: only the time share can start the fine-tuning
}


def test_plan_epochs_fits_the_share_of_the_time_left() -> None:
    assert plan_epochs(10.0, 1000.0, 6).epochs == 6
    plan = plan_epochs(10.0, 45.0, 6)
    assert plan.epochs == 4 and plan.reason is None and plan.attrs()["drawn_epochs"] == 6
    late = plan_epochs(10.0, 9.0, 6)
    assert late.epochs == 0 and "not enough time left" in late.reason


@pytest.mark.slow
def test_a_late_run_fine_tunes_its_leading_probe_and_prunes_what_cannot_finish(
    photos_dir, small_finetune, tmp_path
) -> None:
    data = load_data(str(photos_dir), {**TASK.space.settings(), "max_images": 60})
    space = TASK.space.with_overrides({**small_finetune, **SMALL})
    study = optuna.create_study(direction="maximize")
    # 100 s run with 20 s left: past the 0.6 share, so the first probe enqueues the fine-tuning at once
    context = TrialContext(checkpoint_dir=tmp_path, metric="proxy", deadline=time.time() + 20, timeout=100)
    study.optimize(lambda t: TASK.objective(t, data, space, context), n_trials=3)
    probe, grid, tuned = study.trials  # the first probe enqueued the grid's probe, then the fine-tuning
    assert [probe.user_attrs["stage"], grid.user_attrs["stage"]] == ["probe", "probe"]
    assert probe.state == optuna.trial.TrialState.COMPLETE
    assert tuned.user_attrs["stage"] == "finetune" and tuned.user_attrs["warm_start_from"] == probe.number
    assert tuned.params["augment"] == "trivial", "a leader's first fine-tune trial trains the recipe"
    plan = tuned.user_attrs["time_plan"]
    assert plan["epoch_seconds"] > 0 and plan["drawn_epochs"] == 3
    assert tuned.user_attrs["config"]["train"]["epochs"] == plan["epochs"] <= 3
    if plan["epochs"] == 0:  # a slow machine: pruned before training, with the reason
        assert tuned.state == optuna.trial.TrialState.PRUNED
        assert "not enough time left" in tuned.user_attrs["prune_reason"]
    else:
        assert tuned.state == optuna.trial.TrialState.COMPLETE
        assert len(tuned.user_attrs["curves"]["proxy"]) == plan["epochs"]


def test_a_trial_with_no_time_left_is_pruned_before_training(photos_dir, small_finetune, tmp_path) -> None:
    data = load_data(str(photos_dir), {**TASK.space.settings(), "max_images": 60})
    space = TASK.space.with_overrides({**small_finetune, **SMALL, "freeze": "last_k", "augment": "none"})
    study = optuna.create_study(direction="maximize")
    context = TrialContext(checkpoint_dir=tmp_path, metric="proxy", deadline=time.time() + 0.01, timeout=100)
    study.optimize(lambda t: TASK.objective(t, data, space, context), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["time_plan"]["epochs"] == 0
    assert trial.user_attrs["prune_reason"].startswith("not enough time left")
    assert trial.user_attrs["curves"]["proxy"] == [], "nothing trained"
