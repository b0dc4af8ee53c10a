"""``submission_source``: one ``pytorch_cnn.py`` with MyNet, classify and FinetuneNet, run without rpztune."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from models import FinetuneCfg, FinetuneNet, MyNet, MyNetCfg, standalone_source, submission_source
from models import mynet as mynet_module
from models.weights import resolve_weights
from search.delivery.validate import third_party_imports

NO_TIMM_PRELUDE = (
    "sys.modules['timm'] = None  # import timm fails: the file must not need it\n"
    "try:\n"
    "    import timm\n"
    "    raise SystemExit('timm is importable')\n"
    "except ImportError:\n"
    "    pass\n"
)
CHECK = (
    "import torch\n"
    "from pytorch_cnn import FinetuneNet, MyNet, classify\n"
    "out = MyNet()(torch.rand(64, 1, 28, 28, requires_grad=True))\n"
    "assert list(out.shape) == [64, 10] and out.requires_grad, (out.shape, out.requires_grad)\n"
    "probe = torch.load('probe.pt', weights_only=True)\n"
    "mynet = MyNet()\n"
    "mynet.load_state_dict(torch.load('model.pt', weights_only=True))\n"
    "finetune = FinetuneNet()\n"
    "finetune.load_state_dict(torch.load('finetuned.pt', weights_only=True))\n"
    "print(mynet.cfg.channels, type(finetune.backbone).__name__)\n"
    "print(classify(mynet, probe['digits']).tolist())\n"
    "print((finetune.eval()(probe['photos']) - probe['logits']).abs().max().item())\n"
)
MYNET_CFG = MyNetCfg(channels=(4, 8), hidden=(16,))
FINETUNE_CFG = FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=112, head="mlp", hidden=16)


def trained_finetune_net(cfg: FinetuneCfg) -> FinetuneNet:
    """The timm FinetuneNet with the pretrained backbone and a seeded random head, in eval mode."""
    torch.manual_seed(0)
    model = FinetuneNet(cfg)
    state, _ = resolve_weights(cfg.backbone)
    model.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})
    return model.eval()


@pytest.mark.slow
def test_plain_torch_submission_runs_without_timm_and_matches_the_timm_nets(tmp_path, run_standalone) -> None:
    (tmp_path / "pytorch_cnn.py").write_text(submission_source(MYNET_CFG, FINETUNE_CFG, plain_torch=True))
    mynet, digits = save_probe(tmp_path)
    result = run_standalone(NO_TIMM_PRELUDE + CHECK, tmp_path)
    assert result.returncode == 0, result.stderr
    nets, classes, diff = result.stdout.splitlines()
    assert nets == "(4, 8) EfficientNetLite"
    assert classes == str(mynet(digits).argmax(dim=1).tolist())
    print(f"plain-torch submission: FinetuneNet logits max |diff| vs timm {float(diff):.3g}")
    assert float(diff) <= 1e-5


def test_timm_submission_builds_both_nets(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "pytorch_cnn.py").write_text(submission_source(MYNET_CFG, FINETUNE_CFG, plain_torch=False))
    mynet, digits = save_probe(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:  # in this process: timm is installed and imported already
        exec(compile(CHECK, "check.py", "exec"), {})
    finally:
        sys.modules.pop("pytorch_cnn", None)
    nets, classes, diff = capsys.readouterr().out.splitlines()
    assert nets == "(4, 8) EfficientNet"
    assert classes == str(mynet(digits).argmax(dim=1).tolist())
    assert float(diff) <= 1e-5


def save_probe(folder: Path) -> tuple[MyNet, torch.Tensor]:
    """Save both nets' weights and a probe (inputs, the timm FinetuneNet's logits) into ``folder``."""
    torch.manual_seed(0)
    mynet = MyNet(MYNET_CFG).eval()
    torch.save(mynet.state_dict(), folder / "model.pt")
    finetune = trained_finetune_net(FINETUNE_CFG)
    torch.save(finetune.state_dict(), folder / "finetuned.pt")
    digits, photos = torch.rand(6, 1, 28, 28), torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        torch.save({"digits": digits, "photos": photos, "logits": finetune(photos)}, folder / "probe.pt")
    return mynet, digits


def test_submission_source_needs_timm_only_for_the_timm_backbone() -> None:
    plain = submission_source(MYNET_CFG, FINETUNE_CFG, plain_torch=True)
    timm_file = submission_source(MYNET_CFG, FINETUNE_CFG, plain_torch=False)
    assert third_party_imports(plain, set()) == ["torch"]
    assert third_party_imports(timm_file, set()) == ["timm", "torch"]
    exported = [
        n for n in ast.parse(plain).body if isinstance(n, ast.Assign) and n.targets[0].id == "__all__"
    ]
    assert len(exported) == 1
    assert {"MyNet", "MYNET_CFG", "classify", "FinetuneNet", "FINETUNE_CFG"} <= set(
        ast.literal_eval(exported[0].value)
    )


def test_submission_source_refuses_a_backbone_without_a_plain_torch_version() -> None:
    resnet = FinetuneCfg(backbone="resnet18")
    with pytest.raises(
        ValueError, match="'resnet18' has no plain-torch version; supported: tf_efficientnet_lite0"
    ):
        submission_source(MYNET_CFG, resnet, plain_torch=True)
    assert 'FINETUNE_CFG = FinetuneCfg(\n    backbone="resnet18"' in submission_source(
        MYNET_CFG, resnet, plain_torch=False
    )


def test_standalone_source_refuses_modules_defining_the_same_name(tmp_path) -> None:
    (tmp_path / "clashing.py").write_text('"""A module with its own _RULES."""\n\n_RULES = {}\n')
    spec = importlib.util.spec_from_file_location("clashing", tmp_path / "clashing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(
        ValueError, match="'_RULES' is defined at the top level of both models.mynet and clashing"
    ):
        standalone_source([mynet_module, module], {"MYNET_CFG": MyNetCfg()}, header='"""x"""\n')
