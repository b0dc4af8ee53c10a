"""Torch models: ``MyNet`` (FashionMNIST CNN, configured by ``MyNetCfg``), ``classify``, and the export of
a self-contained ``pytorch_cnn.py``; ``FinetuneNet`` (a timm backbone, configured by ``FinetuneCfg``; a
plain-torch EfficientNet-Lite in ``efficientnet_lite`` for files that must not need timm).

Names are imported on first use (PEP 562), so ``models.mynet`` alone does not import timm."""

import importlib
from typing import Any

_EXPORTS = {
    "pytorch_cnn_source": "_standalone",
    "submission_source": "_standalone",
    "FINETUNE_CFG": "finetune",
    "FinetuneCfg": "finetune",
    "FinetuneNet": "finetune",
    "MYNET_CFG": "mynet",
    "MyNet": "mynet",
    "MyNetCfg": "mynet",
    "classify": "mynet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
