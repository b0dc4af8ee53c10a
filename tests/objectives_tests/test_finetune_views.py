"""Augmented views of the training photos for linear probes: what a view is, and that each view's features
are computed once and then come from the cache (trials, confirmation replicates)."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
import torch

from objectives import TrialContext, get_task
from objectives.finetune.objective import load_data
from objectives.finetune.replicate import retrain_finetune
from objectives.finetune.views import training_view
from objectives.replicate import Replicate

TASK = get_task("finetune")
PROBE = {
    "backbone": "tf_efficientnet_lite0",
    "resolution": 96,
    "head": "linear",
    "freeze": "linear",
    "augment": "none",
    "epochs": 2,
    "batch_size": 32,
}


@pytest.fixture(scope="module")
def data(photos_dir):
    return load_data(str(photos_dir), {**TASK.space.settings(), "max_images": 60})


def test_a_view_mirrors_and_changes_the_photos_the_same_way_every_time(data) -> None:
    x = data.x_train
    first = training_view(x, 0, 1.0)
    assert first.dtype == torch.uint8 and first.shape == x.shape
    assert torch.equal(first, training_view(x, 0, 1.0)), "a view depends on the photos, index, strength only"
    assert not torch.equal(first, training_view(x, 1, 1.0))
    changed = [not (torch.equal(a, b) or torch.equal(a, b.flip(-1))) for a, b in zip(first, x, strict=True)]
    assert all(changed), "at strength 1 every photo is under an imaging condition"
    mirrors_only = training_view(x, 0, 0.0)
    kinds = [torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(mirrors_only, x, strict=True)]
    assert all(kinds) and not torch.equal(mirrors_only, x), "strength 0: mirrored or untouched"


@pytest.mark.slow
def test_probe_views_are_computed_once_and_train_the_probe(data, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("RPZTUNE_CACHE", str(cache))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    context = TrialContext(checkpoint_dir=tmp_path, metric="proxy")
    for views in (2, 2, 1):
        space = TASK.space.with_overrides({**PROBE, "probe_views": views, "view_strength": 1.0})
        study.optimize(lambda t, s=space: TASK.objective(t, data, s, context), n_trials=1)
    first, second, third = study.trials
    assert [t.user_attrs["view_cache"] for t in study.trials] == [
        "0 of 2 views hit",
        "2 of 2 views hit",
        "1 of 1 views hit",
    ]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert (
        first.user_attrs["config"]["train"] | {"probe_views": 2, "view_strength": 1.0}
        == first.user_attrs["config"]["train"]
    )
    views = sorted(p.name.split("-")[-2] for p in cache.rglob("*-view*.pt"))
    assert views == ["view0", "view1"], "one cache file per view"

    # a confirmation replicate trains on the views of its own training rows, computed once for all photos
    trial = SimpleNamespace(number=first.number, user_attrs={"config": first.user_attrs["config"], "seed": 0})
    photos = len(data.y_train) + len(data.y_val)
    for _ in range(2):
        result = retrain_finetune(trial, data, Replicate("fold", 0, 2), {})
        assert 0.0 <= result["value"] <= 1.0 and result["n_train"] == photos // 2
    assert len(list(cache.rglob("*-all-view*.pt"))) == 2
