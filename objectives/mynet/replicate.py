"""mynet confirmation replicates: seeds only (its validation images are the lab's fixed split)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from optuna.trial import FrozenTrial

from objectives.held_out import probabilities
from objectives.mynet.data import unlabelled_images
from objectives.replicate import Replicate
from objectives.training.fit import accuracy, fit, resolve_device
from spaces.mynet import MyNetTrialConfig

__all__ = ["retrain_mynet"]


def retrain_mynet(
    trial: FrozenTrial, data: Any, rep: Replicate, settings: dict[str, Any], device: str = "auto"
) -> dict[str, Any]:
    """One replicate of a mynet configuration: the study's split with a fresh seed; the final epoch's
    accuracy on the study's validation images (its large holdout when it has one), as the search scores."""
    from models import MyNet

    if rep.scheme != "seed":
        raise ValueError("mynet confirms over seeds (--seeds R): its training images are the lab's split")
    cfg = MyNetTrialConfig.from_dict(trial.user_attrs["config"])
    seed = int(trial.user_attrs.get("seed", trial.number)) * 31 + 1_000 + rep.index
    torch_device = resolve_device(device)
    split = data.to(torch_device)
    x_val, y_val = (split.x_holdout, split.y_holdout) if len(split.y_holdout) else (split.x_val, split.y_val)
    torch.manual_seed(seed)
    model = MyNet(cfg.model).to(torch_device, memory_format=torch.channels_last)
    result = fit(
        model,
        cfg.train,
        cfg.augment,
        (split.x_train, split.y_train),
        None,  # scored once, after the last epoch: the schedules anneal there
        generator=torch.Generator(device=torch_device).manual_seed(seed),
        unlabelled=unlabelled_images(cfg.train, split),
    )
    model.eval()
    return {
        "value": accuracy(model, x_val, y_val),
        "best_epoch": len(result.history),
        "n_train": len(split.y_train),
        "n_val": len(y_val),
        "test_accuracy": accuracy(model, split.x_test, split.y_test),
        "predictions": {
            "val": (probabilities(model, x_val, prepare=_unit), y_val.cpu().numpy().astype(np.int64))
        },
    }


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255)
