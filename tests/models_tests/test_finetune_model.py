"""FinetuneNet: shapes, normalisation inside the model, the feature/head split, freezing policies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import FinetuneCfg, FinetuneNet
from models.finetune import set_trainable


@pytest.fixture(scope="module")
def model() -> FinetuneNet:
    return FinetuneNet(FinetuneCfg(backbone="tf_efficientnet_lite0", resolution=128, head="mlp", hidden=32))


@pytest.mark.slow
def test_finetune_net_maps_96px_images_to_two_logits(model) -> None:
    model.eval()
    x = torch.rand(3, 3, 96, 96)
    out = model(x)
    assert out.shape == (3, 2)
    assert not torch.allclose(out.exp().sum(1), torch.ones(3))  # logits, not (log-)probabilities
    assert torch.allclose(model.forward_head(model.forward_features(x)), out)
    assert model.forward_features(x).shape == (3, model.num_features)


@pytest.mark.parametrize("backbone", ["mobilenetv3_large_100", "resnet18"])
def test_the_head_takes_the_backbones_pre_logits_width(backbone) -> None:
    # MobileNetV3's pre-logits pass its conv_head: 1280 wide where timm's num_features says 960
    model = FinetuneNet(FinetuneCfg(backbone=backbone, resolution=96)).eval()
    with torch.inference_mode():
        features = model.forward_features(torch.rand(2, 3, 96, 96))
        assert features.shape == (2, model.num_features) and model(torch.rand(2, 3, 96, 96)).shape == (2, 2)


def test_finetune_net_normalises_with_the_backbones_pretrained_cfg(model) -> None:
    cfg = model.backbone.pretrained_cfg
    assert model.mean.flatten().tolist() == pytest.approx(list(cfg["mean"]))
    assert model.std.flatten().tolist() == pytest.approx(list(cfg["std"]))
    assert "mean" not in model.state_dict()  # derived from the architecture, not a weight


def test_finetune_net_resizes_its_input_to_the_configured_resolution(model) -> None:
    seen = []
    hook = model.backbone.conv_stem.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    try:
        model.eval()(torch.rand(1, 3, 96, 96))
    finally:
        hook.remove()
    assert seen == [128]


def test_default_finetune_net_builds_finetune_cfg() -> None:
    assert FinetuneNet().cfg == FinetuneCfg()


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("backbone", "no_such_net", "timm architecture"),
        ("head", "deep", "one of"),
        ("resolution", 8, "32 <="),
    ],
)
def test_finetune_cfg_rejects_bad_values_naming_the_rule(field, value, rule) -> None:
    with pytest.raises(ValueError, match=f"FinetuneCfg.{field}="):
        FinetuneCfg(**{field: value})
    with pytest.raises(ValueError, match=rule):
        FinetuneCfg(**{field: value})


def frozen_norms_in_train_mode(model: FinetuneNet) -> int:
    return sum(
        1
        for m in model.backbone.modules()
        if isinstance(m, nn.BatchNorm2d) and m.training and not m.weight.requires_grad
    )


def test_linear_probe_trains_the_head_only_and_keeps_batch_norm_in_eval() -> None:
    model = FinetuneNet(FinetuneCfg())
    assert set_trainable(model, "linear") == []
    model.train()
    assert frozen_norms_in_train_mode(model) == 0
    assert all(p.requires_grad for p in model.head.parameters())
    before = model.backbone.bn1.running_mean.clone()
    model(torch.rand(4, 3, 96, 96))
    assert torch.equal(model.backbone.bn1.running_mean, before)


def test_last_k_trains_the_last_stages_and_what_follows_them() -> None:
    model = FinetuneNet(FinetuneCfg())
    trainable = set_trainable(model, "last_k", 2)
    backbone = model.backbone
    assert all(p.requires_grad for p in backbone.blocks[-2:].parameters())
    assert all(p.requires_grad for p in backbone.conv_head.parameters())
    assert not any(p.requires_grad for p in backbone.blocks[:-2].parameters())
    assert not backbone.conv_stem.weight.requires_grad
    assert len(trainable) == sum(1 for p in backbone.parameters() if p.requires_grad)
    model.train()
    assert not backbone.bn1.training and backbone.bn2.training
    with pytest.raises(ValueError, match=r"freeze_k must lie in \[1, 7\]"):
        set_trainable(model, "last_k", 9)


def test_full_fine_tune_trains_everything_and_unknown_policies_are_refused() -> None:
    model = FinetuneNet(FinetuneCfg())
    set_trainable(model, "full")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="unknown freeze policy 'half'"):
        set_trainable(model, "half")
