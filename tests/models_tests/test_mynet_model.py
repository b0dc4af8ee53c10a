"""MyNet, classify and the exported pytorch_cnn.py, against the lab's contract."""

from __future__ import annotations

import pytest
import torch

from models import MYNET_CFG, MyNet, MyNetCfg, classify, pytorch_cnn_source, standalone_source
from models import mynet as mynet_module

LAYOUTS = {
    "default": MyNetCfg(),
    "mlp (no conv stage)": MyNetCfg(channels=(), hidden=(64,), activation="sigmoid"),
    "lab FCNet": MyNetCfg(channels=(), dropout=0.0),
    "four stages, avg head": MyNetCfg(channels=(4, 8, 8, 16), head="avg", convs_per_stage=2),
    "strided, 5x5, no norm": MyNetCfg(channels=(4, 8, 8, 8), downsample="stride", kernel_size=5, norm="none"),
    "avg pooling, gelu, hidden": MyNetCfg(
        channels=(6, 12), downsample="avg", activation="gelu", hidden=(32, 16)
    ),
}


@pytest.mark.parametrize("cfg", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_mynet_outputs_log_probabilities_that_require_grad(cfg: MyNetCfg) -> None:
    torch.manual_seed(0)
    model = MyNet(cfg)
    x = torch.rand(64, 1, 28, 28, requires_grad=True)
    out = model(x)
    assert out.shape == (64, 10) and out.requires_grad
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(64), atol=1e-5)
    out[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (64, model.num_features)


def test_mynet_without_arguments_builds_the_module_default() -> None:
    assert MyNet().cfg == MYNET_CFG
    counts = {cfg: sum(p.numel() for p in MyNet(cfg).parameters()) for cfg in LAYOUTS.values()}
    assert counts[LAYOUTS["lab FCNet"]] == 784 * 10 + 10, (
        "no conv stage and no hidden layer is the lab's FCNet"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kernel_size": 4}, "kernel_size=4 breaks: an odd positive integer"),
        ({"channels": (8, 0)}, "channels"),
        ({"head": "avg", "channels": ()}, "'avg' needs at least one conv stage"),
        ({"channels": (4,) * 6}, "input_size=28 breaks"),
        ({"activation": "swish"}, "activation='swish' breaks: one of"),
        ({"dropout": 1.0}, "0 <= dropout < 1"),
        ({"downsample": "none"}, "downsample"),
    ],
)
def test_mynet_cfg_rejects_bad_fields_by_name(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MyNetCfg(**fields)


def test_classify_predicts_in_eval_mode_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    model = MyNet(MyNetCfg(channels=(4,), hidden=(32,), dropout=0.5)).train()
    x = torch.rand(32, 1, 28, 28)
    first, second = classify(model, x), classify(model, x)
    assert first.shape == (32,) and first.dtype == torch.int64
    assert torch.equal(first, second), "dropout and batch statistics must be off while classifying"
    assert model.training
    assert torch.equal(first, model.eval()(x).argmax(dim=1))


@pytest.mark.slow
def test_pytorch_cnn_source_runs_alone_and_builds_the_given_architecture(tmp_path, run_standalone) -> None:
    cfg = MyNetCfg(channels=(4, 8, 8), convs_per_stage=2, downsample="stride", hidden=(16,), head="avg")
    (tmp_path / "pytorch_cnn.py").write_text(pytorch_cnn_source(cfg))
    torch.manual_seed(0)
    trained = MyNet(cfg).eval()
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    x = torch.rand(5, 1, 28, 28)
    torch.save({"x": x, "expected": trained(x)}, tmp_path / "probe.pt")
    script = (
        "import torch\n"
        "from pytorch_cnn import MyNet, classify\n"
        "model = MyNet()\n"
        "model.load_state_dict(torch.load('model.pt', weights_only=True))\n"
        "probe = torch.load('probe.pt', weights_only=True)\n"
        "assert torch.allclose(model.eval()(probe['x']), probe['expected'], atol=1e-6)\n"
        "print(model.cfg.channels, classify(model, probe['x']).tolist())\n"
    )
    result = run_standalone(script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(4, 8, 8) ")
    assert str(trained(x).argmax(dim=1).tolist()) in result.stdout


def test_standalone_source_names_a_default_it_cannot_find() -> None:
    with pytest.raises(ValueError, match="NO_SUCH_CFG"):
        standalone_source([mynet_module], {"NO_SUCH_CFG": MyNetCfg()}, header='"""x"""\n')
