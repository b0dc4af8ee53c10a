"""A linear probe over the features of two backbones (``extra_backbones``): one ``FinetuneNet`` whose
exported file builds it with no argument, loads ``finetuned.pt`` strictly and needs no download (nor timm,
standalone); each backbone's features are cached once, on their own."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import rpz_cli
import torch

from models import FinetuneCfg
from objectives.finetune.objective import load_model
from search import find_winner
from spaces.finetune import parse_extras

pytestmark = pytest.mark.slow  # a real one-trial study and rpztune subprocesses (about 30 s)

EXTRA = "tf_efficientnet_lite1@64"
TINY = [
    "--set", "max_images=80",
    "--set", "epochs=2",
    "--set", "freeze=linear",
    "--set", "augment=none",
    "--set", "resolution=64",
    "--set", "backbone=tf_efficientnet_lite0",
    "--set", f"extra_backbones={EXTRA}",
]  # fmt: skip
SCRIPT = (
    "import torch\n"
    "from pytorch_cnn import FINETUNE_CFG, FinetuneNet\n"
    "model = FinetuneNet()\n"
    "model.load_state_dict(torch.load('finetuned.pt', weights_only=True))  # strict\n"
    "probe = torch.load('probe.pt', weights_only=True)\n"
    "print(FINETUNE_CFG.extras, model.num_features)\n"
    "print((model.eval()(probe['x']) - probe['logits']).abs().max().item())\n"
)


def rpztune(*args: str, cwd: Path, check: bool = True):
    return rpz_cli.rpztune(*args, cwd=cwd, check=check, offline=True, env={"HF_HUB_OFFLINE": "0"})


def test_extras_are_validated_and_survive_a_json_round_trip() -> None:
    assert parse_extras("none") == ()
    cfg = FinetuneCfg(extras=parse_extras(f"{EXTRA}+tf_efficientnet_lite2@260"))
    stored = json.loads(json.dumps({"extras": cfg.extras}))["extras"]  # lists, as a trial stores them
    assert FinetuneCfg(extras=stored) == cfg
    for bad in ("lite1", "tf_efficientnet_lite1@x", "no_such_net@96", "a@96+b@96+c@96"):
        with pytest.raises(ValueError):
            parse_extras(bad)


def test_a_two_backbone_probe_exports_one_net_that_loads_strictly_with_no_argument(
    photos_dir, tmp_path, run_standalone
) -> None:
    args = ["--data", str(photos_dir), "--trials", "1", "--seed", "0", "--pruner", "none", "--threads", "1"]
    rpztune("run", "--stages", "search", "finetune", *args, *TINY, "--quiet", cwd=tmp_path)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.load_study(study_name="finetune", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert study.trials[0].user_attrs["config"]["model"]["extras"] == [list(parse_extras(EXTRA)[0])]
    cached = sorted(
        p.relative_to(tmp_path / "cache" / "features").parts[:2]
        for p in tmp_path.glob("cache/features/*/*/*.pt")
    )
    assert cached == [("tf_efficientnet_lite0", "r64"), ("tf_efficientnet_lite1", "r64")], (
        "one file per backbone"
    )
    winner = find_winner(storage, "finetune")
    x = torch.rand(5, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    trained = load_model(winner.trial, winner.checkpoint)
    assert trained.num_features == 2 * 1280
    for flag in ([], ["--standalone"]):
        out = tmp_path / f"export{len(flag)}"
        rpztune("export", "--study", "finetune", "--out", str(out), *flag, cwd=tmp_path)
        assert json.loads((out / "winner.json").read_text())["needs_timm"] is not bool(flag)
        torch.save({"x": x, "logits": trained(x).detach()}, out / "probe.pt")
        script = ("sys.modules['timm'] = None  # import timm fails\n" if flag else "") + SCRIPT
        result = run_standalone(script, out)
        assert result.returncode == 0, result.stderr
        assert "NETWORK ATTEMPT" not in result.stderr
        described, diff = result.stdout.splitlines()
        assert described == f"(('tf_efficientnet_lite1', 64),) {2 * 1280}"
        assert float(diff) < 1e-5


def test_a_bad_extra_backbone_is_one_line_and_exit_2(tmp_path) -> None:
    result = rpztune("run", "finetune", "--set", "extra_backbones=lite1@64", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "extra_backbones must be 'none' or 'backbone@resolution" in result.stderr
    assert not (tmp_path / "studies.db").exists()
