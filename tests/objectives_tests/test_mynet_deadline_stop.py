"""A mynet trial or refit the run's deadline reaches stops there, whatever its plan estimated: it completes
with its last valid value (a complete rung, an epoch validated on all the images) or ends DeadlineReached,
on real FashionMNIST with a tiny network. The deadline comes after a set number of training steps, so no
outcome depends on the machine's speed or load; one test slows training on purpose under a real deadline."""

from __future__ import annotations

import importlib
import re
import time
from dataclasses import dataclass, field

import optuna
import pytest
import torch
from rpz_mynet import TINY as SHARED_TINY
from rpz_resume import die_then_retry

from models import MyNet
from objectives import DeadlineReached, TrialContext, get_task
from objectives.hooks import RefitRequest
from objectives.mynet.objective import load_data, load_model, objective, refit
from objectives.rung_pruner import RungPlan, RungPruner
from objectives.training.fit import accuracy
from spaces.mynet import SPACE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {**SHARED_TINY, "batch_size": 32, "data_fraction": 0.01, "val_images": 1000, "val_subset": 200}
PLAN = RungPlan(4, factor=2)  # rungs of 1, 2 and 4 epochs
STEPS = 18  # an epoch's steps: 600 training images in batches of 32


@dataclass(frozen=True)
class DeadlineAfter(TrialContext):
    """A context whose deadline has passed once training has taken ``steps`` steps (``fit`` asks before
    each)."""

    steps: int = 0
    asked: list[None] = field(default_factory=list)

    def out_of_time(self) -> bool:
        self.asked.append(None)
        return len(self.asked) > self.steps


@pytest.fixture(scope="module")
def fashion(data_dir):
    split = load_data(str(data_dir), SPACE.with_overrides(TINY).settings())
    assert len(split.y_train) // TINY["batch_size"] == STEPS
    return split


def run(fashion, context: TrialContext, pruner=None, **overrides) -> optuna.trial.FrozenTrial:
    """One trial under ``pruner`` (default: the rungs of PLAN); a trial that raises is stored PRUNED."""
    study = optuna.create_study(direction="maximize", pruner=pruner or RungPruner(PLAN))
    space = SPACE.with_overrides({**TINY, **overrides})
    study.optimize(lambda t: objective(t, fashion, space, context), n_trials=1)
    return study.trials[0]


def scores(trial: optuna.trial.FrozenTrial, fashion, folder) -> float:
    """What the trial's checkpoint scores on its validation images (the holdout)."""
    return accuracy(
        load_model(trial, folder / trial.user_attrs["checkpoint"]), fashion.x_holdout, fashion.y_holdout
    )


@pytest.mark.parametrize(
    ("promotion", "stop"),
    [
        ("retrain", "in epoch 2 of 2 of rung 2; completed with rung 1 (1 epoch)"),
        (
            "continue",
            "in epoch 1 of 2 of rung 3 (continuing rung 2 to 4 epochs); completed with rung 2 (2 epochs)",
        ),
    ],
)
def test_a_trial_the_deadline_reaches_in_a_rung_completes_with_the_rung_before(
    fashion, tmp_path, promotion, stop
) -> None:
    # 41 steps run: rung 1's 18, then 23 (retrain: into rung 2's second epoch; continue: rung 2's one epoch,
    # then into rung 3's first)
    context = DeadlineAfter(tmp_path, "cpu", "val_accuracy", steps=2 * STEPS + 5)
    trial = run(fashion, context, promotion=promotion)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["deadline_stop"] == stop
    rungs = trial.user_attrs["rungs"]
    value_rung = rungs[-1]
    assert [r["epochs"] for r in rungs] == ([1] if promotion == "retrain" else [1, 2])
    assert list(trial.intermediate_values) == [r["epochs"] for r in rungs], "nothing reported after the rung"
    assert trial.value == value_rung["val_accuracy"] == trial.intermediate_values[value_rung["epochs"]]
    assert (
        trial.user_attrs["best_epoch"]
        == value_rung["epochs"]
        == trial.user_attrs["config"]["train"]["epochs"]
    )
    assert trial.user_attrs["val_loss"] == value_rung["val_loss"]
    assert len(trial.user_attrs["curves"]["val_accuracy"]) == value_rung["epochs"], "the training behind it"
    assert trial.user_attrs["curves"]["val_accuracy"][-1] == trial.value
    assert scores(trial, fashion, tmp_path) == pytest.approx(trial.value), "the rung's own weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-00000.pt"], "progress files are gone"


