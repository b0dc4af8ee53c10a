"""submission_source: one pytorch_cnn.py with MyNet, FinetuneNet and classify (run offline, no rpztune)."""

from __future__ import annotations

import ast

import pytest

from models import FinetuneCfg, MyNetCfg
from models._standalone import submission_source

MYNET = MyNetCfg(channels=(6, 12), hidden=(32,), activation="gelu")
FINETUNE = FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=64, head="mlp", hidden=16)


def test_one_file_builds_both_winners_and_keeps_each_modules_own_names(tmp_path, run_standalone) -> None:
    source = submission_source(MYNET, FINETUNE, plain_torch=False)
    tree = ast.parse(source)
    defined = [
        getattr(n, "name", None) or getattr(n.targets[0], "id", None)
        for n in tree.body
        if not isinstance(n, ast.Import | ast.ImportFrom | ast.Expr)
    ]
    assert len(defined) == len(set(defined)), f"a name is defined twice: {sorted(defined)}"
    (tmp_path / "pytorch_cnn.py").write_text(source)
    script = (
        "import torch\n"
        "import pytorch_cnn\n"
        "from pytorch_cnn import *\n"
        "net = MyNet()\n"
        "print(net.cfg == pytorch_cnn.MYNET_CFG, net.cfg.channels, net.cfg.activation)\n"
        "out = net(torch.rand(64, 1, 28, 28, requires_grad=True))\n"
        "print(list(out.shape), classify(net, torch.rand(3, 1, 28, 28)).shape[0])\n"
        "ft = FinetuneNet()\n"
        "print(ft.cfg.resolution, ft.cfg.head, list(ft(torch.rand(2, 3, 96, 96)).shape))\n"
        "try:\n"
        "    MyNetCfg(head='mlp')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
        "try:\n"
        "    FinetuneCfg(head='flatten')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    result = run_standalone(script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "NETWORK ATTEMPT" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["True (6, 12) gelu", "[64, 10] 3", "64 mlp [2, 2]"]
    assert "one of ('flatten', 'avg')" in lines[3]  # each class checks against its own module's HEADS
    assert "one of ('linear', 'mlp')" in lines[4]


def test_plain_torch_is_not_built_in_this_version() -> None:
    with pytest.raises(NotImplementedError, match="plain-torch FinetuneNet"):
        submission_source(MYNET, FINETUNE, plain_torch=True)
