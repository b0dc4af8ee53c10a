from __future__ import annotations

import optuna
import pytest

from models import MyNet
from spaces import SpaceError
from spaces.mynet import BASELINE, SPACE, MyNetTrialConfig, suggest


def test_suggest_draws_conditional_parameters_only_when_they_apply() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"stages": set(), "optimizer": set(), "schedule": set()}
    for _ in range(40):
        trial = study.ask()
        cfg = suggest(trial)
        stages = len(cfg.model.channels)
        seen["stages"].add(stages)
        seen["optimizer"].add(cfg.train.optimizer)
        assert 1 <= stages <= 4 and 8 <= cfg.model.channels[0] <= 32
        assert cfg.model.channels == tuple(trial.params["channels"] * 2**i for i in range(stages))
        assert ("growth" in trial.params) is False, "growth is fixed at 2 by default"
        assert ("fc_width" in trial.params) == bool(cfg.model.hidden)
        other = "adamw" if cfg.train.optimizer == "sgd" else "sgd"
        assert f"{cfg.train.optimizer}_lr" in trial.params and f"{other}_lr" not in trial.params
        assert cfg.train.lr == trial.params[f"{cfg.train.optimizer}_lr"]
        assert cfg.train.epochs == 15 and "epochs" not in trial.params
        seen["schedule"].add(cfg.train.schedule)
        study.tell(trial, 0.5)
    assert seen == {
        "stages": {1, 2, 3, 4},
        "optimizer": {"sgd", "adamw"},
        "schedule": {"onecycle", "cosine", "step"},
    }


def test_zero_stages_make_a_fully_connected_network() -> None:
    space = SPACE.with_overrides({"stages": 0, "fc_layers": 2, "fc_width": 100, "activation": "sigmoid"})
    trial = optuna.create_study().ask()
    cfg = suggest(trial, space)
    assert cfg.model.channels == () and cfg.model.hidden == (100, 100) and cfg.model.head == "flatten"
    assert not {"channels", "kernel_size", "convs_per_stage", "head"} & set(trial.params)
    assert sum(p.numel() for p in MyNet(cfg.model).parameters()) == 784 * 100 + 100 + 100 * 100 + 100 + 1010


def test_config_round_trips_through_its_dict() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        cfg = suggest(study.ask())
        assert MyNetTrialConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kernel_size": 4}, "kernel_size must be one of"),
        ({"stages": 5}, r"stages must lie in \[0, 4\], got 5"),
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"max_params": -5}, "max_params must be a positive number"),
        ({"data_fraction": 1.5}, r"data_fraction must be a number in \(0.0, 0.99\]"),
        ({"learning_rate": 0.1}, "unknown mynet parameter 'learning_rate'"),
    ],
)
def test_overrides_reject_bad_values_by_name(overrides: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        SPACE.with_overrides(overrides)


def test_settings_round_trip_through_the_stored_space() -> None:
    space = SPACE.with_overrides({"max_params": 100_000, "data_fraction": 0.05})
    assert space.settings() == {
        "data_fraction": 0.05,
        "val_fraction": 0.01,
        "val_source": "additional",
        "val_images": 10000,
        "val_subset": 2000,
        "promotion": "continue",
        "precision": "auto",
        "refit_epochs": 30,
        "max_params": 100_000,
        "max_latency_ms": None,
        "max_memory_mb": None,
    }
    again = SPACE.with_overrides(space.describe())
    assert again.settings() == space.settings()


def test_the_baseline_lies_in_the_default_space_and_narrowing_drops_what_it_cannot_reach() -> None:
    assert SPACE.searched(BASELINE) == BASELINE  # every key is drawn, every value reachable
    narrow = SPACE.with_overrides({"stages": 2, "channels": {"low": 6, "high": 8}, "batch_size": [32, 64]})
    assert set(BASELINE) - set(narrow.searched(BASELINE)) == {"stages", "channels"}
    stepped = SPACE.with_overrides({"channels": {"low": 8, "high": 40, "step": 16}})
    assert "channels" not in stepped.searched(BASELINE)  # 32 is not on the 8, 24, 40 grid
