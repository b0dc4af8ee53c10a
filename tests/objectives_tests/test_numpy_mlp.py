from __future__ import annotations

import numpy as np
import optuna
import pytest

from nn_numpy import BCE, SGD, build_mlp, load_model, train
from objectives import TrialContext
from objectives.folds import pooled, stratified_folds, tie_broken_error
from objectives.numpy_mlp.objective import fold_arrays, load_data, objective, pool, random_shift
from search.engine.algorithms import make_pruner
from spaces.numpy_mlp import SPACE

SMALL = {
    "depth": 1,
    "width": 32,
    "activation": "relu",
    "init": "he",
    "loss": "bce",
    "lr": 0.05,
    "momentum": 0.9,
    "batch_size": 32,
    "epochs": 8,
    "augment_shift": 0,
    "weight_decay": 1e-4,
    "lr_decay": 0.95,
}


@pytest.fixture(scope="module")
def digits(data_dir):
    return load_data(str(data_dir), SPACE.settings())


def test_random_shift_moves_images_within_bounds() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 784)).astype(np.float32)
    assert np.array_equal(random_shift(x, rng, 0, np.float32(-1)), x)
    shifted = random_shift(x, rng, 2, np.float32(-1))
    assert shifted.shape == x.shape and shifted.dtype == np.float32
    assert not np.array_equal(shifted, x)
    # a shifted image keeps a 24x24 window of the original
    image = x[0].reshape(28, 28)
    out = shifted[0].reshape(28, 28)
    assert any(
        np.array_equal(out[2:26, 2:26], image[2 + dy : 26 + dy, 2 + dx : 26 + dx])
        for dy in range(-2, 3)
        for dx in range(-2, 3)
    )


