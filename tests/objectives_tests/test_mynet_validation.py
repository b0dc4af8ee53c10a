"""``Validation``: which images validate a mynet trial and when all of them; ``decision_epochs``."""

from __future__ import annotations

import optuna
import pytest
import torch

from objectives.mynet.data import fashion_split, load_fashion
from objectives.mynet.validation import Validation, decision_epochs
from search.engine.algorithms import asha_rungs, make_pruner
from spaces.mynet import SPACE


def test_decision_epochs_are_the_pruners_rungs_and_the_last_epoch() -> None:
    assert decision_epochs(make_pruner("asha", 30), 30) == {*asha_rungs(30), 30} == {1, 3, 9, 27, 30}
    assert decision_epochs(make_pruner("hyperband", 30), 30) == {1, 3, 9, 27, 30}
    assert decision_epochs(make_pruner("none", 30), 30) == {30}
    assert decision_epochs(make_pruner("median", 30), 30) == set(range(1, 31))
    assert decision_epochs(optuna.pruners.SuccessiveHalvingPruner(), 30) == set(range(1, 31)), "auto: unknown"


def test_validation_uses_a_subset_between_decisions() -> None:
    x, y = torch.zeros(50, 1, 28, 28, dtype=torch.uint8), torch.arange(50)
    check = Validation(x, y, 10, frozenset({1, 5}), "additional")
    assert len(check.at(1)[1]) == 50 and len(check.at(5)[1]) == 50
    assert torch.equal(check.at(2)[1], y[:10])
    assert len(Validation(x, y, 0, frozenset({5}), "additional").at(2)[1]) == 50


@pytest.fixture(scope="module")
def images(data_dir):
    return load_fashion(data_dir)


def test_holdout_is_drawn_from_the_additional_images_disjoint_from_training(images) -> None:
    lab = fashion_split(images)
    split = fashion_split(images, holdout=10000)
    larger = fashion_split(images, data_fraction=0.5, holdout=10000)
    _, _, add = torch.utils.data.random_split(
        range(60000), [5400, 600, 54000], generator=torch.Generator().manual_seed(0)
    )
    held = torch.tensor(add.indices[-10000:])
    assert torch.equal(split.x_holdout, images.x_train[held])
    assert torch.equal(larger.y_holdout, split.y_holdout), "fixed whatever the training share"
    assert torch.equal(split.x_train, lab.x_train) and torch.equal(split.x_val, lab.x_val), "9 % unchanged"
    assert len(split.y_add) == 54000 - 10000 and torch.equal(split.x_add, lab.x_add[:44000])
    flat = {name: getattr(larger, name).flatten(1) for name in ("x_train", "x_val", "x_add", "x_holdout")}
    everything = torch.cat(list(flat.values()))
    assert len(everything) == 60000
    assert len(torch.unique(everything, dim=0)) == len(torch.unique(images.x_train.flatten(1), dim=0))
    assert torch.bincount(split.y_holdout).min() > 900, "a random sample holds every class"


def test_validation_for_trial_follows_the_settings(images) -> None:
    split = fashion_split(images, data_fraction=0.01, holdout=3000)
    settings = SPACE.with_overrides({"val_subset": 500}).settings()
    assert settings["val_source"] == "additional" and SPACE.settings()["val_images"] == 10000
    check = Validation.for_trial(split, settings, 30, make_pruner("asha", 30))
    assert check.source == "additional" and torch.equal(check.y, split.y_holdout)
    assert check.full_epochs == {1, 3, 9, 27, 30} and len(check.at(2)[1]) == 500
    lab = Validation.for_trial(split, {**settings, "val_source": "lab"}, 30, make_pruner("asha", 30))
    assert lab.source == "lab" and torch.equal(lab.y, split.y_val) and len(lab.at(2)[1]) == 600