def test_a_trial_the_deadline_reaches_in_its_first_rung_ends_deadline_reached(fashion, tmp_path) -> None:
    context = DeadlineAfter(tmp_path, "cpu", "val_accuracy", steps=5)
    study = optuna.create_study(direction="maximize", pruner=RungPruner(PLAN))
    with pytest.raises(DeadlineReached):  # its worker starts no more trials
        objective(study.ask(), fashion, SPACE.with_overrides(TINY), context)
    study.tell(0, state=optuna.trial.TrialState.PRUNED)
    trial = study.trials[0]
    where = "in epoch 1 of 1 of rung 1: no complete rung"
    assert trial.user_attrs["deadline_stop"] == where
    assert trial.user_attrs["prune_reason"] == f"the run's deadline came {where}"
    assert trial.intermediate_values == {} and "checkpoint" not in trial.user_attrs
    assert trial.user_attrs["epochs_trained"] == 0 and trial.user_attrs["pruned_epoch"] == 1
    assert [(r["epochs"], r["deadline"]) for r in trial.user_attrs["rungs"]] == [(1, True)], (
        "the rung it was in"
    )
    assert list(tmp_path.iterdir()) == [], "no checkpoint, no progress file"


# retrain: the worker dies in epoch 3 of the 4-epoch rung, and the deadline comes as its retry continues that
# rung: the 2-epoch rung's weights come from the progress file. continue (rungs train 1, 1 and 2 epochs): it
# dies at the 2-epoch rung's report; the retry ends that rung from the file, and the deadline comes next.
@pytest.mark.parametrize(
    ("promotion", "die_after", "saved", "stop"),
    [
        ("retrain", 3, 3, "in epoch 4 of 4 of rung 3"),
        ("continue", 2, 1, "in epoch 1 of 2 of rung 3 (continuing rung 2 to 4 epochs)"),
    ],
)
def test_a_retry_the_deadline_reaches_completes_with_the_rung_its_predecessor_ended(
    fashion, tmp_path, promotion, die_after, saved, stop
) -> None:
    stopping = DeadlineAfter(tmp_path, "cpu", "val_accuracy", steps=5)
    space = SPACE.with_overrides({**TINY, "promotion": promotion})
    study = optuna.create_study(direction="maximize", pruner=RungPruner(PLAN))
    run_trial = lambda t, c: objective(t, fashion, space, c if c.progress else stopping)  # noqa: E731
    _, retry = die_then_retry(study, run_trial, tmp_path, die_after=die_after)
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": saved}
    assert retry.user_attrs["deadline_stop"] == f"{stop}; completed with rung 2 (2 epochs)"
    rungs = retry.user_attrs["rungs"]
    assert [r["epochs"] for r in rungs] == [1, 2] and list(retry.intermediate_values) == [1, 2]
    assert retry.value == rungs[-1]["val_accuracy"] and retry.user_attrs["best_epoch"] == 2
    assert scores(retry, fashion, tmp_path) == pytest.approx(retry.value), "rung 2's weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-00001.pt"], "progress files are gone"


