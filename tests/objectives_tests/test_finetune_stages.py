"""The staged finetune search: probes on cached features (never pruned), then fine-tuning of the leading
probe configuration, warm-started from the probe's head."""

from __future__ import annotations

import optuna
import pytest
import torch

from objectives import TrialContext, get_task
from objectives.finetune.objective import load_data
from objectives.finetune.stages import head_digest, is_staged

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TASK = get_task("finetune")
SMALL = {"epochs": 1, "batch_size": 32, "freeze_k": 1, "augment": ["none", "flip_crop"], "probe_trials": 2}


@pytest.fixture(scope="module")
def data(photos_dir):
    return load_data(str(photos_dir), {**TASK.space.settings(), "max_images": 100})


def test_finetune_stages_are_on_only_when_the_space_draws_probes_and_fine_tuning() -> None:
    assert is_staged(TASK.space)
    assert not is_staged(TASK.space.with_overrides({"freeze": "linear"}))
    assert not is_staged(TASK.space.with_overrides({"freeze": ["last_k", "full"]}))
    assert not is_staged(TASK.space.with_overrides({"stages": False}))


@pytest.mark.slow
def test_finetune_stages_hand_the_probe_head_to_fine_tuning(data, small_finetune, tmp_path) -> None:
    space = TASK.space.with_overrides({**small_finetune, **SMALL})
    # a pruner that stops every trial it is asked about: neither probes nor staged fine-tune trials ask
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    context = TrialContext(checkpoint_dir=tmp_path, metric="proxy")
    study.optimize(lambda t: TASK.objective(t, data, space, context), n_trials=4)
    stages = [t.user_attrs["stage"] for t in study.trials]
    assert stages == ["probe", "probe", "probe", "finetune"]
    probes, tuned = study.trials[:3], study.trials[3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in probes), "probes are never pruned"
    assert [t.user_attrs["feature_cache"] for t in probes][1:] == ["hit", "hit"]
    assert probes[1].params["lr"] == 3e-3, "the grid's sensible probe"
    leader = max(probes[:2], key=lambda t: t.value)  # the leader when the third probe enqueued fine-tuning
    assert tuned.user_attrs["warm_start_from"] == leader.number
    assert tuned.params["freeze"] == "last_k"
    assert tuned.user_attrs["config"]["model"] == leader.user_attrs["config"]["model"]
    checkpoint = torch.load(tmp_path / leader.user_attrs["checkpoint"], weights_only=True)
    probe_head = {k.removeprefix("head."): v for k, v in checkpoint.items() if k.startswith("head.")}
    assert tuned.user_attrs["warm_start"] == {"trial": leader.number, "head_digest": head_digest(probe_head)}
    assert tuned.state == optuna.trial.TrialState.COMPLETE and list(tuned.intermediate_values) == [1]
    assert tuned.user_attrs["memory"]["accumulation_steps"] == 1
