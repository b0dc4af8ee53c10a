from __future__ import annotations

import optuna
import pytest

from spaces import Choice, FloatRange, IntRange, SpaceError, parse_assignment
from spaces.numpy_mlp import SPACE, suggest


def test_parse_assignment_reads_toml_values_and_bare_strings() -> None:
    assert parse_assignment("lr=0.1") == ("lr", 0.1)
    assert parse_assignment("activation=relu") == ("activation", "relu")
    assert parse_assignment('activation=["relu", "tanh"]') == ("activation", ["relu", "tanh"])
    assert parse_assignment("lr={low=1e-3, high=0.5, log=true}") == (
        "lr",
        {"low": 1e-3, "high": 0.5, "log": True},
    )
    with pytest.raises(SpaceError, match="key=value"):
        parse_assignment("lr")


def test_overrides_turn_values_into_specs() -> None:
    space = SPACE.with_overrides(
        {"lr": 0.05, "activation": ["relu", "tanh"], "width": {"low": 16, "high": 64, "step": 16}, "depth": 1}
    )
    assert space["lr"] == 0.05
    assert space["activation"] == Choice(("relu", "tanh"))
    assert space["width"] == IntRange(16, 64, step=16)
    assert space["depth"] == 1
    assert SPACE["lr"] == FloatRange(1e-3, 1.0, log=True), "overrides must not change the default space"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": 0.1}, "unknown numpy-mlp parameter 'learning_rate'"),
        ({"activation": "swish"}, "activation must be one of"),
        ({"depth": 7}, r"depth must lie in \[0, 3\], got 7"),
        ({"depth": 1.5}, "depth must be an integer"),
        ({"lr": {"low": 0.5, "high": 0.1}}, "low must not exceed high"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "must lie in|log range needs low > 0"),
        ({"lr": {"low": 0.01}}, "a range needs keys low and high"),
        ({"activation": {"low": 1, "high": 2}}, "is a choice"),
        ({"classes": [4, 4]}, "two distinct digits"),
        ({"val_fraction": 0.9}, r"must be a number in \[0.05, 0.5\]"),
        ({"batch_size": []}, "empty list"),
    ],
)
def test_overrides_reject_bad_keys_and_values_by_name(overrides: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        SPACE.with_overrides(overrides)


def test_space_file_overrides_and_errors(tmp_path) -> None:
    good = tmp_path / "space.toml"
    good.write_text('depth = 2\nactivation = ["relu"]\nlr = {low = 0.01, high = 0.2, log = true}\n')
    space = SPACE.with_file(good)
    assert space["depth"] == 2 and space["lr"] == FloatRange(0.01, 0.2, log=True)

    broken = tmp_path / "broken.toml"
    broken.write_text("depth = [1, 2\n")
    with pytest.raises(SpaceError, match="broken.toml.*not valid TOML"):
        SPACE.with_file(broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("dept = 2\n")
    with pytest.raises(SpaceError, match="wrong.toml.*unknown numpy-mlp parameter 'dept'"):
        SPACE.with_file(wrong)
    with pytest.raises(SpaceError, match="does not exist"):
        SPACE.with_file(tmp_path / "missing.toml")


def test_suggest_draws_one_width_per_hidden_layer_and_honours_fixed_values() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = SPACE.with_overrides({"lr": 0.05, "activation": ["tanh"]})
    depths = set()
    for _ in range(30):
        trial = study.ask()
        cfg = suggest(trial, space)
        depths.add(len(cfg.widths))
        assert sorted(k for k in trial.params if k.startswith("width_")) == [
            f"width_{i + 1}" for i in range(len(cfg.widths))
        ]
        assert cfg.lr == 0.05 and "lr" not in trial.params
        assert cfg.activation == "tanh"
        assert all(16 <= w <= 512 for w in cfg.widths)
        study.tell(trial, 0.0)
    assert depths == {0, 1, 2, 3}


def test_config_round_trips_through_its_dict() -> None:
    trial = optuna.create_study().ask()
    cfg = suggest(trial)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_largest_is_the_top_of_a_range_a_choice_or_the_fixed_value() -> None:
    assert SPACE.largest("epochs") == 40
    assert SPACE.with_overrides({"epochs": {"low": 5, "high": 25}}).largest("epochs") == 25
    assert SPACE.with_overrides({"epochs": [10, 30, 20]}).largest("epochs") == 30
    assert SPACE.largest("lr") == 1.0