def test_a_trial_stops_at_the_deadline_when_its_plan_was_wrong(fashion, tmp_path, monkeypatch) -> None:
    # The plan says every rung fits; once rung 1 has ended the deadline is a second away and every step
    # sleeps 0.05 s: rung 2's 36 steps sleep 1.8 s, so it cannot end in time however fast the machine.
    rungs_module = importlib.import_module("objectives.mynet.rungs")
    monkeypatch.setattr(rungs_module, "rung_overruns", lambda *args, **kwargs: None)
    slow = []
    forward = MyNet.forward

    def slowed(self, x: torch.Tensor) -> torch.Tensor:
        if slow and self.training:
            time.sleep(0.05)
        return forward(self, x)

    monkeypatch.setattr(MyNet, "forward", slowed)

    def busier(number: int, epoch: int, value: float) -> None:  # rung 1's only epoch has ended
        if not slow:
            slow.append(epoch)
            object.__setattr__(context, "deadline", time.time() + 1.0)

    context = TrialContext(tmp_path, "cpu", "val_accuracy", progress=busier, deadline=time.time() + 600)
    trial = run(fashion, context, promotion="retrain")
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert re.fullmatch(
        r"in epoch [12] of 2 of rung 2; completed with rung 1 \(1 epoch\)", trial.user_attrs["deadline_stop"]
    )
    assert [r["epochs"] for r in trial.user_attrs["rungs"]] == [1] and list(trial.intermediate_values) == [1]
    assert trial.value == trial.user_attrs["rungs"][0]["val_accuracy"]
    assert scores(trial, fashion, tmp_path) == pytest.approx(trial.value)


def test_an_epoch_by_epoch_trial_completes_with_its_last_epoch_validated_on_all_images(
    fashion, tmp_path
) -> None:
    # successive halving from 1 epoch by 2: all 1,000 validation images at epochs 1, 2 and 4, 200 at epoch 3
    halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    context = DeadlineAfter(tmp_path, "cpu", "val_accuracy", steps=3 * STEPS + 5)
    trial = run(fashion, context, pruner=halving)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["deadline_stop"] == "in epoch 4 of 4; completed with epoch 2"
    assert list(trial.intermediate_values) == [1, 2, 3]
    assert trial.value == trial.intermediate_values[2] and trial.user_attrs["best_epoch"] == 2
    assert trial.user_attrs["curves"]["val_accuracy"] == [trial.intermediate_values[e] for e in (1, 2)]
    assert scores(trial, fashion, tmp_path) == pytest.approx(trial.value)

    nothing_full = DeadlineAfter(tmp_path, "cpu", "val_accuracy", steps=5)  # all images at epoch 4 only
    pruned = run(fashion, nothing_full, pruner=optuna.pruners.NopPruner())
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert pruned.user_attrs["prune_reason"] == (
        "the run's deadline came in epoch 1 of 4: no epoch validated on all the images"
    )


def test_a_refit_the_deadline_reaches_writes_nothing(fashion, tmp_path) -> None:
    trial = run(
        fashion, TrialContext(tmp_path, "cpu", "val_accuracy"), pruner=optuna.pruners.NopPruner(), epochs=1
    )
    hook = get_task("mynet").refit.train
    out = tmp_path / "refits"
    out.mkdir()
    with pytest.raises(DeadlineReached, match="in epoch 1 of 1 of trial 0's refit: refit.pt not written"):
        hook(trial, fashion, out / "refit.pt", RefitRequest(device="cpu", deadline=time.time() - 1))
    steps = iter(range(1_000))  # 1,200 images in batches of 32: 37 steps an epoch
    with pytest.raises(DeadlineReached, match="in epoch 2 of 2 "):
        refit(trial, fashion, out / "refit.pt", device="cpu", epochs=2, stop=lambda: next(steps) >= 40)
    assert list(out.iterdir()) == [], "nothing written, not even a temporary file"
    record = hook(trial, fashion, out / "refit.pt", RefitRequest(device="cpu", deadline=time.time() + 3600))
    assert record["epochs"] == 1 and [p.name for p in out.iterdir()] == ["refit.pt"]
