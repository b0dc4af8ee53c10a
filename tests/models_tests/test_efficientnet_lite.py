"""The plain-torch EfficientNet-Lite against timm's ``tf_efficientnet_lite{0,1,2}``: keys, shapes, outputs."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from models.efficientnet_lite import LITE_VARIANTS, create_backbone, is_backbone
from models.weights import resolve_weights

TOLERANCE = 1e-5


def timm_backbone(name: str) -> nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=0).eval()


def calibrated_random_backbone(name: str, generator: torch.Generator) -> nn.Module:
    """timm's backbone with random weights whose batch norms hold the statistics of random images (so the
    activations stay near 1: no denormals slowing the test, every eps and affine parameter matters)."""
    model = timm.create_model(name, pretrained=False, num_classes=0)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None  # a cumulative average: one batch sets the running statistics
        norm.reset_running_stats()
        norm.weight.data.copy_(0.5 + torch.rand(norm.num_features, generator=generator))
        norm.bias.data.copy_(0.1 * torch.randn(norm.num_features, generator=generator))
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 96, 96, generator=generator))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def max_differences(reference: nn.Module, plain: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Largest absolute differences of the feature maps and of the pooled pre-logits."""
    with torch.no_grad():
        ref_maps, maps = reference.forward_features(x), plain.forward_features(x)
        ref_pooled = reference.forward_head(ref_maps, pre_logits=True)
        pooled = plain.forward_head(maps, pre_logits=True)
    assert maps.shape == ref_maps.shape and pooled.shape == ref_pooled.shape == (len(x), 1280)
    return (maps - ref_maps).abs().max().item(), (pooled - ref_pooled).abs().max().item()


@pytest.mark.parametrize("name", sorted(LITE_VARIANTS))
def test_efficientnet_lite_has_timms_state_dict_keys_shapes_and_norms(name) -> None:
    reference, plain = timm_backbone(name), create_backbone(name)
    ref_state, state = reference.state_dict(), plain.state_dict()
    assert list(state) == list(ref_state)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ref_state.items()}
    norms = [(m.eps, m.momentum) for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    ref_norms = [(m.eps, m.momentum) for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == ref_norms and norms[0] == (1e-3, 0.1)
    assert plain.num_features == reference.num_features == 1280
    assert plain.pretrained_cfg["mean"] == reference.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    assert plain.pretrained_cfg["std"] == reference.pretrained_cfg["std"] == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("size", [96, 97])  # even: TF pads strided convs at the bottom/right only
def test_efficientnet_lite0_matches_timm_with_the_pretrained_weights(size) -> None:
    name = "tf_efficientnet_lite0"
    reference = timm_backbone(name)
    state, _ = resolve_weights(name)
    reference.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})
    plain = create_backbone(name).eval()
    plain.load_state_dict(reference.state_dict())  # strict
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    features, pooled = max_differences(reference, plain, 2 * x - 1)
    print(f"{name} {size}px pretrained: max |diff| features {features:.3g}, pooled {pooled:.3g}")
    assert features <= TOLERANCE and pooled <= TOLERANCE


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_efficientnet_lite_matches_timm_with_random_weights(name) -> None:
    generator = torch.Generator().manual_seed(0)
    reference = calibrated_random_backbone(name, generator)
    plain = create_backbone(name).eval()
    plain.load_state_dict(reference.state_dict())  # strict
    x = torch.rand(2, 3, 96, 96, generator=generator)
    features, pooled = max_differences(reference, plain, x)
    print(f"{name} 96px random: max |diff| features {features:.3g}, pooled {pooled:.3g}")
    assert features <= TOLERANCE and pooled <= TOLERANCE


def test_efficientnet_lite_refuses_other_backbones_naming_the_supported_ones() -> None:
    assert is_backbone("tf_efficientnet_lite2") and not is_backbone("resnet18")
    with pytest.raises(
        ValueError, match="no plain-torch backbone 'resnet18'; supported: tf_efficientnet_lite0"
    ):
        create_backbone("resnet18")
