"""mynet by rungs of complete short schedules (objectives/rung_pruner.py, objectives/mynet/rungs.py), on real
FashionMNIST with a tiny network and 600 training images."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest
import torch
from rpz_mynet import TINY as SHARED_TINY
from rpz_resume import die_then_retry

from models import MyNet
from objectives import TrialContext
from objectives.mynet.objective import load_data, load_model, objective
from objectives.mynet.validation import Validation
from objectives.rung_pruner import EPOCH_SECONDS_ATTR, RungPlan, RungPruner
from objectives.training.fit import accuracy, fit
from search.engine.algorithms import make_pruner
from spaces.mynet import SPACE, MyNetTrialConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    **SHARED_TINY,
    "batch_size": 32,  # 18 steps an epoch on 600 images
    "data_fraction": 0.01,
    "val_images": 1000,  # a 1,000-image holdout: the tests time training, not validation
    "val_subset": 200,
}
PLAN = RungPlan(4, factor=2)  # rungs of 1, 2 and 4 epochs


@pytest.fixture(scope="module")
def fashion(data_dir):
    return load_data(str(data_dir), SPACE.with_overrides(TINY).settings())


def rung_study(fashion, folder, n_trials=1, enqueue=(), **overrides) -> optuna.Study:
    space = SPACE.with_overrides({**TINY, **overrides})
    study = optuna.create_study(direction="maximize", pruner=RungPruner(PLAN))
    for params in enqueue:
        study.enqueue_trial(params)
    context = TrialContext(folder, device="cpu", metric="val_accuracy")
    study.optimize(lambda t: objective(t, fashion, space, context), n_trials=n_trials)
    return study


def test_the_plan_ends_at_the_budget_and_optunas_halving_compares_each_rung_in_its_own_rung() -> None:
    assert RungPlan(9).epochs == [1, 3, 9] and RungPlan(30).epochs == [3, 9, 30]
    assert RungPlan(10).epochs == [1, 3, 10] and RungPlan(2).epochs == [2] and PLAN.epochs == [1, 2, 4]
    pruner = make_pruner("rungs", 9)
    assert isinstance(pruner, RungPruner) and pruner.plan == RungPlan(9, factor=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    for rung, epochs in enumerate(pruner.plan.epochs):
        trial.report(0.5, epochs)
        assert not trial.should_prune(), "the first trial is the best so far at every rung"
        assert f"completed_rung_{rung}" in study.trials[0].system_attrs
    with pytest.raises(ValueError, match="min_epochs must lie"):
        RungPlan(9, min_epochs=10)


def test_the_cost_aware_pruner_promotes_the_cheaper_of_two_near_equal_configurations() -> None:
    def pruned(study: optuna.Study, accuracy: float, seconds: float | None) -> bool:
        trial = study.ask()
        if seconds is not None:
            trial.set_user_attr(EPOCH_SECONDS_ATTR, seconds)
        trial.report(accuracy, 1)  # RungPlan(9): rungs of 1, 3 and 9 epochs
        return trial.should_prune()

    for weight in (0.0, 0.01):
        study = optuna.create_study(direction="maximize", pruner=RungPruner(RungPlan(9), cost_weight=weight))
        assert not pruned(study, 0.80, 2.0), "the first trial is the best so far"
        # 8 times the cost per epoch (3 doublings: 0.03 at weight 0.01) for 0.02 more accuracy
        assert pruned(study, 0.82, 16.0) == (weight > 0)
        assert not pruned(study, 0.84, 16.0), "0.84 - 0.03 still beats 0.80 - 0.01"
        assert not pruned(study, 0.85, None), "without its cost a trial is scored by its accuracy"
        scores = [t.system_attrs["completed_rung_0"] for t in study.trials]
        assert scores[:2] == pytest.approx([0.80 - weight, 0.82 - 4 * weight]) and scores[3] == 0.85
    assert make_pruner("rungs-cost", 9).cost_weight > 0 == make_pruner("rungs", 9).cost_weight
    with pytest.raises(ValueError, match="cost_weight"):
        RungPruner(PLAN, cost_weight=-1.0)


@pytest.mark.parametrize("promotion", ["retrain", "continue"])
@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_every_rung_anneals_fully_and_a_promoted_trials_record_is_complete(
    fashion, tmp_path, schedule, promotion
) -> None:
    trial = rung_study(fashion, tmp_path, schedule=schedule, promotion=promotion).trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    rungs = trial.user_attrs["rungs"]
    assert [r["epochs"] for r in rungs] == [1, 2, 4] and list(trial.intermediate_values) == [1, 2, 4]
    trained = [1, 2, 4] if promotion == "retrain" else [1, 1, 2]
    assert [r["trained_epochs"] for r in rungs] == trained
    below_top = rungs[-2]  # the cost a cost-aware pruner read at the last rung it decided
    per_epoch = below_top["train_seconds"] / below_top["trained_epochs"]
    assert trial.user_attrs[EPOCH_SECONDS_ATTR] == round(per_epoch, 4)
    assert [r["mode"] for r in rungs] == ["retrain", promotion, promotion]
    for rung, epochs in zip(rungs, trained, strict=True):
        assert all(len(values) == epochs for values in rung["curves"].values())
        assert (
            rung["curves"]["val_accuracy"][-1]
            == rung["val_accuracy"]
            == trial.intermediate_values[rung["epochs"]]
        )
        assert rung["train_seconds"] > 0
        # the schedule spans the rung: its last step runs near the floor (a prefix of the 4-epoch schedule
        # would stop at or near the peak after 1 or 2 epochs)
        assert rung["last_lr"] < 0.02 * TINY["sgd_lr"]
        start = rung["curves"]["lr"][0] / TINY["sgd_lr"]
        assert start == pytest.approx(1 / 25 if schedule == "onecycle" else 1.0), "each rung starts afresh"
    assert trial.value == rungs[-1]["val_accuracy"] and trial.user_attrs["best_epoch"] == 4
    assert trial.user_attrs["val_loss"] == rungs[-1]["val_loss"]
    assert trial.user_attrs["epochs_trained"] == sum(trained)
    expected = (
        rungs[-1]["curves"]
        if promotion == "retrain"
        else {key: [v for r in rungs for v in r["curves"][key]] for key in rungs[0]["curves"]}
    )
    assert trial.user_attrs["curves"] == expected, "the curves of the training behind the final weights"
    model = load_model(trial, tmp_path / trial.user_attrs["checkpoint"])
    assert accuracy(model, fashion.x_holdout, fashion.y_holdout) == pytest.approx(trial.value)
    assert trial.user_attrs["n_val"] == 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-00000.pt"], "progress files are gone"


def test_a_promotion_by_continuing_starts_from_the_previous_rungs_weights(fashion, tmp_path) -> None:
    trial = rung_study(fashion, tmp_path, promotion="continue").trials[0]
    cfg = MyNetTrialConfig.from_dict(trial.user_attrs["config"])
    seed = trial.user_attrs["seed"]
    validation = Validation(fashion.x_holdout, fashion.y_holdout, 200, frozenset(), "additional")
    torch.manual_seed(seed)
    model = MyNet(cfg.model).to(memory_format=torch.channels_last)
    for epochs in (1, 1, 2):  # one network through three schedules of 1, 1 and 2 epochs
        fit(
            model,
            replace(cfg.train, epochs=epochs),
            cfg.augment,
            (fashion.x_train, fashion.y_train),
            replace(validation, full_epochs=frozenset({epochs})).at,
            generator=torch.Generator().manual_seed(seed),
        )
    weights = torch.load(tmp_path / trial.user_attrs["checkpoint"], weights_only=True)
    assert all(torch.equal(weights[key], value) for key, value in model.state_dict().items())


def test_a_pruned_trial_carries_its_rungs_and_reason(fashion, tmp_path) -> None:
    searched = {"sgd_lr": {"low": 1e-6, "high": 0.1, "log": True}, "schedule": ["onecycle", "constant"]}
    good, hopeless = {"sgd_lr": 0.05, "schedule": "onecycle"}, {"sgd_lr": 1e-6, "schedule": "constant"}
    study = rung_study(fashion, tmp_path, n_trials=2, enqueue=[good, hopeless], **searched)
    good, bad = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert [r["epochs"] for r in bad.user_attrs["rungs"]] == [1] and list(bad.intermediate_values) == [1]
    assert bad.user_attrs["prune_reason"].startswith("pruned at epoch 1 with val_accuracy")
    assert bad.user_attrs["pruned_epoch"] == 1 and bad.user_attrs["epochs_trained"] == 1
    assert bad.user_attrs["curves"] == bad.user_attrs["rungs"][0]["curves"]
    assert "checkpoint" not in bad.user_attrs


# retrain: epoch 3 exists only in the last rung (4 epochs), so the worker dies there after rungs of 1 and 2;
# continue (rungs train 1, 1, 2 epochs): it dies at the 2-epoch rung's report, after that rung's one epoch
@pytest.mark.parametrize(("promotion", "die_after", "saved"), [("retrain", 3, 3), ("continue", 2, 1)])
@pytest.mark.slow
def test_a_retry_continues_the_rung_its_dead_predecessor_was_in(
    fashion, tmp_path, promotion, die_after, saved
) -> None:
    space = SPACE.with_overrides({**TINY, "dropout": 0.2, "promotion": promotion})
    reference_dir, retry_dir = tmp_path / "reference", tmp_path / "retry"
    reference_dir.mkdir(), retry_dir.mkdir()
    reference = optuna.create_study(direction="maximize", pruner=RungPruner(PLAN))
    reference.optimize(lambda t: objective(t, fashion, space, TrialContext(reference_dir, "cpu")), n_trials=1)

    study = optuna.create_study(direction="maximize", pruner=RungPruner(PLAN))
    run = lambda t, c: objective(t, fashion, space, c)  # noqa: E731
    _, retry = die_then_retry(study, run, retry_dir, die_after=die_after)
    expected = reference.trials[0]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": saved}  # the rung's own epochs
    assert retry.intermediate_values == expected.intermediate_values and retry.value == expected.value

    def without_time(rungs):
        return [{k: v for k, v in r.items() if k not in ("train_seconds", "last_lr")} for r in rungs]

    assert without_time(retry.user_attrs["rungs"]) == without_time(expected.user_attrs["rungs"])
    assert "completed_rung_1" in retry.system_attrs, "the pruner saw the rungs it had passed"
    weights = torch.load(retry_dir / retry.user_attrs["checkpoint"], weights_only=True)
    uninterrupted = torch.load(reference_dir / expected.user_attrs["checkpoint"], weights_only=True)
    assert all(torch.equal(weights[key], value) for key, value in uninterrupted.items())
    assert sorted(p.name for p in retry_dir.iterdir()) == ["trial-00001.pt"], "progress files are gone"
