"""Size a trial's epochs to the time its run has left (``--timeout``), so a schedule anneals before the end.

A fine-tune trial drawn late in a timed run would otherwise start a 6-epoch cosine schedule it cannot finish:
the run stops at its deadline and the trial fails with nothing to show. Before training, the trial times a
training micro-batch (forward, backward, augmentation) and an evaluation chunk on a copy of its model, and
estimates an epoch as ``train images x s/image + evaluated images x s/image``. It then trains
``min(drawn epochs, floor(share x seconds left / epoch))`` epochs, its whole schedule compressed into them
(as the fidelity rungs do), or is pruned before training with its reason when not even one epoch fits.

A mynet trial's rungs keep their epochs (a rung compares trials trained alike), so a rung that would end after
the deadline does not start (:func:`rung_overruns`): the trial stops where it is, pruned with its reason --
before training on the estimate above (:class:`EpochCost`), or at a promotion on the seconds per epoch its
last rung measured. A new trial that could train its first rung but not finish all of them in time does not
start either: only a finished trial can win, so its first rung would be spent for nothing.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["EpochCost", "TimePlan", "plan_epochs", "rung_overruns", "seconds_per_image"]

SHARE = 0.9  # of the time left: the estimate is rough, and the checkpoint and storage writes follow


@dataclass(frozen=True)
class TimePlan:
    """``epochs`` to train (0: none fits) from the estimated ``epoch_seconds`` and the ``seconds_left``."""

    epochs: int
    drawn_epochs: int
    epoch_seconds: float
    seconds_left: float

    @property
    def reason(self) -> str | None:
        """Why the trial cannot train, or ``None``."""
        if self.epochs >= 1:
            return None
        return (
            f"not enough time left: one epoch takes about {self.epoch_seconds:.0f} s, "
            f"{self.seconds_left:.0f} s of the run's --timeout remain"
        )

    def attrs(self) -> dict[str, Any]:
        """A JSON-ready record (the trial's ``time_plan`` user attribute)."""
        return {
            "epochs": self.epochs,
            "drawn_epochs": self.drawn_epochs,
            "epoch_seconds": round(self.epoch_seconds, 1),
            "seconds_left": round(self.seconds_left, 1),
        }


@dataclass(frozen=True)
class EpochCost:
    """Estimated seconds of one training epoch (``train``) and of validating one image (``per_image``)."""

    train: float
    per_image: float

    def seconds(self, epochs: int, validated: int) -> float:
        """Seconds of ``epochs`` training epochs that validate ``validated`` images in all."""
        return epochs * self.train + validated * self.per_image


def seconds_per_image(
    model: nn.Module,
    train_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    eval_batch: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[float, float]:
    """Seconds per training image (a forward and backward pass of ``train_batch()``, augmentation included)
    and per evaluated image, each the faster of two timings on a copy of ``model`` (the first pays for
    allocation and kernel selection); ``model`` and its batch-norm statistics are left untouched."""
    probe = copy.deepcopy(model)
    train, evaluate = math.inf, math.inf
    for _ in range(2):
        started = time.perf_counter()
        x, y = train_batch()
        probe.train()
        loss(probe(x), y).backward()
        probe.zero_grad(set_to_none=True)
        train = min(train, (time.perf_counter() - started) / len(y))
        started = time.perf_counter()
        probe.eval()
        with torch.inference_mode():
            probe(eval_batch)
        evaluate = min(evaluate, (time.perf_counter() - started) / len(eval_batch))
    del probe
    return train, evaluate


def plan_epochs(
    epoch_seconds: float, seconds_left: float, drawn_epochs: int, *, share: float = SHARE
) -> TimePlan:
    """The epochs that fit in ``share`` of ``seconds_left`` at ``epoch_seconds`` each (at most
    ``drawn_epochs``)."""
    fit = math.floor(share * max(0.0, seconds_left) / max(epoch_seconds, 1e-9))
    return TimePlan(min(drawn_epochs, fit), drawn_epochs, epoch_seconds, seconds_left)


def rung_overruns(
    epoch_seconds: float, seconds_left: float, epochs: int, *, share: float = SHARE, finish: bool = False
) -> str | None:
    """Why ``epochs`` more epochs at ``epoch_seconds`` each cannot end within ``share`` of the
    ``seconds_left`` of the run's ``--timeout`` (``None`` when they can); ``finish``: they are all the
    trial's epochs, not just its next rung's."""
    if plan_epochs(epoch_seconds, seconds_left, epochs, share=share).epochs >= epochs:
        return None
    what = f" to finish: its {epochs} epochs" if finish else f": its next {epochs} epochs"
    return (
        f"not enough time left{what} take about {epochs * epoch_seconds:.0f} s, "
        f"{max(0.0, seconds_left):.0f} s of the run's --timeout remain"
    )
