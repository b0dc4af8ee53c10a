from __future__ import annotations

import numpy as np
import optuna
import pytest

from nn_numpy import load_model
from objectives import TrialContext
from objectives.numpy_mlp import load_data, objective, random_shift
from spaces.numpy_mlp import SPACE


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
    space = SPACE.with_overrides(
        {
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
        }
    )
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
