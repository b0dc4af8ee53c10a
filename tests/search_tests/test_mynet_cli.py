"""The real ``rpztune`` command on a tiny mynet study: run, refit, export (the lab's contract), evaluate."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
import rpz_cli
import torch

from objectives.mynet.data import load_fashion
from search import evaluate, export, find_winner
from search.engine.study import StudyError
from search.selection.refit import refit

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

# slow: a real mynet study (9 s) shared by the module, and rpztune subprocesses; tiny networks
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TINY = [
    "--set", "data_fraction=0.01",
    "--set", "epochs=3",
    "--set", "refit_epochs=4",
    "--set", "stages=[1, 2]",
    "--set", "channels={low=6, high=8}",
    "--set", "kernel_size=3",
    "--set", "fc_layers=0",
    "--set", "batch_size=32",
    "--set", "head=flatten",
    "--set", "optimizer=sgd",
    "--set", "sgd_lr=0.1",
    "--set", "dropout=0.0",
    "--set", "label_smoothing=0.0",
    "--set", "augment_erase=0.0",
]  # fmt: skip


def rpztune(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return rpz_cli.rpztune(*args, cwd=cwd, check=check, env={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def study_dir(data_dir, tmp_path_factory) -> Path:
    """Three complete trials of a tiny mynet study, run by the real command."""
    work = tmp_path_factory.mktemp("mynet")
    args = ["--data", str(data_dir), "--trials", "3", "--seed", "0", "--pruner", "none", "--device", "cpu"]
    args += ["--threads", "1"]
    rpztune(*RUN, "mynet", *args, *TINY, "--quiet", cwd=work)
    return work


def storage(study_dir: Path) -> str:
    return f"sqlite:///{study_dir / 'studies.db'}"


def load(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="mynet", storage=storage(study_dir))


def test_run_records_accuracy_curves_test_accuracy_and_checkpoints(study_dir) -> None:
    study = load(study_dir)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    first = study.trials[0]  # the baseline, as far as TINY lets it: not 3 stages of 32
    assert first.user_attrs["baseline"] and first.params["convs_per_stage"] == 2
    assert first.params["stages"] in (1, 2) and first.params["augment_flip"] is True
    best = study.best_trial
    assert best.value == best.user_attrs["curves"]["val_accuracy"][-1] > 0.5  # the final epoch
    assert 0.5 < best.user_attrs["test_accuracy"] <= 1
    assert (study_dir / "studies-checkpoints" / "mynet" / best.user_attrs["checkpoint"]).is_file()


def test_export_prefers_a_refit_and_says_which_weights_it_wrote(study_dir, capsys) -> None:
    export(find_winner(storage(study_dir), "mynet"), study_dir / "plain")  # in-process: no refit yet
    assert "no refit stored" in capsys.readouterr().out
    refit = rpztune("refit", "--study", "mynet", "--device", "cpu", cwd=study_dir).stdout
    study = load(study_dir)
    record = study.user_attrs[f"refit:{study.best_trial.number}"]
    assert f"{record['epochs']} epochs on 1200 images" in refit
    assert record["epochs"] == 4 > study.best_trial.user_attrs["best_epoch"], "the study's refit_epochs"
    after = rpztune("export", "--study", "mynet", "--out", "refit", cwd=study_dir).stdout
    assert f"the refit of trial {study.best_trial.number}" in after
    for name in ("pytorch_cnn.py", "model.pt", "pytorch_cnn_training.png", "winner.json"):
        assert name in after, name
    refit_file = study_dir / "studies-checkpoints" / "mynet" / record["checkpoint"]
    assert (study_dir / "refit" / "model.pt").read_bytes() == refit_file.read_bytes()
    assert json.loads((study_dir / "refit" / "winner.json").read_text())["weights"] == "refit"
    assert json.loads((study_dir / "plain" / "winner.json").read_text())["weights"] == "trial"
    assert (study_dir / "plain" / "model.pt").read_bytes() != refit_file.read_bytes()


@pytest.mark.parametrize("folder", ["plain", "refit"])
def test_exported_files_meet_the_labs_contract_in_a_clean_interpreter(
    study_dir, data_dir, folder, run_standalone
) -> None:
    out = study_dir / folder
    if not (out / "winner.json").is_file():
        pytest.skip("the export test did not run")
    assert (out / "pytorch_cnn_training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    winner = json.loads((out / "winner.json").read_text())
    images = load_fashion(data_dir)
    torch.save({"x": images.x_test, "y": images.y_test}, out / "test.pt")
    script = (
        "import torch\n"
        "from pytorch_cnn import MyNet, classify\n"
        "model = MyNet()\n"
        "out = model(torch.rand(64, 1, 28, 28, requires_grad=True))\n"
        "assert torch.is_tensor(out) and out.requires_grad and list(out.shape) == [64, 10]\n"
        "assert torch.allclose(out.exp().sum(1), torch.ones(64), atol=1e-5)\n"
        "model.load_state_dict(torch.load('model.pt', weights_only=True))\n"
        "test = torch.load('test.pt', weights_only=True)\n"
        "model.eval()\n"
        "print((classify(model, test['x'].float() / 255) == test['y']).float().mean().item())\n"
    )
    result = run_standalone(script, out)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(winner["test_accuracy"], abs=1e-4)


def test_evaluate_scores_the_trials_own_checkpoint(study_dir, data_dir) -> None:
    result = evaluate(find_winner(storage(study_dir), "mynet"), str(data_dir))
    best = load(study_dir).best_trial
    assert result["n"] == 5000 and result["trial"] == best.number
    assert result["test_accuracy"] == pytest.approx(best.user_attrs["test_accuracy"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [*RUN, "mynet", "--set", "kernel_size=4"],
            "kernel_size must be one of 1, 3, 5, 7; got 4",
        ),
        (["refit", "--study", "nope"], "no study 'nope'"),
        pytest.param(
            [*RUN, "mynet", "--device", "cuda"],
            "--device cuda, but torch sees no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path) -> None:
    result = rpztune(*args, cwd=tmp_path, check=False)
    rpz_cli.assert_refused(result, message, tmp_path, opens_a_study=args[0] == "refit")


def test_refit_refuses_a_bad_fraction_or_device_before_training(study_dir) -> None:
    with pytest.raises(ValueError, match=r"--data-fraction must lie in \(0, 1\), got 1.5"):
        refit(storage(study_dir), "mynet", data_fraction=1.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            refit(storage(study_dir), "mynet", device="cuda")


def test_a_refit_distilled_from_the_best_trials_records_them_and_learns_otherwise(
    study_dir, tmp_path
) -> None:
    shutil.copytree(study_dir, tmp_path / "copy")  # the module's study keeps no refit of these
    copy = storage(tmp_path / "copy")
    study = optuna.load_study(study_name="mynet", storage=copy)
    best = sorted((t for t in study.trials if t.value is not None), key=lambda t: -t.value)[:2]
    distilled = refit(copy, "mynet", device="cpu", teachers=2)
    assert distilled.record["teachers"] == [t.number for t in best]
    weights = torch.load(distilled.path, weights_only=True)
    alone = refit(copy, "mynet", device="cpu")  # the same trial, seed and epochs, without teachers
    assert alone.trial == distilled.trial and "teachers" not in alone.record
    other = torch.load(alone.path, weights_only=True)
    assert any(not torch.equal(weights[k], other[k]) for k in weights), "the teachers change what is learnt"
    with pytest.raises(StudyError, match="--teachers 4: only 3 trials of 'mynet' kept a checkpoint"):
        refit(copy, "mynet", device="cpu", teachers=4)


def test_the_pipelines_refit_is_distilled_from_the_best_trials_by_default(study_dir, tmp_path) -> None:
    shutil.copytree(study_dir, tmp_path / "copy")
    printed = rpztune("run", "mynet", "--stages", "refit", "--device", "cpu", cwd=tmp_path / "copy").stdout
    study = optuna.load_study(study_name="mynet", storage=storage(tmp_path / "copy"))
    ranked = sorted((t for t in study.trials if t.value is not None), key=lambda t: -t.value)
    record = study.user_attrs[f"refit:{ranked[0].number}"]
    assert record["teachers"] == [t.number for t in ranked[:3]]  # Refit.teachers: 3
    assert f"distilled from trials {', '.join(str(t.number) for t in ranked[:3])}" in printed
