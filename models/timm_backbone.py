"""Where FinetuneNet's backbone comes from: any timm architecture, random (``pretrained=False``), without
its classifier (``num_classes=0``); weights are loaded by the caller (see ``models/weights.py``).

``models/efficientnet_lite.py`` defines the same three names in plain torch; an exported plain-torch
``pytorch_cnn.py`` holds it in place of this module, so the file needs no timm.
"""

from __future__ import annotations

import timm
from torch import nn

__all__ = ["BACKBONE_RULE", "create_backbone", "is_backbone"]

BACKBONE_RULE = "a timm architecture name (timm.list_models())"


def is_backbone(name: str) -> bool:
    """Whether ``name`` is a timm architecture."""
    return bool(timm.is_model(name))


def create_backbone(name: str) -> nn.Module:
    """timm's ``name`` with random weights and no classifier: ``forward_head(x, pre_logits=True)`` pools."""
    return timm.create_model(name, pretrained=False, num_classes=0)
