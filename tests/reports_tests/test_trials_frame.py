"""trials_frame / curves_frame / pruning_savings on real SQLite studies made with ask/tell."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from reports import StudyData, curves_frame, pruning_savings, trials_frame
from reports.trials import FIXED_COLUMNS, records_frame


def test_trials_frame_one_row_per_trial_with_states_params_and_checkpoints(report_storage, tmp_path) -> None:
    study = optuna.load_study(study_name="mlp", storage=report_storage)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "trial-00001.npz").write_bytes(b"x")
    frame = trials_frame(study, checkpoint_dir=ckpt)

    assert list(frame["number"]) == list(range(9))
    assert list(frame.columns[: len(FIXED_COLUMNS)]) == list(FIXED_COLUMNS)
    assert frame["state"].tolist() == ["COMPLETE"] * 4 + ["PRUNED"] * 3 + ["FAIL", "RUNNING"]
    assert {"params_lr", "params_activation"} <= set(frame.columns)
    assert frame.loc[1, "params_lr"] == pytest.approx(0.05) and frame.loc[1, "params_activation"] == "tanh"
    complete = frame[frame["state"] == "COMPLETE"]
    assert complete["value"].tolist() == pytest.approx([0.10, 0.04, 0.07, 0.05])
    assert complete["best_epoch"].tolist() == [5, 5, 5, 5] and complete["epochs_run"].tolist() == [5] * 4
    assert complete["checkpoint"].tolist() == [str(ckpt / f"trial-{n:05d}.npz") for n in range(4)]
    assert complete["checkpoint_kept"].tolist() == [False, True, False, False]
    pruned = frame[frame["state"] == "PRUNED"]
    assert pruned["pruned_epoch"].tolist() == [2, 2, 2] and pruned["epochs"].tolist() == [5, 5, 5]
    assert pruned["reason"].str.startswith("pruned at epoch 2").all()
    failed, running = frame.iloc[7], frame.iloc[8]
    assert "FloatingPointError" in failed["reason"] and math.isnan(failed["value"])
    assert math.isnan(running["duration_s"]) and running["epochs_run"] == 1
    assert (frame.loc[:6, "duration_s"] >= 0).all()


def test_trials_frame_extra_parts_are_numeric_user_attrs_only(report_storage) -> None:
    frame = trials_frame(optuna.load_study(study_name="mynet", storage=report_storage))
    extras = [c for c in frame.columns if c.startswith("extra_")]
    assert sorted(extras) == ["extra_aug", "extra_new", "extra_orig"]  # "notes" is a string: not a part
    assert frame["extra_new"].tolist() == pytest.approx([0.7, 0.75, 0.6])
    assert frame["params_channels"].between(8, 64).all()


def test_trials_frame_empty_study_has_the_fixed_columns(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'e.db'}", study_name="empty")
    frame = trials_frame(study)
    assert frame.empty and list(frame.columns) == list(FIXED_COLUMNS)
    assert curves_frame(study).empty


def test_curves_frame_long_format_with_pruned_trials_cut(report_storage) -> None:
    curves = curves_frame(optuna.load_study(study_name="mlp", storage=report_storage))
    assert list(curves.columns) == ["trial", "state", "curve", "epoch", "value"]
    per_trial = curves[curves["curve"] == "val_error"].groupby("trial")["epoch"].max()
    assert per_trial.to_dict() == {0: 5, 1: 5, 2: 5, 3: 5, 4: 2, 5: 2, 6: 2, 8: 1}  # trial 7 failed: none
    assert set(curves["curve"]) == {"train_loss", "val_loss", "val_error"}
    first = curves[(curves["trial"] == 1) & (curves["curve"] == "val_error")]
    assert first["value"].tolist() == pytest.approx([0.44, 0.34, 0.24, 0.14, 0.04])


def test_curves_frame_falls_back_to_intermediate_values_under_the_metric() -> None:
    study = optuna.create_study(direction="maximize")  # no "curves" attribute: only reported values
    study.set_user_attr("metric", "val_accuracy")
    for i in range(3):
        trial = study.ask()
        for epoch in range(1, 4):
            trial.report(0.5 + i / 10 - 0.1 / epoch, epoch)
        study.tell(trial, 0.5 + i / 10)
    curves = curves_frame(study)
    assert set(curves["curve"]) == {"val_accuracy"}
    assert curves.groupby("trial")["epoch"].apply(list).tolist() == [[1, 2, 3]] * 3


def test_pruning_savings_counts_epochs_not_run_at_each_trials_pace() -> None:
    def row(number: int, state: str, epochs: int | None, run: int, seconds: float) -> dict:
        return {"number": number, "state": state, "epochs": epochs, "epochs_run": run, "duration_s": seconds}

    frame = records_frame(
        [
            row(0, "COMPLETE", 10, 10, 50.0),
            row(1, "PRUNED", 10, 2, 4.0),  # 8 epochs not run at 2 s each: 16 s
            row(2, "PRUNED", 20, 5, 1.0),  # 15 epochs at 0.2 s: 3 s
            row(3, "PRUNED", None, 3, 3.0),  # no configured epochs: left out
        ]
    )
    savings = pruning_savings(frame)
    assert (savings.pruned, savings.epochs_saved, savings.unknown) == (3, 23, 1)
    assert savings.seconds_saved == pytest.approx(19.0)
    assert savings.seconds_spent == pytest.approx(58.0)


def test_study_data_best_trial_respects_direction_and_importances(report_storage) -> None:
    mlp = StudyData.load(optuna.load_study(study_name="mlp", storage=report_storage))
    assert int(mlp.best()["number"]) == 1 and mlp.best_config["activation"] == "tanh"
    assert mlp.counts() == {"COMPLETE": 4, "PRUNED": 3, "FAIL": 1, "RUNNING": 1, "WAITING": 0}
    assert set(mlp.importances.values) == {"lr", "activation"}
    assert sum(mlp.importances.values.values()) == pytest.approx(1.0)
    assert mlp.scales == {"lr": "log", "activation": "categorical"}
    mynet = StudyData.load(optuna.load_study(study_name="mynet", storage=report_storage))
    assert mynet.direction == "maximize" and int(mynet.best()["number"]) == 1


def test_study_data_importances_need_two_completed_trials(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'one.db'}", study_name="one")
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    data = StudyData.load(study)
    assert data.importances.values == {}
    assert "at least 2 completed trials" in data.importances.note and "has 1" in data.importances.note
    assert isinstance(data.trials, pd.DataFrame) and len(data.trials) == 1
