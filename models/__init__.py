"""Torch models: ``MyNet`` (FashionMNIST CNN, configured by ``MyNetCfg``), ``classify``, and the export of
a self-contained ``pytorch_cnn.py``. ``FinetuneNet`` arrives with the ``finetune`` task."""

from ._standalone import pytorch_cnn_source
from .mynet import MYNET_CFG
from .mynet import MyNet
from .mynet import MyNetCfg
from .mynet import classify

__all__ = ["MYNET_CFG", "MyNet", "MyNetCfg", "classify", "pytorch_cnn_source"]
