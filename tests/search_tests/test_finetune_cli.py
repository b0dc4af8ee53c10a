"""The real ``rpztune`` command on a tiny finetune study, with the network blocked: run, export, reload."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
import rpz_cli
import torch

from objectives.finetune.objective import load_model
from search import evaluate, find_winner

RUN = ("run", "--stages", "search")  # the search alone (the pipeline's stages: test_pipeline.py)

pytestmark = pytest.mark.slow  # a real fine-tune study (7 s) and rpztune subprocesses (4-6 s each)

# Any socket use (a download, a hub check) prints a marker and fails; the tests assert the marker is absent.
TINY = [
    "--set", "max_images=120",
    "--set", "epochs=2",
    "--set", "freeze=linear",
    "--set", "augment=none",
    "--set", "resolution=96",
    "--set", 'backbone=["tf_efficientnet_lite0", "resnet18"]',
]  # fmt: skip


def rpztune(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess whose sockets all fail (the hub allowed to try: it must not reach out)."""
    return rpz_cli.rpztune(*args, cwd=cwd, check=check, offline=True, env={"HF_HUB_OFFLINE": "0"})


@pytest.fixture(scope="module")
def study_dir(photos_dir, tmp_path_factory) -> Path:
    """Two linear-probe trials of a tiny finetune study, run by the real command without network."""
    work = tmp_path_factory.mktemp("finetune")
    args = ["--data", str(photos_dir), "--trials", "2", "--seed", "0", "--pruner", "none", "--threads", "1"]
    rpztune(*RUN, "finetune", *args, *TINY, "--quiet", cwd=work)
    return work


def load(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="finetune", storage=f"sqlite:///{study_dir / 'studies.db'}")


def test_run_offline_records_the_proxy_parts_and_the_skipped_backbones(study_dir) -> None:
    study = load(study_dir)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    offered = study.user_attrs["backbones"]["offered"]
    assert "tf_efficientnet_lite0" in offered
    if "resnet18" not in offered:  # no resnet18 weights in this machine's hub cache, and no downloads
        assert "downloads off" in study.user_attrs["backbones"]["skipped"]["resnet18"]
    best = study.best_trial
    assert best.value > 0.6 and 0 <= best.user_attrs["aug_acc"] <= 1 and best.user_attrs["n_val"] == 24
    assert [t.user_attrs["feature_cache"] for t in study.trials] == ["miss", "hit"]


def test_export_and_reload_need_neither_network_nor_rpztune(study_dir, tmp_path, run_standalone) -> None:
    out = tmp_path / "export"
    printed = rpztune("export", "--study", "finetune", "--out", str(out), cwd=study_dir).stdout
    for name in ("pytorch_cnn.py", "finetuned.pt", "winner.json"):
        assert name in printed and (out / name).stat().st_size > 0
    winner = json.loads((out / "winner.json").read_text())
    assert winner["proxy"] == pytest.approx(load(study_dir).best_value)
    x = torch.rand(5, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    trained = find_winner(f"sqlite:///{study_dir / 'studies.db'}", "finetune")
    expected = load_model(trained.trial, trained.checkpoint)(x)
    torch.save({"x": x, "logits": expected.detach()}, out / "probe.pt")
    script = (
        "import torch\n"
        "from pytorch_cnn import FinetuneNet\n"
        "model = FinetuneNet()\n"
        "model.load_state_dict(torch.load('finetuned.pt', weights_only=True))\n"
        "model.eval()\n"
        "probe = torch.load('probe.pt', weights_only=True)\n"
        "out = model(probe['x'])\n"
        "assert tuple(out.shape) == (5, 2), out.shape\n"
        "print((out - probe['logits']).abs().max().item())\n"
    )
    result = run_standalone(script, out)
    assert result.returncode == 0, result.stderr
    assert "NETWORK ATTEMPT" not in result.stderr
    assert float(result.stdout) < 1e-5


def test_standalone_export_needs_no_timm(study_dir, tmp_path, run_standalone) -> None:
    out = tmp_path / "standalone"
    trained = find_winner(f"sqlite:///{study_dir / 'studies.db'}", "finetune")
    if not trained.trial.user_attrs["config"]["model"]["backbone"].startswith("tf_efficientnet_lite"):
        result = rpztune(
            "export", "--study", "finetune", "--out", str(out), "--standalone", cwd=study_dir, check=False
        )
        assert result.returncode == 2 and "has no plain-torch version" in result.stderr
        return
    rpztune("export", "--study", "finetune", "--out", str(out), "--standalone", cwd=study_dir)
    assert json.loads((out / "winner.json").read_text())["needs_timm"] is False
    x = torch.rand(5, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    torch.save(
        {"x": x, "logits": load_model(trained.trial, trained.checkpoint)(x).detach()}, out / "probe.pt"
    )
    script = (
        "sys.modules['timm'] = None  # import timm fails\n"
        "import torch\n"
        "from pytorch_cnn import FinetuneNet\n"
        "model = FinetuneNet()\n"
        "model.load_state_dict(torch.load('finetuned.pt', weights_only=True))\n"
        "probe = torch.load('probe.pt', weights_only=True)\n"
        "print((model.eval()(probe['x']) - probe['logits']).abs().max().item())\n"
    )
    result = run_standalone(script, out)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 1e-5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "finetune"], "the finetune task needs photos: --data FOLDER"),
        (
            [*RUN, "finetune", "--data", "/no/such/photos"],
            "data path '/no/such/photos' does not exist",
        ),
        (
            [*RUN, "finetune", "--set", "freeze=half"],
            "freeze must be one of 'linear', 'last_k', 'full'",
        ),
        (
            [*RUN, "finetune", "--set", "max_memory_mb=0"],
            "max_memory_mb must be a positive integer (MiB)",
        ),
    ],
)
def test_bad_finetune_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path) -> None:
    rpz_cli.assert_refused(rpztune(*args, cwd=tmp_path, check=False), message, tmp_path)


def test_evaluate_scores_the_winner_on_another_photo_folder(study_dir, photos_dir, tmp_path) -> None:
    folder = tmp_path / "held_out"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for file in sorted((photos_dir / name).iterdir())[-4:]:
            shutil.copy(file, folder / name / file.name)
    result = evaluate(find_winner(f"sqlite:///{study_dir / 'studies.db'}", "finetune"), str(folder))
    assert result["n"] == 8 and result["trial"] == load(study_dir).best_trial.number
    assert 0 <= result["orig_acc"] <= 1 and 0 <= result["aug_acc"] <= 1
