"""The memory cap of torch trials: over-memory configurations end pruned before training, gradient
accumulation keeps the batch, every trial records its peak RSS."""

from __future__ import annotations

import os

import optuna
import pytest

from objectives import TrialContext, get_task
from objectives.finetune.objective import build_model, load_data
from objectives.training.memory import (
    MARGIN,
    activation_bytes_per_image,
    default_max_memory_mb,
    estimate_train_mb,
    plan_batch,
    shared_cap,
)
from spaces.finetune import FinetuneTrialConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TASK = get_task("finetune")
FULL = {
    "backbone": "tf_efficientnet_lite0",
    "resolution": 96,
    "head": "linear",
    "freeze": "full",
    "augment": "none",
    "batch_size": 32,
    "epochs": 1,
}


@pytest.fixture(scope="module")
def data(photos_dir):
    return load_data(str(photos_dir), {**TASK.space.settings(), "max_images": 60})


def run(data, tmp_path, overrides) -> optuna.trial.FrozenTrial:
    space = TASK.space.with_overrides({**FULL, **overrides})
    study = optuna.create_study(direction="maximize")
    context = TrialContext(checkpoint_dir=tmp_path, metric="proxy")
    study.optimize(lambda t: TASK.objective(t, data, space, context), n_trials=1)
    return study.trials[0]


def test_memory_over_cap_configuration_is_pruned_with_its_reason_before_training(data, tmp_path) -> None:
    trial = run(data, tmp_path, {"max_memory_mb": 64})
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert "exceeds max_memory_mb=64" in trial.user_attrs["prune_reason"]
    assert "even at micro-batch 8" in trial.user_attrs["prune_reason"]
    assert trial.user_attrs["curves"]["proxy"] == [] and not trial.intermediate_values  # nothing trained
    assert trial.user_attrs["memory"]["estimate_mb"] > 64
    assert trial.user_attrs["peak_rss_mb"] > 0 and trial.user_attrs["peak_rss_scope"] == "trial"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_memory_cap_keeps_the_batch_through_gradient_accumulation(data, tmp_path) -> None:
    cfg = FinetuneTrialConfig.from_dict({"model": {k: FULL[k] for k in ("backbone", "resolution", "head")},
                                         "train": {"freeze": "full"}})  # fmt: skip
    model, _, _ = build_model(cfg, {})
    per_image = activation_bytes_per_image(model, (3, 96, 96))
    at_32 = estimate_train_mb(model, (3, 96, 96), 32, per_image=per_image)
    at_8 = estimate_train_mb(model, (3, 96, 96), 8, per_image=per_image)
    assert per_image[0] > 0 and at_32 > at_8
    cap = int((at_8 + at_32) / 2 * MARGIN)  # fits 8 or 16 images with the margin, not 32
    plan = plan_batch(model, (3, 96, 96), 32, {"max_memory_mb": cap})
    assert plan.reason is None and plan.micro_batch in (8, 16) and plan.micro_batch * plan.steps == 32
    assert plan_batch(model, (3, 96, 96), 32, {"max_memory_mb": cap}, accumulate=False).reason
    trial = run(data, tmp_path, {"max_memory_mb": cap})
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("prune_reason")
    assert trial.user_attrs["memory"]["accumulation_steps"] > 1
    assert trial.user_attrs["peak_rss_mb"] > 0


def test_memory_cap_prunes_an_over_memory_mynet_before_training(data_dir, tmp_path) -> None:
    mynet = get_task("mynet")
    split = mynet.load_data(str(data_dir), {**mynet.space.settings(), "data_fraction": 0.01})
    space = mynet.space.with_overrides({"max_memory_mb": 32, "epochs": 1})
    study = optuna.create_study(direction="maximize")
    context = TrialContext(checkpoint_dir=tmp_path, metric="val_accuracy", device="cpu")
    study.optimize(lambda t: mynet.objective(t, split, space, context), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert "exceeds max_memory_mb=32" in trial.user_attrs["prune_reason"]
    assert not trial.intermediate_values and trial.user_attrs["peak_rss_mb"] > 0


def test_the_default_cap_shares_half_the_ram_among_more_than_two_workers() -> None:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    assert default_max_memory_mb() == default_max_memory_mb(2) == int(min(4096, ram / 4))
    for workers in (3, 4, 16, 64):
        cap = default_max_memory_mb(workers)
        assert cap == int(min(4096, ram / (2 * workers))) and cap * workers <= ram / 2
    assert default_max_memory_mb(64) < default_max_memory_mb(1)  # below 4096 on any machine under 512 GiB


def test_a_workers_shared_cap_leaves_a_cap_the_user_set_and_tasks_without_one_alone() -> None:
    assert shared_cap({"max_memory_mb": None, "epochs": 3}, 8) == {"max_memory_mb": default_max_memory_mb(8)}
    assert shared_cap({"max_memory_mb": 3000}, 8) == {}
    assert shared_cap({"folds": 5}, 8) == {}
