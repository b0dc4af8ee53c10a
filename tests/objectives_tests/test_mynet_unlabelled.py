"""MyNet's consistency training on the unlabelled "additional" images: it changes what is learnt, it never
reads a label of those images, and never an image of the validation holdout confirmation scores on; the
same for distillation of teachers into one MyNet on those images."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import optuna
import pytest
import torch
from rpz_mynet import TINY

from models import MyNet
from objectives import get_task
from objectives.mynet.data import fashion_split, load_fashion, unlabelled_images
from objectives.mynet.distill import distillation_targets
from objectives.mynet.replicate import retrain_mynet
from objectives.replicate import Replicate
from objectives.training.fit import fit
from spaces.mynet import suggest

TASK = get_task("mynet")


@pytest.fixture(scope="module")
def split(data_dir):
    return fashion_split(load_fashion(data_dir), data_fraction=0.01, holdout=2000)


@pytest.fixture(scope="module")
def small_split(split):
    """The split with 3,000 additional images: a cheaper teacher pass."""
    return replace(split, x_add=split.x_add[:3000], y_add=split.y_add[:3000], _on={})


def config(**overrides) -> dict:
    space = TASK.space.with_overrides({**TINY, "epochs": 2, **overrides})
    return suggest(optuna.trial.FixedTrial({}), space).to_dict()


def test_the_unlabelled_images_are_the_additional_ones_without_labels_or_holdout(split) -> None:
    cfg = suggest(optuna.trial.FixedTrial({}), TASK.space.with_overrides({**TINY, "unlabelled_weight": 1.0}))
    unlabelled = unlabelled_images(cfg.train, split)
    assert unlabelled.images is split.x_add and (unlabelled.weight, unlabelled.threshold) == (1.0, 0.95)
    assert len(split.y_add) + len(split.y_holdout) + 600 + 600 == 60000  # train, val, additional, holdout
    assert unlabelled_images(replace(cfg.train, unlabelled_weight=0.0), split) is None


def test_consistency_training_reads_no_unlabelled_label_and_no_holdout_image(split) -> None:
    def trained(data, **overrides) -> float:
        trial = SimpleNamespace(number=0, user_attrs={"config": config(**overrides), "seed": 0})
        return retrain_mynet(trial, data, Replicate("seed", 0, 1), {}, device="cpu")["test_accuracy"]

    on = {"unlabelled_weight": 1.0, "pseudo_threshold": 0.5}
    clean = trained(split, **on)
    generator = torch.Generator().manual_seed(0)
    poisoned = replace(
        split,
        y_add=torch.randint(10, split.y_add.shape, generator=generator),  # random labels
        x_holdout=torch.full_like(split.x_holdout, 255),  # a holdout image trained on would change the model
        _on={},
    )
    assert trained(poisoned, **on) == clean
    assert trained(split) != clean, "the unlabelled images change what is learnt"


def test_distillation_targets_are_the_teachers_mean_on_the_additional_images_only(small_split) -> None:
    split = small_split
    cfg = suggest(optuna.trial.FixedTrial({}), TASK.space.with_overrides({**TINY, "epochs": 1}))
    teachers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        teachers.append(MyNet(cfg.model).eval())
    targets = distillation_targets(teachers, split.x_add, weight=0.5)
    assert targets.images is split.x_add and targets.weight == 0.5
    x = split.x_add[:7].float().div(255)
    with torch.no_grad():
        expected = (teachers[0](x).exp() + teachers[1](x).exp()) / 2
    assert torch.allclose(targets.teacher[:7], expected, atol=1e-6)
    assert torch.allclose(targets.teacher.sum(1), torch.ones(len(split.x_add)), atol=1e-5)


def test_distillation_reads_no_unlabelled_label_and_no_holdout_image(small_split) -> None:
    split = small_split
    cfg = suggest(optuna.trial.FixedTrial({}), TASK.space.with_overrides({**TINY, "epochs": 1}))
    torch.manual_seed(5)
    teacher = MyNet(cfg.model)
    fit(teacher, cfg.train, cfg.augment, (split.x_train, split.y_train), None, generator=torch.Generator())

    def student(data, distil: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = MyNet(cfg.model)
        targets = distillation_targets([teacher], data.x_add) if distil else None
        train = (data.x_train, data.y_train)
        fit(
            model,
            cfg.train,
            cfg.augment,
            train,
            None,
            generator=torch.Generator().manual_seed(0),
            unlabelled=targets,
        )
        with torch.no_grad():
            return model.eval()(split.x_test[:500].float().div(255))

    clean = student(split, True)
    poisoned = replace(
        split,
        y_add=torch.randint(10, split.y_add.shape, generator=torch.Generator().manual_seed(0)),
        x_holdout=torch.full_like(split.x_holdout, 255),
        _on={},
    )
    assert torch.equal(student(poisoned, True), clean)
    assert not torch.equal(student(split, False), clean), "the teacher's targets change what is learnt"
