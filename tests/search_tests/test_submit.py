"""``rpztune submit --timeout`` from nothing (three short real studies through the pipeline), ``rpztune
validate`` on the zip it writes, and on zips that must fail, each for its own reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import optuna
import pytest
import rpz_cli

from nn_numpy import standalone_source
from search.delivery.validate import OPTIONAL_FILES, REQUIRED_FILES, Limits, validate

pytestmark = pytest.mark.slow  # three real studies with confirmations and refits (minutes)

# `submit --timeout` runs the three studies itself: the baseline trial each (one configuration: the pipeline
# skips confirmation, which tests/search_tests/test_pipeline.py covers), refit, on tiny spaces (numpy-mlp 5
# epochs; mynet one 8-channel stage, 2 epochs on 1 % of the images; finetune a lite0 224 px probe on 300
# photos)
SETTINGS = {
    "numpy-mlp": ["epochs=5"],
    "mynet": [
        "data_fraction=0.01", "epochs=2", "stages=1", "channels=8", "kernel_size=3", "fc_layers=0",
        "batch_size=32", "head=flatten", "optimizer=adamw", "adamw_lr=0.003", "refit_epochs=12",
    ],
    "finetune": [
        "max_images=300", "epochs=8", "freeze=linear", "augment=none", "resolution=224",
        "backbone=tf_efficientnet_lite0",
    ],
}  # fmt: skip
BUDGET = 2400  # seconds; the studies end by their --trials long before (a minute or two)


def rpztune(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess whose sockets all fail."""
    return rpz_cli.rpztune(*args, cwd=cwd, check=check, offline=True, env={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def work(data_dir, tmp_path_factory) -> Path:
    """``rpztune submit --timeout`` from nothing: three studies through the pipeline, the FCNet study, the
    zip and validate."""
    if not (data_dir / "dogs_and_cats" / "cat").is_dir():
        pytest.skip(f"no Dogs-vs-Cats photos under {data_dir}")
    work = tmp_path_factory.mktemp("submit")
    sets = [arg for task, keys in SETTINGS.items() for key in keys for arg in ("--set", f"{task}:{key}")]
    # validate judges FinetuneNet on 200 photos of --data drawn afresh: this probe classifies 97.2 % of all
    # 1,500 photos right, 6 binomial standard deviations of a 200-photo draw above the 90 % threshold; a
    # smaller one (120 photos at 96 px) scored 89.5 % on one draw and 96 % on another
    submitted = rpztune(
        "submit", "--out", "submission.zip", "--data", str(data_dir), "--timeout", str(BUDGET), "--trials",
        "1", "--seed", "0", *sets, cwd=work,
    )  # fmt: skip
    (work / "submit.out").write_text(submitted.stdout)
    return work


def study(work: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'studies.db'}")


def winner_of(done: optuna.Study) -> optuna.trial.FrozenTrial:
    """What export and submit write: the confirmed winner, else the best trial."""
    confirmed = (done.user_attrs.get("confirm") or {}).get("winner")
    return done.best_trial if confirmed is None else done.trials[confirmed]


def test_submit_writes_the_labs_files_at_the_zip_root_and_they_validate(work) -> None:
    printed = (work / "submit.out").read_text()
    with zipfile.ZipFile(work / "submission.zip") as archive:
        assert sorted(archive.namelist()) == sorted((*REQUIRED_FILES, *OPTIONAL_FILES))
        for name in (n for n in REQUIRED_FILES if n.endswith(".png")):
            assert archive.read(name)[:8] == b"\x89PNG\r\n\x1a\n", name
        assert archive.read("numpy_nn.py").decode() == standalone_source()
        json.loads(archive.read("cnn.ipynb"))
    assert "validate " in printed and "PASS:" in printed and "FAIL" not in printed
    for check in (
        "numpy_nn.Linear",
        "MyNet() on torch.rand(64, 1, 28, 28",
        "FinetuneNet() builds",
        "classify(",
    ):
        assert f"PASS  {check}" in printed, check
    assert "imports: pytorch_cnn.py: needs timm, torch; timm not among the lab's template imports" in printed
    assert not list(work.glob(".submission.zip.*")), "no temp file is left beside the zip"


def test_submit_timeout_runs_each_study_through_the_pipeline_and_takes_the_refits(work) -> None:
    printed = (work / "submit.out").read_text()
    folder = work / "studies-checkpoints"
    for name, role, weights in (("mynet", "mynet", "model.pt"), ("finetune", "finetune", "finetuned.pt")):
        done = study(work, name)
        assert done.user_attrs["pipeline"]["done"] == ["search", "confirm", "refit", "ensemble"]
        winner = winner_of(done)
        refit = done.user_attrs[f"refit:{winner.number}"]
        with zipfile.ZipFile(work / "submission.zip") as archive:
            assert archive.read(weights) == (folder / name / refit["checkpoint"]).read_bytes()
        assert f"trial {winner.number} of {name!r}: single-split" in printed and "unconfirmed" in printed
        assert f"{role}: rpztune run {name} --study {name} for " in printed
        assert f"{role}: confirm: skipped: one configuration completed" in printed
    numpy = study(work, "numpy-mlp")
    assert numpy.user_attrs["pipeline"]["done"] == ["search", "confirm", "refit", "ensemble"]
    last = printed.strip().splitlines()[-1]
    assert last.startswith("time: numpy ") and f"of the {BUDGET} s budget" in last
    assert not list(work.glob(".submission.zip.progress.json")), "the progress file goes with the zip"


def test_submit_runs_a_short_fcnet_study_of_mlps_when_there_is_none(work) -> None:
    printed = (work / "submit.out").read_text()
    assert "no study 'fcnet': running a short FCNet study" in printed
    assert "well under a minute on 2 CPU cores" in printed
    fcnet = study(work, "fcnet")
    assert fcnet.user_attrs["task"] == "mynet"
    trials = fcnet.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert trials and all(t.user_attrs["config"]["model"]["channels"] == [] for t in trials)
    assert fcnet.best_value > 0.7  # a real MLP on FashionMNIST, not a stand-in


def test_export_prints_what_it_wrote_and_the_winners_validation_and_test_figures(work) -> None:
    mynet = rpztune("export", "--study", "mynet", "--out", "mynet-out", cwd=work).stdout
    summary = json.loads((work / "mynet-out" / "winner.json").read_text())
    winner = study(work, "mynet").trials[summary["trial"]]
    assert f"validation val_accuracy {winner.value:.4f}" in mynet
    assert (
        f"test_accuracy {summary['test_accuracy']:.4f} on 5000 test images (never used for tuning)" in mynet
    )
    assert "wrote " in mynet and "model.pt" in mynet
    finetune = rpztune("export", "--study", "finetune", "--out", "ft-out", cwd=work).stdout
    assert "validation proxy" in finetune and "orig_acc" in finetune and "no test split" in finetune


def _rewrite(source: Path, target: Path, change) -> Path:
    """Copy the zip ``source`` to ``target`` with ``change(name, data) -> [(name, data), ...]`` per entry."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            for new_name, data in change(name, old.read(name)):
                new.writestr(new_name, data)
    return target


_DOWNLOADING = b"""

_Timm = FinetuneNet


class FinetuneNet(_Timm):
    def __init__(self):
        torch.hub.load_state_dict_from_url("https://download.pytorch.org/models/resnet18-f37072fd.pth")
        super().__init__()
"""


def _broken(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """Three defects in one zip (one sandboxed run judges them all): no model.pt, a MyNet of 5 classes, a
    FinetuneNet that downloads weights when it is built."""
    if name == "model.pt":
        return []
    if name == "pytorch_cnn.py":
        return [(name, data.replace(b"num_classes=10,", b"num_classes=5,", 1) + _DOWNLOADING)]
    return [(name, data)]


BROKEN = {
    "required files": "missing at the root: model.pt",
    "MyNet() on torch.rand": "output [64, 5], expected [64, 10]",
    "FinetuneNet() builds": "URLError: <urlopen error",  # no network in the sandbox: the download fails
}


def test_validate_fails_a_broken_zip_for_each_of_its_reasons(work, tmp_path) -> None:
    report = validate(_rewrite(work / "submission.zip", tmp_path / "broken.zip", _broken))
    assert not report.ok
    for check, reason in BROKEN.items():
        failed = report.check(check)
        assert failed.ok is False and reason in failed.detail, failed
    assert report.check("numpy_nn.Linear").ok, "the rest is still checked"


def test_validate_fails_a_zip_whose_files_are_in_a_folder(work, tmp_path) -> None:
    moved = _rewrite(
        work / "submission.zip", tmp_path / "folder.zip", lambda name, data: [(f"sub/{name}", data)]
    )
    failed = validate(moved).check("zip layout")
    assert failed.ok is False and "folders inside the zip: sub/" in failed.detail, failed


def test_validate_cli_reports_limits_and_exits_1_when_over_them(work) -> None:
    result = rpztune(
        "validate", "submission.zip", "--max-zip-mb", "0.01", "--max-mynet-ms", "1e-6", cwd=work, check=False
    )
    assert result.returncode == 1, result.stderr
    assert "FAIL  zip size:" in result.stdout and "(limit 0.01 MiB)" in result.stdout
    assert "FAIL  time: MyNet on 100 images:" in result.stdout
    assert "PASS  time: FinetuneNet on 100 images:" in result.stdout and "(no limit set)" in result.stdout
    assert "FAIL: 2 of" in result.stdout


def test_validate_of_a_missing_or_non_zip_file_is_a_clear_error(work, tmp_path) -> None:
    missing = rpztune("validate", str(tmp_path / "nope.zip"), cwd=work, check=False)
    assert missing.returncode == 2 and "no submission zip at" in missing.stderr
    (tmp_path / "text.zip").write_text("not a zip")
    report = validate(tmp_path / "text.zip", Limits())
    assert not report.ok and "is not a zip file" in report.check("zip opens").detail


def test_submit_reports_a_missing_or_corrupt_checkpoint_by_trial_and_file(work, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("cache", "*.zip"))
    finetune = winner_of(study(copy, "finetune"))
    checkpoint = copy / "studies-checkpoints" / "finetune" / finetune.user_attrs["checkpoint"]
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a truncated file
    result = rpztune("submit", "--out", "s.zip", cwd=copy, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    relative = checkpoint.relative_to(copy)  # as the storage URL names it: sqlite:///studies.db
    assert f"trial {finetune.number} of 'finetune': checkpoint {relative} does not load" in result.stderr
    assert not (copy / "s.zip").exists()

    mynet = study(copy, "mynet")
    refit = (
        copy
        / "studies-checkpoints"
        / "mynet"
        / mynet.user_attrs[f"refit:{winner_of(mynet).number}"]["checkpoint"]
    )
    refit.unlink()
    result = rpztune("export", "--study", "mynet", "--out", "o", cwd=copy, check=False)
    assert result.returncode == 2, result.stderr
    assert f"the refit of trial {winner_of(mynet).number} of 'mynet'" in result.stderr
    assert f"checkpoint {refit.relative_to(copy)} is missing" in result.stderr


def test_submit_standalone_writes_a_pytorch_cnn_py_that_needs_only_torch(work, data_dir) -> None:
    result = rpztune(
        "submit", "--standalone", "--out", "plain.zip", "--data", str(data_dir), cwd=work, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imports: pytorch_cnn.py: needs torch" in result.stdout and "PASS:" in result.stdout
    with zipfile.ZipFile(work / "plain.zip") as archive:
        source = archive.read("pytorch_cnn.py").decode()
    assert "import timm" not in source and "from timm" not in source
