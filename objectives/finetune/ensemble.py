"""finetune's ensemble hooks: an ensemble's held-out proxy (ORIG, AUG, NEW of the mean softmax, ORIG over
flips too with test-time augmentation) and the exported ``FinetuneNet()`` that averages its members."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models import ensemble_source
from objectives.finetune.proxy import proxy_score
from objectives.held_out import accuracy, mean_probabilities
from spaces.finetune import FinetuneTrialConfig

__all__ = ["ensemble_figure", "ensemble_source_for", "model_config"]


def ensemble_figure(members: Sequence[dict[str, np.ndarray]], flip: bool) -> float:
    """The proxy of the members' mean softmax on one confirmation replicate."""
    orig, labels = mean_probabilities(members, "orig")
    if flip:
        orig = (orig + mean_probabilities(members, "orig_flip")[0]) / 2
    new = accuracy(*mean_probabilities(members, "new")) if "new" in members[0] else None
    return proxy_score(accuracy(orig, labels), accuracy(*mean_probabilities(members, "aug")), new)


def model_config(config: dict[str, Any]) -> Any:
    """The FinetuneNet architecture of a trial's stored configuration."""
    return FinetuneTrialConfig.from_dict(config).model


def ensemble_source_for(cfgs: list[Any], flip: bool, plain_torch: bool) -> str:
    """``pytorch_cnn.py`` whose ``FinetuneNet()`` averages the members ``cfgs`` (over flips with ``flip``)."""
    return ensemble_source(finetune_cfgs=cfgs, flip=flip, plain_torch=plain_torch)