def test_objective_trains_reports_and_keeps_the_best_checkpoint(digits, tmp_path) -> None:
    study = optuna.create_study(direction="minimize")
    space = SPACE.with_overrides({**SMALL, "folds": 1})
    study.optimize(lambda t: objective(t, digits, space, TrialContext(tmp_path)), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.value < 0.1, "a sane MLP must tell 4 from 9 on 800 images"
    curves = trial.user_attrs["curves"]
    assert len(curves["val_error"]) == 8 and len(trial.intermediate_values) == 8
    assert trial.value == min(curves["val_error"])
    assert trial.value == curves["val_error"][trial.user_attrs["best_epoch"] - 1]
    model, extras = load_model(tmp_path / trial.user_attrs["checkpoint"])
    assert model[0].W.shape == (784, 32) and model[0].W.dtype == np.float32
    assert float(extras["mean"]) == pytest.approx(digits.mean)
    assert 0 <= trial.user_attrs["test_error"] < 0.2


def test_objective_with_one_fold_is_the_single_split_training(digits, tmp_path) -> None:
    """``folds=1`` returns what a plain ``train`` on the study's split gives (today's behaviour)."""
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("seed", 3)
    space = SPACE.with_overrides({**SMALL, "folds": 1})
    study.optimize(lambda t: objective(t, digits, space, TrialContext(tmp_path)), n_trials=1)
    trial = study.trials[0]
    rng = np.random.default_rng([0, 3])
    model = build_mlp(784, [32], "relu", init="he", rng=rng, dtype=np.float32)
    result = train(
        model,
        BCE(),
        *(a.astype(np.float32) for a in (digits.x_train, digits.y_train, digits.x_val, digits.y_val)),
        epochs=8,
        batch_size=32,
        rng=rng,
        optimizer=SGD(0.05, momentum=0.9, weight_decay=1e-4, lr_decay=0.95),
    )
    assert trial.value == result.best.val_error
    assert trial.user_attrs["best_epoch"] == result.best_epoch
    assert trial.user_attrs["curves"]["val_loss"] == [s.val_loss for s in result.history]
    assert "fold_val_error" not in trial.user_attrs


def test_objective_cross_validates_on_folds_and_stores_each_folds_figures(digits, tmp_path) -> None:
    study = optuna.create_study(direction="minimize")
    space = SPACE.with_overrides({**SMALL, "folds": 4, "epochs": 5})
    study.optimize(lambda t: objective(t, digits, space, TrialContext(tmp_path)), n_trials=1)
    trial = study.trials[0]
    attrs = trial.user_attrs
    assert trial.state == optuna.trial.TrialState.COMPLETE and attrs["folds"] == 4
    n = len(digits.y_train) + len(digits.y_val)
    assert len(attrs["fold_val_error"]) == len(attrs["fold_val_brier"]) == len(attrs["fold_best_epochs"]) == 4
    assert attrs["mean_best_epoch"] == pytest.approx(np.mean(attrs["fold_best_epochs"]))
    # the value is the pooled error at the best epoch, tie-broken by the pooled Brier score below one image
    sizes = [n // 4] * 4
    error, brier = pooled(attrs["fold_val_error"], sizes), pooled(attrs["fold_val_brier"], sizes)
    assert trial.value == pytest.approx(tie_broken_error(error, brier, n))
    assert error <= trial.value < error + 1 / n
    assert 0 < brier < 0.25 and trial.value < 0.1
    # the pruner saw the pooled figure every epoch, and the value is its minimum
    reported = [trial.intermediate_values[e] for e in range(1, 6)]
    assert trial.value == min(reported) == reported[attrs["best_epoch"] - 1]
    curves = attrs["curves"]
    pairs = zip(curves["val_error"], curves["val_brier"], strict=True)
    assert [tie_broken_error(error, brier, n) for error, brier in pairs] == reported
    assert len(set(attrs["fold_val_error"])) > 1, "folds validate on different images"
    model, _ = load_model(tmp_path / attrs["checkpoint"])
    assert model[0].W.shape == (784, 32) and 0 <= attrs["test_error"] < 0.2


def test_objective_with_folds_is_pruned_by_asha_on_the_pooled_figure(digits, tmp_path) -> None:
    study = optuna.create_study(direction="minimize", pruner=make_pruner("asha", 6))
    good = {**SMALL, "folds": 3, "epochs": 6}
    study.enqueue_trial({"lr": 0.05})
    study.enqueue_trial({"lr": 0.001})  # barely moves in 6 epochs
    space = SPACE.with_overrides({k: v for k, v in good.items() if k != "lr"}).with_overrides(
        {"lr": {"low": 0.001, "high": 0.05, "log": True}}
    )
    study.optimize(lambda t: objective(t, digits, space, TrialContext(tmp_path)), n_trials=2)
    first, second = study.trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert second.state == optuna.trial.TrialState.PRUNED
    assert second.user_attrs["pruned_epoch"] < 6 and "pruned at epoch" in second.user_attrs["prune_reason"]
    assert len(second.user_attrs["curves"]["val_error"]) == second.user_attrs["pruned_epoch"]
    assert "checkpoint" not in second.user_attrs


def test_diverging_trial_ends_pruned_with_its_reason(digits, tmp_path) -> None:
    study = optuna.create_study(direction="minimize")
    space = SPACE.with_overrides(
        {
            "depth": 1,
            "width": 256,
            "activation": "relu",
            "init": "he",
            "loss": "se",
            "lr": 1000.0,
            "momentum": 0.9,
            "batch_size": 16,
            "epochs": 5,
            "augment_shift": 0,
            "dtype": "float32",
            "weight_decay": 0.01,
            "lr_decay": 1.0,
        }  # (1 - lr*wd) = -9: weights blow up
    )
    study.optimize(lambda t: objective(t, digits, space, TrialContext(tmp_path)), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert "diverged" in trial.user_attrs["prune_reason"]
    assert "checkpoint" not in trial.user_attrs


def test_objective_writes_no_checkpoint_the_study_would_delete(digits, tmp_path) -> None:
    space = SPACE.with_overrides({**SMALL, "epochs": 2, "folds": 1})
    for keeps in (False, True):
        study = optuna.create_study(direction="minimize")
        context = TrialContext(tmp_path / str(keeps), keeps=lambda trial, value, keeps=keeps: keeps)
        context.checkpoint_dir.mkdir()
        study.optimize(lambda t, c=context: objective(t, digits, space, c), n_trials=1)
        trial = study.trials[0]
        assert trial.state == optuna.trial.TrialState.COMPLETE and "test_error" in trial.user_attrs
        assert (context.checkpoint_dir / trial.user_attrs["checkpoint"]).is_file() == keeps


def test_fold_arrays_are_made_once_per_data_set_read_only(digits) -> None:
    folds = fold_arrays(digits, 5, 3, np.dtype("float32"))
    assert fold_arrays(digits, 5, 3, np.dtype("float32")) is folds
    assert fold_arrays(digits, 5, 4, np.dtype("float32")) is not folds  # another seed: other folds
    x, y = pool(digits)
    for (trn, val), arrays in zip(stratified_folds(y, 5, 3), folds, strict=True):
        for array, expected in zip(arrays, (x[trn], y[trn], x[val], y[val]), strict=True):
            assert array.dtype == np.float32 and not array.flags.writeable
            np.testing.assert_array_equal(array, expected.astype(np.float32))
