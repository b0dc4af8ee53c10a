"""A finetune trial ends by its run's deadline whatever its time plan estimated: during feature extraction it
is pruned (DeadlineReached) and caches nothing, during training it completes with its best epoch so far; a
refit that reaches its deadline writes nothing. The deadline is scripted (it passes at a given check, or once
an epoch was reported), never left to this machine's speed, except in the test that slows the work on
purpose against the real clock, which asserts only what any speed gives."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from models.finetune import FinetuneNet
from objectives import DeadlineReached, TrialContext, get_task
from objectives.finetune.objective import NET_CHUNK, FinetuneData, load_data, load_model
from objectives.finetune.proxy import proxy_score
from objectives.hooks import RefitRequest
from objectives.training.resume import Resume
from spaces.finetune import FinetuneTrialConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # two threads spin on a loaded machine

TASK = get_task("finetune")
FAST = {"backbone": "tf_efficientnet_lite0", "resolution": 96, "batch_size": 32, "head": "linear"}
PROBE = {"freeze": "linear", "augment": "none", "epochs": 3}  # head on cached features (fit_head)
TUNE = {"freeze": "last_k", "freeze_k": 1, "augment": "none", "epochs": 3}  # fit_model


@dataclass(frozen=True)
class Scripted(TrialContext):
    """A context whose deadline passes at its ``at_check``-th check, or at the ``grace + 1``-th check once
    ``after_epochs`` epochs were reported: never by the clock."""

    at_check: int | None = None
    after_epochs: int | None = None
    grace: int = 0
    checks: list[int] = field(default_factory=list)  # the epochs reported at each check
    reported: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "progress", lambda number, epoch, value: self.reported.append(epoch))

    def out_of_time(self) -> bool:
        self.checks.append(len(self.reported))
        if self.at_check is not None:
            return len(self.checks) >= self.at_check
        return self.after_epochs is not None and sum(n >= self.after_epochs for n in self.checks) > self.grace


@dataclass(frozen=True)
class ScriptedRefit(RefitRequest):
    """A refit request whose deadline passes at its ``at_check``-th check."""

    at_check: int = 1
    checks: list[int] = field(default_factory=list)

    def out_of_time(self) -> bool:
        self.checks.append(len(self.checks) + 1)
        return len(self.checks) >= self.at_check


@pytest.fixture(scope="module")
def data(photos_dir) -> FinetuneData:
    return load_data(str(photos_dir), {**TASK.space.settings(), "max_images": 50})


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty feature cache, whatever other tests cached."""
    monkeypatch.setenv("RPZTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


def cached(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.pt"))


def run_one(study: optuna.Study, data, training: dict, context: TrialContext) -> optuna.trial.FrozenTrial:
    """One trial of ``training`` told to ``study``: COMPLETE with its value, or PRUNED (re-raising why)."""
    trial = study.ask()
    try:
        value = TASK.objective(trial, data, TASK.space.with_overrides({**FAST, **training}), context)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        raise
    study.tell(trial, value)
    return study.trials[-1]


def test_a_deadline_during_feature_extraction_prunes_and_leaves_the_cache_without_an_entry(
    data, tmp_path, cache
) -> None:
    study = optuna.create_study(direction="maximize")
    # the first chunk of training photos is extracted, the deadline has passed at the second
    with pytest.raises(DeadlineReached):
        run_one(study, data, PROBE, Scripted(tmp_path, metric="proxy", at_check=2))
    trial = study.trials[0]
    where = "while extracting tf_efficientnet_lite0 features at 96 px (train photos: 32 of 40 done)"
    assert trial.state == TrialState.PRUNED and trial.user_attrs["deadline_stop"] == where
    assert trial.user_attrs["prune_reason"] == f"the run's deadline came {where}, before any epoch ended"
    assert trial.user_attrs["pruned_epoch"] == 0 and trial.intermediate_values == {}
    assert "checkpoint" not in trial.user_attrs and not list(tmp_path.glob("trial-*"))
    assert cached(cache) == [], "no partial features"

    later = run_one(study, data, PROBE, TrialContext(tmp_path, metric="proxy"))
    assert later.state == TrialState.COMPLETE and later.user_attrs["feature_cache"] == "miss"
    assert "deadline_stop" not in later.user_attrs and len(later.user_attrs["curves"]["proxy"]) == 3
    (entry,) = cached(cache)
    features = torch.load(entry, weights_only=True)
    assert {name: len(x) for name, x in features.items()} == {"train": 40, "val": 10, "aug": 20}


@pytest.mark.parametrize("training", [PROBE, TUNE], ids=["probe", "tune"])
def test_a_deadline_in_the_second_epoch_completes_with_the_first_and_its_weights(
    data, tmp_path, cache, monkeypatch, training
) -> None:
    saved: list[dict] = []
    save = Resume.save
    monkeypatch.setattr(Resume, "save", lambda self, state: (saved.append(state), save(self, state)))
    # 40 photos, 16 a batch: the deadline passes before epoch 2's second step, its first has changed weights
    context = Scripted(tmp_path, metric="proxy", after_epochs=1, grace=1)
    trial = run_one(optuna.create_study(direction="maximize"), data, {**training, "batch_size": 16}, context)
    attrs = trial.user_attrs
    assert trial.state == TrialState.COMPLETE and context.reported == [1]
    assert attrs["deadline_stop"] == "in epoch 2 of 3; completed with epoch 1"
    assert attrs["best_epoch"] == 1 and attrs["config"]["train"]["epochs"] == 3
    assert all(len(values) == 1 for values in attrs["curves"].values()), attrs["curves"]
    assert trial.value == attrs["curves"]["proxy"][0] and trial.intermediate_values == {1: trial.value}
    checkpoint = torch.load(tmp_path / attrs["checkpoint"], weights_only=True)
    (epoch_1,) = saved  # the progress saved after epoch 1 holds its weights (the head's alone for a probe)
    prefix = "head." if training is PROBE else ""
    assert epoch_1["epoch"] == 1
    assert all(torch.equal(checkpoint[prefix + k], v) for k, v in epoch_1["model"].items())
    model = load_model(trial, tmp_path / attrs["checkpoint"])  # the value is the saved weights' own
    assert scores(model, data) == pytest.approx((attrs["orig_acc"], attrs["aug_acc"], trial.value))


def scores(model: FinetuneNet, data: FinetuneData) -> tuple[float, float, float]:
    """ORIG and AUG accuracy and the proxy of ``model`` on the validation photos, chunked as in training."""
    with torch.inference_mode():

        def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
            logits = torch.cat(
                [model(x[i : i + NET_CHUNK].float() / 255) for i in range(0, len(x), NET_CHUNK)]
            )
            return float((logits.argmax(1) == y).float().mean())

        orig, aug = accuracy(data.x_val, data.y_val), accuracy(data.x_aug, data.y_aug)
    return orig, aug, proxy_score(orig, aug)


@pytest.mark.slow
def test_a_refit_that_reaches_its_deadline_raises_and_writes_nothing(data, tmp_path, cache) -> None:
    cfg = FinetuneTrialConfig.from_dict(
        {
            "model": {"backbone": "tf_efficientnet_lite0", "resolution": 96},
            "train": {"epochs": 2, "batch_size": 16},
        }
    )
    trial = optuna.trial.create_trial(
        value=0.9, user_attrs={"config": cfg.to_dict(), "seed": 0, "best_epoch": 2}
    )
    settings = TASK.space.settings()
    path = tmp_path / "refit-00000.pt"
    with pytest.raises(DeadlineReached, match="reached its deadline before it started"):
        TASK.refit.train(trial, data, path, RefitRequest(settings=settings, deadline=time.time() - 1))
    # check 1 before the refit, 2 before the first chunk of photos: the second chunk finds it passed (no
    # confirmation cached every photo, so the refit takes the search's split: 40 training photos of 50)
    extracting = r"while extracting .* \(train photos: 32 of 40 done\); nothing was written"
    with pytest.raises(DeadlineReached, match=extracting):
        TASK.refit.train(trial, data, path, ScriptedRefit(settings=settings, at_check=3))
    assert not path.exists() and cached(cache) == []

    record = TASK.refit.train(trial, data, path, RefitRequest(settings=settings))  # caches the features
    assert path.is_file() and record["epochs"] == 2 and len(cached(cache)) == 1
    # features cached: check 1 before the refit, 2-4 before epoch 1's 3 steps (50 photos, 16 a batch), 5
    # before epoch 2's first
    other = tmp_path / "refit-00001.pt"
    with pytest.raises(DeadlineReached, match=r"in epoch 2 of 2; nothing was written"):
        TASK.refit.train(trial, data, other, ScriptedRefit(settings=settings, at_check=5))
    assert not other.exists() and sorted(p.name for p in tmp_path.glob("refit-*")) == [path.name]


@pytest.mark.slow  # it sleeps 2 s at least
def test_a_trial_slowed_after_its_plan_said_it_fits_still_ends_at_the_real_deadline(
    data, tmp_path, cache, monkeypatch
) -> None:
    context = TrialContext(tmp_path, metric="proxy", deadline=time.time() + 600, timeout=600)
    slowed: list[bool] = []

    def estimate(*args: object) -> tuple[float, float]:  # every epoch fits easily in the 2 s then left
        object.__setattr__(context, "deadline", time.time() + 2)
        slowed.append(True)
        return 1e-8, 1e-8

    forward = FinetuneNet.forward

    def slow_forward(self: FinetuneNet, x: torch.Tensor) -> torch.Tensor:  # the machine got busier
        if slowed:
            time.sleep(0.4)
        return forward(self, x)

    module = importlib.import_module("objectives.finetune.objective")  # the package's `objective`: a function
    monkeypatch.setattr(module, "seconds_per_image", estimate)
    monkeypatch.setattr(FinetuneNet, "forward", slow_forward)
    study = optuna.create_study(direction="maximize")
    try:
        run_one(study, data, TUNE, context)
    except DeadlineReached:  # it came before epoch 1 ended: how far a trial gets depends on the load
        pass
    trial = study.trials[0]
    attrs = trial.user_attrs
    # an epoch sleeps 1.2 s (a training batch of 32, one chunk each of 10 and 20 evaluated): 3 cannot end
    # within 2 s
    assert attrs["time_plan"]["epochs"] == 3 and attrs["config"]["train"]["epochs"] == 3
    assert "deadline_stop" in attrs and len(attrs["curves"]["proxy"]) < 3
    if trial.state == TrialState.COMPLETE:
        assert trial.value == max(attrs["curves"]["proxy"])
        assert attrs["deadline_stop"].endswith(f"completed with epoch {attrs['best_epoch']}")
    else:
        assert trial.state == TrialState.PRUNED and attrs["curves"]["proxy"] == []
        assert attrs["prune_reason"].startswith("the run's deadline came in epoch 1 of 3")


def test_a_replicate_takes_the_photos_features_from_the_split_and_extracts_their_copies_once(
    data, cache
) -> None:
    from objectives.finetune.objective import build_model, split_features
    from objectives.finetune.replicate import retrain_finetune
    from objectives.replicate import Replicate

    cfg = FinetuneTrialConfig.from_dict(
        {"model": {"backbone": "tf_efficientnet_lite0", "resolution": 96}, "train": {"epochs": 1}}
    )
    trial = optuna.trial.create_trial(value=0.9, user_attrs={"config": cfg.to_dict(), "seed": 0})
    settings = TASK.space.settings()
    model, _, tags = build_model(cfg, settings)
    split_features(model, data, tags)  # what the search's trial cached
    assert len(cached(cache)) == 1
    retrain_finetune(trial, data, Replicate("fold", 0, 5), settings, device="cpu")
    files = cached(cache)
    copies = [torch.load(f, weights_only=True) for f in files if f.name.endswith("-all-aug.pt")]
    n = len(data.y_train) + len(data.y_val)
    assert len(files) == 2 and [set(c) for c in copies] == [{"aug"}], "only the copies were extracted"
    assert len(copies[0]["aug"]) == n * len(data.y_aug) // len(data.y_val)
    retrain_finetune(trial, data, Replicate("fold", 1, 5), settings, device="cpu")
    assert cached(cache) == files, "the next replicate extracts nothing"
