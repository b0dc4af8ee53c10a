"""Which images validate a mynet trial, and at which epochs all of them are used.

By default (setting ``val_source = "additional"``) a trial is validated on ``val_images`` images set aside
from the lab's "additional" part (never trained on, fixed for the study): 10,000 images measure an accuracy
near 0.9 to +-0.3 points (one standard error) where the lab's 600 give +-1.2, more than the gap between
good configurations. Validating them costs about one training epoch at the lab's 9 % (0.93 of one for the
baseline network: ``bench/fidelity.py --cost``), so all of them are used only where a decision is made --
the pruner's rungs (ASHA, Hyperband) and the final epoch, which is the trial's value -- and the first
``val_subset`` of them (a seeded random sample; 2,000: 0.19 of an epoch, +-0.7 points) at the other epochs,
which only draw the curves. Pruners that decide every epoch (median) get all of them every epoch.
``val_source = "lab"`` validates on the lab's own 1 % split every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import torch

from objectives.mynet.data import FashionSplit

__all__ = ["Validation", "decision_epochs"]


@dataclass(frozen=True)
class Validation:
    """A trial's validation images (on the trial's device) and the epochs that use all of them.

    Args:
        x: uint8 images ``[N, 1, 28, 28]``.
        y: Labels ``[N]``.
        subset: Images validated at the other epochs (the first ``subset``; 0 or ``N``: all).
        full_epochs: The epochs validated on all ``N`` images.
        source: ``"additional"`` or ``"lab"``.
    """

    x: torch.Tensor
    y: torch.Tensor
    subset: int
    full_epochs: frozenset[int]
    source: str

    @classmethod
    def for_trial(
        cls, data: FashionSplit, settings: dict[str, Any], epochs: int, pruner: optuna.pruners.BasePruner
    ) -> Validation:
        """The validation of a trial of ``epochs`` epochs under the study's ``settings`` and ``pruner``."""
        if settings.get("val_source", "lab") == "lab":
            return cls(data.x_val, data.y_val, 0, frozenset(range(1, epochs + 1)), "lab")
        return cls(
            data.x_holdout,
            data.y_holdout,
            int(settings["val_subset"]),
            frozenset(decision_epochs(pruner, epochs)),
            "additional",
        )

    def at(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels to validate ``epoch`` on."""
        if epoch in self.full_epochs or not 0 < self.subset < len(self.y):
            return self.x, self.y
        return self.x[: self.subset], self.y[: self.subset]

    def validated_images(self, epochs: int) -> int:
        """Images validated over a schedule of ``epochs`` epochs whose last is a decision (a rung's)."""
        if not 0 < self.subset < len(self.y):
            return epochs * len(self.y)
        return (epochs - 1) * self.subset + len(self.y)


def decision_epochs(pruner: optuna.pruners.BasePruner, epochs: int) -> set[int]:
    """The epochs at which ``pruner`` compares a trial of ``epochs`` epochs with others, and the last one.

    Successive halving and Hyperband compare at their rungs (``min_resource * reduction_factor ** k``);
    no pruner never compares; any other pruner may compare at every epoch.
    """
    if isinstance(pruner, optuna.pruners.NopPruner):
        return {epochs}
    if isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner | optuna.pruners.HyperbandPruner):
        low, factor = getattr(pruner, "_min_resource", None), getattr(pruner, "_reduction_factor", None)
        if isinstance(low, int) and isinstance(factor, int) and low >= 1 and factor >= 2:
            rungs, epoch = {epochs}, low
            while epoch <= epochs:
                rungs.add(epoch)
                epoch *= factor
            return rungs
    return set(range(1, epochs + 1))
