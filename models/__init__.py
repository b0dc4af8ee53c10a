"""Torch models: ``MyNet`` (FashionMNIST CNN, configured by ``MyNetCfg``), ``classify``, and the export of
a self-contained ``pytorch_cnn.py``; ``FinetuneNet`` (a timm backbone, configured by ``FinetuneCfg``; a
plain-torch EfficientNet-Lite in ``efficientnet_lite`` for files that must not need timm).

Names are imported on first use (lazy_loader, PEP 562), so ``models.mynet`` alone does not import timm."""

import lazy_loader

_SUBMODULE_NAMES = {
    "_ensemble_source": ["ensemble_source"],
    "_standalone": ["finetune_modules", "pytorch_cnn_source", "standalone_source", "submission_source"],
    "finetune": ["FINETUNE_CFG", "FinetuneCfg", "FinetuneNet"],
    "mynet": ["MYNET_CFG", "MyNet", "MyNetCfg", "classify"],
}

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs=_SUBMODULE_NAMES)
