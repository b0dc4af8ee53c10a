"""Ensembles in the export: ``AveragedEnsemble`` and the generated ``pytorch_cnn.py`` (no-argument
``MyNet()`` / ``FinetuneNet()``, one state dict, mean softmax, flip TTA), on a small real mynet study
confirmed over seeds: the held-out predictions confirmation keeps, the paired estimate, the CLI's refusals,
and an ensemble submission passing ``rpztune validate`` in its sandbox."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from models import FinetuneCfg, FinetuneNet, MyNet, MyNetCfg, ensemble_source
from models.ensemble import AveragedEnsemble, pack_states
from nn_numpy import standalone_source
from reports import plot_training
from search.cli import main
from search.delivery.export_ensemble import export_ensemble, submission_ensembles
from search.delivery.validate import validate
from search.selection.ensemble import estimate_ensemble, predictions_file
from search.selection.winner import find_winner
from spaces.mynet import MyNetTrialConfig

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

MYNET = [
    "--set", "data_fraction=0.01", "--set", "epochs=2", "--set", "stages=1", "--set", "channels=8",
    "--set", "fc_layers=0", "--set", "batch_size=32", "--set", "optimizer=adamw", "--set", "val_images=1000",
    "--trials", "3", "--pruner", "none", "--device", "cpu", "--seed", "0", "--threads", "1", "--quiet",
]  # fmt: skip
MEMBERS = [MyNetCfg(channels=(8,)), MyNetCfg(channels=(4, 8), hidden=(16,), activation="gelu")]
LITE = [
    FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=32),
    FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=48, head="mlp", hidden=16),
]  # small resolutions: validate times FinetuneNet on 100 images
SCRIPT = (
    "import torch\n"
    "from pytorch_cnn import {name}, classify\n"
    "model = {name}()\n"
    "model.load_state_dict(torch.load('weights.pt', weights_only=True))\n"
    "probe = torch.load('probe.pt', weights_only=True)\n"
    "model.eval()\n"
    "with torch.no_grad():\n"
    "    out = model(probe['x'])\n"
    "print(type(model).__name__, len(model.members))\n"
    "print((out - probe['expected']).abs().max().item())\n"
    "print(classify(model, probe['x']).tolist() == out.argmax(dim=1).tolist())\n"
)


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _mean_softmax(nets: list[torch.nn.Module], x: torch.Tensor, *, flip: bool = False) -> torch.Tensor:
    views = [x, x.flip(-1)] if flip else [x]
    with torch.no_grad():
        return torch.stack([n.eval()(v).softmax(dim=1) for n in nets for v in views]).mean(dim=0)


def _run_packed(tmp_path, run_standalone, source: str, nets: list, name: str, shape, *, flip: bool) -> list:
    (tmp_path / "pytorch_cnn.py").write_text(source)
    torch.save(pack_states([n.state_dict() for n in nets]), tmp_path / "weights.pt")
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    torch.save({"x": x, "expected": _mean_softmax(nets, x, flip=flip).log()}, tmp_path / "probe.pt")
    result = run_standalone(SCRIPT.format(name=name), tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.slow
def test_packed_mynet_builds_without_arguments_and_averages_its_members_softmax(tmp_path, run_standalone):
    torch.manual_seed(0)
    nets = [MyNet(cfg) for cfg in MEMBERS]
    described, *rest = _run_packed(
        tmp_path, run_standalone, ensemble_source(MEMBERS), nets, "MyNet", (16, 1, 28, 28), flip=False
    )
    assert described == "MyNetEnsemble" and rest[0] == "2"
    assert float(rest[1]) < 1e-5 and rest[2] == "True"


@pytest.mark.slow
@pytest.mark.parametrize("members", [2, 1])  # 1: the winner alone over flips (export --tta flip)
def test_packed_finetune_with_flip_averages_the_image_and_its_mirror(tmp_path, run_standalone, members):
    torch.manual_seed(0)
    cfgs = LITE[:members]
    nets = [FinetuneNet(cfg) for cfg in cfgs]
    with torch.no_grad():  # heads that separate the classes, so a flip changes the output
        for net in nets:
            net.head[-1].weight.normal_(0, 5.0)
    source = ensemble_source(finetune_cfgs=cfgs, flip=True, plain_torch=True)
    assert "FINETUNE_FLIP = True" in source and "timm" not in source.split('"""', 2)[2].split("class")[0]
    described, *rest = _run_packed(
        tmp_path, run_standalone, source, nets, "FinetuneNet", (4, 3, 96, 96), flip=True
    )
    assert described == "FinetuneNetEnsemble" and rest[0] == str(members)
    assert float(rest[1]) < 1e-5 and rest[2] == "True"
    x = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    unflipped = _mean_softmax(nets, x).log()
    with torch.no_grad():
        assert not torch.allclose(AveragedEnsemble(nets, flip=True).eval()(x), unflipped, atol=1e-4)


