"""A numpy-mlp trial the run's deadline reaches stops there: it completes with its best epoch so far (in
cross-validation, the best epoch every fold ended) or, with none, ends pruned with DeadlineReached. The
deadline comes after a set number of ``out_of_time`` calls (one before each epoch of each fold and every 32
minibatches), so no outcome depends on the machine's speed or load."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import optuna
import pytest
from test_numpy_mlp import SMALL

from nn_numpy import SE, SGD, Stopped, Trainer, build_mlp, load_model, predict
from objectives import DeadlineReached, TrialContext
from objectives.numpy_mlp.objective import fold_arrays, load_data, objective
from spaces.numpy_mlp import SPACE

# SMALL's batches of 32 on 800 or 750 training images: under 32 minibatches, one stop call per epoch and fold


@dataclass(frozen=True)
class DeadlineAfter(TrialContext):
    """A context whose deadline has passed after ``calls`` calls of :meth:`out_of_time`."""

    calls: int = 0
    asked: list[None] = field(default_factory=list)

    def out_of_time(self) -> bool:
        self.asked.append(None)
        return len(self.asked) > self.calls


@pytest.fixture(scope="module")
def digits(data_dir):
    split = load_data(str(data_dir), SPACE.settings())
    assert len(split.y_train) == 800 and len(split.y_val) == 200
    return split


def run(digits, context: TrialContext, **overrides) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(direction="minimize")
    space = SPACE.with_overrides({**SMALL, **overrides})
    study.optimize(lambda t: objective(t, digits, space, context), n_trials=1)
    return study.trials[0]


def error(model: list, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((predict(model, x.astype(np.float32)) > 0.5) != y))


@pytest.mark.parametrize(("batch_size", "calls", "stop"), [(32, 3, 4), (16, 3, 2)])
def test_a_single_split_trial_completes_with_its_best_epoch_before_the_deadline(
    digits, tmp_path, batch_size, calls, stop
) -> None:
    """Batches of 32: one call per epoch, the deadline comes before epoch 4; of 16 (50 minibatches): two,
    it comes at epoch 2's 33rd minibatch."""
    context = DeadlineAfter(tmp_path, calls=calls)
    trial = run(digits, context, folds=1, batch_size=batch_size)
    attrs = trial.user_attrs
    assert trial.state == optuna.trial.TrialState.COMPLETE and len(context.asked) == calls + 1
    assert len(attrs["curves"]["val_error"]) == len(trial.intermediate_values) == stop - 1
    assert trial.value == min(attrs["curves"]["val_error"])
    assert attrs["deadline_stop"] == f"in epoch {stop} of 8; completed with epoch {attrs['best_epoch']}"
    model, _ = load_model(tmp_path / attrs["checkpoint"])  # the best epoch's weights, not the stopped ones
    assert error(model, digits.x_val, digits.y_val) == trial.value


def test_a_cross_validated_trial_completes_with_the_best_epoch_all_folds_ended(digits, tmp_path) -> None:
    """4 folds: the deadline comes at fold 3 of epoch 3, after folds 1 and 2 ended it."""
    context = DeadlineAfter(tmp_path, calls=4 * 2 + 2)
    trial = run(digits, context, folds=4, epochs=5)
    attrs = trial.user_attrs
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert len(attrs["curves"]["val_error"]) == 2 and sorted(trial.intermediate_values) == [1, 2]
    assert trial.value == min(trial.intermediate_values.values())
    assert trial.value == trial.intermediate_values[attrs["best_epoch"]]
    assert attrs["deadline_stop"] == f"in epoch 3 of 5; completed with epoch {attrs['best_epoch']}"
    assert all(1 <= epoch <= 2 for epoch in attrs["fold_best_epochs"]), "epoch 3 has no value"
    model, _ = load_model(tmp_path / attrs["checkpoint"])  # fold 1's model at the pooled best epoch
    _, _, x_val, y_val = fold_arrays(digits, 4, 0, np.dtype("float32"))[0]
    assert error(model, x_val, y_val) == attrs["fold_val_error"][0]


@pytest.mark.parametrize(("folds", "calls"), [(1, 0), (4, 0), (4, 2)])
def test_a_trial_with_no_epoch_ended_is_pruned_deadline_reached(digits, tmp_path, folds, calls) -> None:
    """Also in cross-validation when some folds ended epoch 1 but not all."""
    study = optuna.create_study(direction="minimize")
    space = SPACE.with_overrides({**SMALL, "folds": folds})
    trial = study.ask()
    with pytest.raises(DeadlineReached, match="deadline came in epoch 1 of 8, before any epoch ended"):
        objective(trial, digits, space, DeadlineAfter(tmp_path, calls=calls))
    assert trial.user_attrs["deadline_stop"] == "in epoch 1 of 8; no epoch ended"
    assert trial.user_attrs["pruned_epoch"] == 0 and "checkpoint" not in trial.user_attrs
    assert not any(tmp_path.iterdir())


def test_the_run_deadline_prunes_a_late_trial_and_leaves_an_early_one_alone(digits, tmp_path) -> None:
    late = run(digits, TrialContext(tmp_path, deadline=time.time() - 1), folds=1, epochs=2)
    assert late.state == optuna.trial.TrialState.PRUNED and "deadline came" in late.user_attrs["prune_reason"]
    early = run(digits, TrialContext(tmp_path, deadline=time.time() + 3600), folds=1, epochs=2)
    assert early.state == optuna.trial.TrialState.COMPLETE and "deadline_stop" not in early.user_attrs


def test_a_trainer_asks_stop_before_each_epoch_and_every_32_minibatches() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4))
    y = (x[:, :1] > 0).astype(np.float64)
    model = build_mlp(4, [8], "relu", rng=rng, dtype=np.float64)
    trainer = Trainer(model, SE(), x, y, x, y, batch_size=1, optimizer=SGD(0.01), rng=rng)
    asked: list[None] = []

    def stop() -> bool:
        asked.append(None)
        return len(asked) > 5

    trainer.step(stop)  # minibatches 1, 33, 65 and 97
    with pytest.raises(Stopped, match="stopped in epoch 2"):
        trainer.step(stop)
    assert len(asked) == 6 and len(trainer.history) == 1 and trainer.result().best_epoch == 1
