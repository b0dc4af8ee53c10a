"""Torch models: ``MyNet`` (FashionMNIST CNN, configured by ``MyNetCfg``), ``classify``, and the export of
a self-contained ``pytorch_cnn.py``; ``FinetuneNet`` (a timm backbone, configured by ``FinetuneCfg``; a
plain-torch EfficientNet-Lite in ``efficientnet_lite`` for files that must not need timm)."""

from ._standalone import pytorch_cnn_source
from ._standalone import submission_source
from .finetune import FINETUNE_CFG
from .finetune import FinetuneCfg
from .finetune import FinetuneNet
from .mynet import MYNET_CFG
from .mynet import MyNet
from .mynet import MyNetCfg
from .mynet import classify

__all__ = [
    "FINETUNE_CFG",
    "FinetuneCfg",
    "FinetuneNet",
    "MYNET_CFG",
    "MyNet",
    "MyNetCfg",
    "classify",
    "pytorch_cnn_source",
    "submission_source",
]