@pytest.fixture(scope="module")
def work(data_dir, tmp_path_factory) -> Path:
    """A small real mynet study (3 trials) confirmed over 2 seeds for its top 2 configurations."""
    work = tmp_path_factory.mktemp("ensemble")
    url = f"sqlite:///{work / 'studies.db'}"
    assert cli(*RUN, "mynet", "--data", str(data_dir), *MYNET, "--storage", url)[0] == 0
    code, out, err = cli("confirm", "--study", "mynet", "--top", "2", "--seeds", "2", "--device", "cpu",
                         "--storage", url)  # fmt: skip
    assert code == 0, err
    return work


def _study(work: Path) -> optuna.Study:
    return optuna.load_study(study_name="mynet", storage=f"sqlite:///{work / 'studies.db'}")


@pytest.mark.slow
def test_confirmation_keeps_held_out_predictions_that_reproduce_each_replicate(work) -> None:
    study = _study(work)
    replicates = optuna.load_study(study_name="mynet:confirm", storage=f"sqlite:///{work / 'studies.db'}")
    folder = work / "studies-checkpoints" / "mynet"
    complete = [t for t in replicates.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    for trial in complete:
        with np.load(predictions_file(folder, trial.user_attrs["confirm_key"])) as saved:
            probs, labels = saved["val"], saved["val_y"]
        assert probs.shape == (1000, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
        assert float(np.mean(probs.argmax(axis=1) == labels)) == pytest.approx(trial.value)
    estimate = estimate_ensemble(study, folder, 2)
    winner = study.user_attrs["confirm"]["winner"]
    stored = next(e for e in study.user_attrs["confirm"]["estimates"] if e["trial"] == winner)
    assert estimate.members[0] == winner and list(estimate.single) == pytest.approx(stored["values"])
    print(f"tiny mynet study: {estimate.describe()}")


@pytest.mark.slow
def test_export_refuses_too_few_confirmed_or_no_gain_with_one_line(work, tmp_path) -> None:
    url = f"sqlite:///{work / 'studies.db'}"
    code, out, err = cli("export", "--study", "mynet", "--out", str(tmp_path / "a"), "--ensemble", "3",
                         "--storage", url)  # fmt: skip
    assert (
        code == 2 and "has 2 confirmed configuration(s), fewer than 3" in err and len(err.splitlines()) == 1
    )
    code, _, err = cli("export", "--study", "mynet", "--out", str(tmp_path / "a"), "--tta", "flip",
                       "--ensemble", "2", "--storage", url)  # fmt: skip
    assert code == 2 and "--tta flip does not apply to mynet: FashionMNIST classes" in err
    # a runner-up that predicts exactly like the winner: the ensemble gains nothing, so export refuses
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    study = _study(copy)
    members = estimate_ensemble(study, copy / "studies-checkpoints" / "mynet", 2).members
    for seed in range(2):
        key = "{}/seed{}of2/seed0"
        folder = copy / "studies-checkpoints" / "mynet"
        shutil.copy(predictions_file(folder, key.format(members[0], seed)),
                    predictions_file(folder, key.format(members[1], seed)))  # fmt: skip
    code, out, err = cli("export", "--study", "mynet", "--out", str(tmp_path / "b"), "--ensemble", "2",
                         "--storage", f"sqlite:///{copy / 'studies.db'}")  # fmt: skip
    assert code == 2 and "confirmation shows no gain" in err and "paired gain +0.0000" in err
    assert not (tmp_path / "b" / "model.pt").exists()
    # submit decides per part: this MyNet falls back to the winner alone and says why
    lines: list[str] = []
    winner = find_winner(f"sqlite:///{copy / 'studies.db'}", "mynet")
    source, files, _ = submission_ensembles(
        f"sqlite:///{copy / 'studies.db'}",
        {"mynet": winner},
        {"mynet": (2, False)},
        tmp_path,
        log=lines.append,
    )
    assert files == {} and "MyNetEnsemble" not in source and "MYNET_CFG = MyNetCfg(" in source
    assert lines and lines[0].startswith("mynet: the winner alone, confirmation shows no gain")


@pytest.mark.slow
def test_export_writes_the_ensemble_when_confirmation_shows_a_gain(work, tmp_path) -> None:
    url = f"sqlite:///{work / 'studies.db'}"
    study = _study(work)
    estimate = estimate_ensemble(study, work / "studies-checkpoints" / "mynet", 2)
    code, out, err = cli(
        "export", "--study", "mynet", "--out", str(tmp_path), "--ensemble", "2", "--storage", url
    )
    lines: list[str] = []
    (tmp_path / "s").mkdir()
    source, files, _ = submission_ensembles(
        url, {"mynet": find_winner(url, "mynet")}, {"mynet": (2, False)}, tmp_path / "s", log=lines.append
    )
    assert ("MyNetEnsemble" in source) == estimate.helps == ("model.pt" in files)
    if estimate.helps:
        assert code == 0, err
        summary = json.loads((tmp_path / "winner.json").read_text())
        assert summary["ensemble"]["members"] == list(estimate.members)
        assert "CPU ms per 100 images" in out
    else:
        assert code == 2 and "confirmation shows no gain" in err


@pytest.mark.slow
def test_an_ensemble_submission_passes_validate_in_the_sandbox(work, tmp_path) -> None:
    """The packed MyNet of the real study (written regardless of its gain) with an untrained two-member
    FinetuneNet with flip TTA, in a zip with the lab's other files."""
    winner = find_winner(f"sqlite:///{work / 'studies.db'}", "mynet")
    done = export_ensemble(winner, tmp_path / "mynet", 2, storage=f"sqlite:///{work / 'studies.db'}",
                           require_gain=False)  # fmt: skip
    assert done.ensemble_ms > 0 and done.single_ms > 0
    configs = json.loads((tmp_path / "mynet" / "winner.json").read_text())["configs"]
    mynet_cfgs = [MyNetTrialConfig.from_dict(config).model for config in configs]
    source = ensemble_source(mynet_cfgs, LITE, flip=True, plain_torch=True)
    torch.manual_seed(0)
    finetuned = pack_states([FinetuneNet(cfg).state_dict() for cfg in LITE])
    torch.save(finetuned, tmp_path / "finetuned.pt")
    plot_training({"x": [1.0, 2.0]}, tmp_path / "plot.png", ylabel="%")
    files = {
        "numpy_nn.py": standalone_source().encode(),
        "pytorch_cnn.py": source.encode(),
        "model.pt": (tmp_path / "mynet" / "model.pt").read_bytes(),
        "finetuned.pt": (tmp_path / "finetuned.pt").read_bytes(),
        **{name: (tmp_path / "plot.png").read_bytes() for name in (
            "numpy_nn_training.png", "numpy_nn_classification.png", "pytorch_fcnet_training.png",
            "pytorch_cnn_training.png")},
    }  # fmt: skip
    with zipfile.ZipFile(tmp_path / "submission.zip", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    report = validate(tmp_path / "submission.zip")
    # the members are untrained or tiny: only what they are judged on may fail, never how they load and run
    failed = [(c.name, c.detail) for c in report.failed if " accuracy " not in c.name]
    assert not failed and report.check("classify(MyNet with model.pt").ok, failed
    assert report.check("classify(FinetuneNet with finetuned.pt").ok
    assert report.check("FinetuneNet accuracy").unchecked, "no photos given: unchecked, not a pass"
    print(report.check("time: MyNet").detail, "|", report.check("time: FinetuneNet").detail)


def test_an_ensemble_over_the_cpu_limit_its_trials_ran_under_is_not_chosen() -> None:
    from types import SimpleNamespace

    from search.selection.ensemble import EnsembleEstimate, over_cpu_limit

    def trial(cost: float | None, limit: float | None = 12_000.0) -> SimpleNamespace:
        return SimpleNamespace(user_attrs={"cpu_ms_per_100": cost, "cpu_limit_ms": limit})

    def estimate(members: tuple[int, ...], flip: bool) -> EnsembleEstimate:
        return EnsembleEstimate(members, "fold", (0.9,), (0.95,), flip, "proxy")

    trials = [trial(6_900.0), trial(3_000.0), trial(2_900.0)]
    assert over_cpu_limit(trials, estimate((1, 2), flip=True)) is None  # 11,800 ms: within
    assert over_cpu_limit(trials, estimate((0, 1), flip=False)) is None  # 9,900 ms
    assert over_cpu_limit(trials, estimate((0,), flip=True)) == (
        "CPU 13800 ms per 100 images at 1 thread exceeds the limit of 12000 ms"
    )
    assert over_cpu_limit([trial(6_900.0, None)], estimate((0,), flip=True)) is None  # no limit recorded
