"""The mynet objective and refit on real FashionMNIST, with tiny networks and 600 training images."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from rpz_mynet import TINY
from rpz_resume import die_then_retry

from models import MyNet, MyNetCfg
from objectives import TrialContext
from objectives.mynet.objective import load_data, load_model, objective, refit
from objectives.training import fit as torch_fit
from objectives.training.fit import accuracy, fit
from search.engine.algorithms import asha_rungs, make_pruner
from spaces.mynet import SCHEDULES, SPACE, AugmentConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks

SMALL_DATA = {"data_fraction": 0.01}


@pytest.fixture(scope="module")
def fashion(data_dir):
    return load_data(str(data_dir), SPACE.with_overrides(SMALL_DATA).settings())


def run_trial(fashion, tmp_path, **overrides) -> optuna.trial.FrozenTrial:
    space = SPACE.with_overrides({**TINY, **SMALL_DATA, **overrides})
    study = optuna.create_study(direction="maximize")
    context = TrialContext(tmp_path, device="cpu", metric="val_accuracy")
    study.optimize(lambda t: objective(t, fashion, space, context), n_trials=1)
    return study.trials[0]


@pytest.mark.slow
def test_objective_reports_every_epoch_and_keeps_the_final_epochs_weights(fashion, tmp_path) -> None:
    trial = run_trial(fashion, tmp_path)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    curves = trial.user_attrs["curves"]
    assert len(curves["val_accuracy"]) == 4 and list(trial.intermediate_values) == [1, 2, 3, 4]
    assert trial.value == curves["val_accuracy"][-1] and trial.user_attrs["best_epoch"] == 4
    assert trial.user_attrs["val_loss"] == curves["val_loss"][-1]
    assert trial.value > 0.6, "a small CNN must beat chance (0.1) clearly after 4 epochs on 600 images"
    assert trial.user_attrs["val_source"] == "additional" and trial.user_attrs["n_val"] == 10000
    model = load_model(trial, tmp_path / trial.user_attrs["checkpoint"])
    assert accuracy(model, fashion.x_holdout, fashion.y_holdout) == pytest.approx(trial.value)
    assert accuracy(model, fashion.x_test, fashion.y_test) == pytest.approx(trial.user_attrs["test_accuracy"])
    assert (
        trial.user_attrs["n_test"] == 5000
        and trial.user_attrs["n_params"] == 8 * 9 + 16 + 8 * 14 * 14 * 10 + 10
    )
    assert not list(tmp_path.glob(".*")), "no temporary file is left behind"


@pytest.mark.slow
def test_same_trial_seed_reproduces_the_curves(fashion, tmp_path) -> None:
    first = run_trial(fashion, tmp_path, augment_flip=True, augment_erase=0.3, dropout=0.2, epochs=2)
    second = run_trial(fashion, tmp_path, augment_flip=True, augment_erase=0.3, dropout=0.2, epochs=2)
    assert first.user_attrs["curves"] == second.user_attrs["curves"]


def test_objective_validates_on_the_labs_split_when_asked(data_dir, tmp_path) -> None:
    lab = load_data(str(data_dir), SPACE.with_overrides({**SMALL_DATA, "val_source": "lab"}).settings())
    assert len(lab.y_holdout) == 0
    trial = run_trial(lab, tmp_path, val_source="lab", epochs=2)
    assert trial.user_attrs["val_source"] == "lab" and trial.user_attrs["n_val"] == 600
    model = load_model(trial, tmp_path / trial.user_attrs["checkpoint"])
    assert accuracy(model, lab.x_val, lab.y_val) == pytest.approx(trial.value)


@pytest.mark.slow
def test_objective_validates_all_images_at_asha_rungs_and_the_last_epoch_a_subset_elsewhere(
    fashion, tmp_path
) -> None:
    space = SPACE.with_overrides({**TINY, **SMALL_DATA, "epochs": 4, "val_subset": 1000})
    study = optuna.create_study(direction="maximize", pruner=make_pruner("asha", 4))
    study.optimize(lambda t: objective(t, fashion, space, TrialContext(tmp_path, "cpu")), n_trials=1)
    trial = study.trials[0]
    assert trial.user_attrs["val_full_epochs"] == [*asha_rungs(4), 4] == [1, 3, 4]
    model = load_model(trial, tmp_path / trial.user_attrs["checkpoint"])
    assert accuracy(model, fashion.x_holdout, fashion.y_holdout) == pytest.approx(trial.value)


def test_diverging_trial_ends_pruned_with_its_reason(fashion, tmp_path) -> None:
    trial = run_trial(fashion, tmp_path, sgd_lr=10.0, schedule="constant", norm="none", epochs=2)
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert "diverged" in trial.user_attrs["prune_reason"]
    assert "checkpoint" not in trial.user_attrs and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("cap", "reason"),
    [
        ({"max_params": 1000}, "15778 parameters exceed max_params=1000"),
        ({"max_latency_ms": 1e-6}, "CPU latency"),
    ],
)
def test_caps_prune_before_training_with_the_reason(fashion, tmp_path, cap, reason) -> None:
    trial = run_trial(fashion, tmp_path, **cap)
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert reason in trial.user_attrs["prune_reason"]
    assert trial.user_attrs["pruned_epoch"] == 0 and not trial.intermediate_values


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_every_optimizer_and_schedule_lowers_the_training_loss(fashion, optimizer, schedule) -> None:
    torch.manual_seed(0)
    model = MyNet(MyNetCfg(channels=(), hidden=(32,)))
    lr = 0.05 if optimizer == "sgd" else 3e-3
    cfg = TrainConfig(optimizer, lr, 0.9, 1e-4, schedule, batch_size=32, epochs=3)
    result = fit(
        model, cfg, AugmentConfig(), (fashion.x_train, fashion.y_train), None, generator=torch.Generator()
    )
    losses = [s.train_loss for s in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0] and result.best_epoch == 3


@pytest.mark.slow
def test_refit_trains_on_train_and_validation_for_the_best_epoch_count(fashion, tmp_path) -> None:
    trial = run_trial(fashion, tmp_path)
    record = refit(trial, fashion, tmp_path / "refit.pt", device="cpu")
    assert record["epochs"] == trial.user_attrs["best_epoch"] == len(record["train_loss"])
    assert record["n_train"] == 600 + 600 and record["seed"] == trial.user_attrs["seed"]
    model = load_model(trial, tmp_path / "refit.pt")
    assert accuracy(model, fashion.x_test, fashion.y_test) == pytest.approx(record["test_accuracy"])
    more = refit(trial, fashion, tmp_path / "more.pt", data_fraction=0.03, device="cpu", seed=1)
    assert more["n_train"] == 1800 + 600 and more["data_fraction"] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="--data-fraction must lie in"):
        refit(trial, fashion, tmp_path / "x.pt", data_fraction=0.995, device="cpu")


@pytest.mark.slow
def test_a_retry_resumes_its_dead_predecessor_and_ends_as_an_uninterrupted_run(fashion, tmp_path) -> None:
    space = SPACE.with_overrides({**TINY, **SMALL_DATA, "augment_flip": True, "dropout": 0.2})
    reference_dir, retry_dir = tmp_path / "reference", tmp_path / "retry"
    reference_dir.mkdir(), retry_dir.mkdir()
    reference = optuna.create_study(direction="maximize")
    reference.optimize(lambda t: objective(t, fashion, space, TrialContext(reference_dir, "cpu")), n_trials=1)

    study = optuna.create_study(direction="maximize")
    _, retry = die_then_retry(study, lambda t, c: objective(t, fashion, space, c), retry_dir, die_after=2)
    expected = reference.trials[0]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": 2}
    assert retry.user_attrs["curves"] == expected.user_attrs["curves"], "as if it had never died"
    assert retry.intermediate_values == expected.intermediate_values and retry.value == expected.value
    assert retry.user_attrs["seed"] == expected.user_attrs["seed"]
    weights = torch.load(retry_dir / retry.user_attrs["checkpoint"], weights_only=True)
    uninterrupted = torch.load(reference_dir / expected.user_attrs["checkpoint"], weights_only=True)
    assert all(torch.equal(weights[key], value) for key, value in uninterrupted.items())
    assert sorted(p.name for p in retry_dir.iterdir()) == ["trial-00001.pt"], "progress files are gone"


def test_a_retry_whose_predecessor_file_is_corrupt_starts_over_and_says_why(fashion, tmp_path) -> None:
    space = SPACE.with_overrides({**TINY, **SMALL_DATA, "epochs": 2})
    study = optuna.create_study(direction="maximize")
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    (tmp_path / "trial-00000.progress.pt").write_bytes(b"cut off mid-write by a disk full")
    RetryHeartbeatStaleTrialCallback(max_retry=1)(study, study.trials[0])
    with pytest.warns(UserWarning, match="cannot resume from trial-00000.progress.pt"):
        study.optimize(lambda t: objective(t, fashion, space, TrialContext(tmp_path, "cpu")), n_trials=1)
    retry = study.trials[1]
    assert retry.state == optuna.trial.TrialState.COMPLETE and "resumed_from" not in retry.user_attrs
    assert "cannot resume" in retry.user_attrs["resume_error"]
    assert len(retry.user_attrs["curves"]["val_accuracy"]) == 2


def test_the_step_schedule_divides_the_lr_by_10_at_half_way_and_again_at_three_quarters() -> None:
    model = MyNet(MyNetCfg(channels=(4,)))
    cfg = TrainConfig("sgd", 0.2, 0.9, 0.0, "step", 64, epochs=4)
    optimizer = torch_fit._optimizer(model, cfg)
    scheduler = torch_fit._scheduler(optimizer, cfg, steps=10)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:20] == pytest.approx([0.2] * 20)
    assert lrs[20:30] == pytest.approx([0.02] * 10) and lrs[30:] == pytest.approx([0.002] * 10)


@pytest.mark.slow
def test_refit_spans_its_schedule_over_the_epochs_it_runs(fashion, tmp_path) -> None:
    # A winner whose best epoch is 2 of 4: stopping its 4-epoch one-cycle there would leave the peak rate
    # (the warm-up ends at a quarter); a 2-epoch schedule is half-way, 0.75 of the peak, at epoch 2's start.
    trial = run_trial(fashion, tmp_path)
    trial.user_attrs["best_epoch"] = 2
    record = refit(trial, fashion, tmp_path / "refit.pt", device="cpu")
    assert record["epochs"] == len(record["lr"]) == 2
    assert record["lr"][1] == pytest.approx(0.75 * TINY["sgd_lr"], rel=0.02)
