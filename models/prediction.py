"""``classify(model, x)``: the lab evaluator's entry point for an exported classifier (MyNet, FinetuneNet)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["classify"]


def classify(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted class indices ``[B]`` of images ``x`` (the argmax of ``model(x)``), computed in eval mode
    (then the mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x).argmax(dim=1)
    finally:
        model.train(was_training)
