"""mynet's ensemble hooks: an ensemble's held-out figure (the mean softmax's accuracy), the exported
``MyNet()`` that averages its members, and the test accuracy recorded with an ensemble export."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from models import ensemble_source
from objectives.held_out import accuracy, mean_probabilities
from spaces.mynet import MyNetTrialConfig

__all__ = ["ensemble_figure", "ensemble_source_for", "model_config", "test_figures"]


def ensemble_figure(members: Sequence[dict[str, np.ndarray]], flip: bool) -> float:
    """The validation accuracy of the members' mean softmax on one confirmation replicate."""
    return accuracy(*mean_probabilities(members, "val"))


def model_config(config: dict[str, Any]) -> Any:
    """The MyNet architecture of a trial's stored configuration."""
    return MyNetTrialConfig.from_dict(config).model


def ensemble_source_for(cfgs: list[Any], flip: bool, plain_torch: bool) -> str:
    """``pytorch_cnn.py`` whose ``MyNet()`` averages the members ``cfgs``."""
    return ensemble_source(mynet_cfgs=cfgs)


def test_figures(ensemble: nn.Module, single: nn.Module, data: str | None) -> dict[str, Any]:
    """t10k accuracy of the ensemble and of the winner alone (information only: nothing is chosen on it)."""
    from objectives.mynet.data import load_fashion
    from objectives.training.fit import accuracy as net_accuracy

    images = load_fashion(data)
    return {
        "test_accuracy": net_accuracy(ensemble, images.x_test, images.y_test),
        "single_test_accuracy": net_accuracy(single, images.x_test, images.y_test),
        "n_test": len(images.y_test),
    }
