"""The rungs pruner: successive halving over complete short schedules, for objectives that train by rungs.

A low fidelity is not the first epochs of a long run: a trial judged at a rung of ``r`` epochs has trained
its whole learning-rate schedule compressed into ``r`` epochs (one-cycle and cosine anneal before they are
judged; the prefix of a long one-cycle is measured at its peak rate and predicts its end poorly). The rungs
are ``min_epochs * factor ** k`` up to a third of the budget, then the budget (``epochs``) itself: 1, 3, 9
for 9 epochs. Promotion either re-trains the configuration from scratch at the next rung (``retrain``) or
continues from the rung's weights under a fresh schedule spanning the remaining epochs (``continue``).

The decisions are Optuna's :class:`~optuna.pruners.SuccessiveHalvingPruner` (asynchronous successive
halving): the trial reports its validation accuracy once per rung, with ``step`` = the rung's epochs, and
asks ``should_prune``; :class:`RungPruner` is that pruner carrying its plan, so the objective knows to
train by rungs. With a ``cost_weight`` the pruner ranks a rung's trials by accuracy less ``cost_weight`` per
doubling of their training seconds per epoch (the trial's ``epoch_seconds`` attribute): at equal accuracy the
cheaper configuration is promoted, and the sampler learns from the trials that complete. This module imports
no torch (the CLI builds pruners without it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial

__all__ = ["EPOCH_SECONDS_ATTR", "RungPlan", "RungPruner"]

EPOCH_SECONDS_ATTR = "epoch_seconds"  # a rung's mean training seconds per epoch, set before its report


@dataclass(frozen=True)
class RungPlan:
    """The epochs of each rung of a budget.

    Args:
        top: The budget: a trial that reaches the last rung trains this many epochs (its value's schedule).
        factor: Successive halving's reduction factor (each rung ``factor`` times the one before).
        min_epochs: The first rung's epochs (default: ``top // factor**2``, at least 1: three rungs).
    """

    top: int
    factor: int = 3
    min_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.top < 1 or self.factor < 2:
            raise ValueError(f"a rung plan needs top >= 1 and factor >= 2, got {self.top}, {self.factor}")
        if self.min_epochs is None:
            object.__setattr__(self, "min_epochs", max(1, self.top // self.factor**2))
        if not 1 <= self.min_epochs <= self.top:
            raise ValueError(f"min_epochs must lie in [1, {self.top}], got {self.min_epochs}")

    @property
    def epochs(self) -> list[int]:
        """Each rung's epochs, ascending, ending with ``top`` (``[1, 3, 9]`` for 9; ``[3, 9, 30]`` for 30).

        Every rung but the last is ``min_epochs * factor**k`` and at most ``top / factor``, so Optuna's
        successive halving compares a report at rung ``k``'s epochs in its rung ``k``.
        """
        rungs, epochs = [], self.min_epochs
        while epochs * self.factor <= self.top:
            rungs.append(epochs)
            epochs *= self.factor
        return [*rungs, self.top]


class RungPruner(optuna.pruners.SuccessiveHalvingPruner):
    """Optuna's asynchronous successive halving over a :class:`RungPlan`, its trials training by rungs.

    A trial is promoted from a rung when its score is in the top ``1 / factor`` of the scores reported at
    that rung so far (the first ones: when it is the best so far); ``bootstrap_count`` as in Optuna. The score
    is the rung's validation accuracy, less ``cost_weight * log2(epoch_seconds)`` when ``cost_weight`` is set
    (Optuna's ``completed_rung_<k>`` system attributes then hold scores); a trial without the attribute is
    scored by its accuracy alone.
    """

    def __init__(self, plan: RungPlan, *, bootstrap_count: int = 0, cost_weight: float = 0.0) -> None:
        if cost_weight < 0:
            raise ValueError(f"cost_weight must be >= 0, got {cost_weight}")
        super().__init__(
            min_resource=plan.min_epochs, reduction_factor=plan.factor, bootstrap_count=bootstrap_count
        )
        self.plan = plan
        self.cost_weight = cost_weight

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        seconds = trial.user_attrs.get(EPOCH_SECONDS_ATTR)
        step = trial.last_step
        if not self.cost_weight or not seconds or step is None:
            return super().prune(study, trial)
        scored = copy.copy(trial)  # Optuna compares (and records) the intermediate value at the last step
        scored.intermediate_values = {
            **trial.intermediate_values,
            step: trial.intermediate_values[step] - self.cost_weight * math.log2(seconds),
        }
        return super().prune(study, scored)
