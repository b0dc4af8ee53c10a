"""Samplers and pruners by name, as the CLI offers them; the one place a study's pruner is built.

A study's pruner is built once per command (:func:`study_pruner`, from ``--pruner`` or the task's
``default_pruner``) and handed to its workers as an object; a sampler is built by each worker
(:func:`make_sampler`), because each worker draws from its own seed."""

from __future__ import annotations

import warnings

import optuna

from objectives.rung_pruner import RungPlan, RungPruner
from objectives.task import Task
from spaces import Space

__all__ = ["PRUNERS", "SAMPLERS", "asha_rungs", "make_pruner", "make_sampler", "study_pruner"]

SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("rungs", "rungs-cost", "asha", "median", "hyperband", "none")
ASHA_REDUCTION = 3
COST_WEIGHT = 0.01  # rungs-cost: a doubling of seconds per epoch must buy a point of rung accuracy


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """A sampler by name. TPE is multivariate with grouping (conditional widths) and constant liar
    (so parallel workers do not draw the same point).

    Raises:
        ValueError: for an unknown name.
    """
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}")


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """A pruner by name, with rungs sized to a trial's ``max_epochs``.

    ``rungs`` trains a complete schedule per rung (mynet's default; a task whose objective does not train
    by rungs reads it as ASHA on the epochs 1, 3, 9, ... of one run); ``asha`` compares prefixes of one run.

    Raises:
        ValueError: for an unknown name.
    """
    if name in ("rungs", "rungs-cost"):  # objectives/rung_pruner.py
        # two rungs: a fifth of the budget, then the budget (1-epoch schedules rank poorly:
        # docs/tasks/mynet.md, "Rungs")
        plan = RungPlan(max_epochs, factor=ASHA_REDUCTION, min_epochs=max(1, max_epochs // 5))
        return RungPruner(plan, cost_weight=COST_WEIGHT if name == "rungs-cost" else 0.0)
    if name == "asha":  # successive halving over prefixes of the whole schedule
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=_asha_min_resource(max_epochs), reduction_factor=ASHA_REDUCTION
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, max_epochs // 10))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; valid pruners: {', '.join(PRUNERS)}")


def study_pruner(task: Task, space: Space, name: str | None = None) -> tuple[str, optuna.pruners.BasePruner]:
    """The pruner ``name`` (``None``: the task's ``default_pruner``) sized to the space's epochs, with its
    name (stored with the study, so a joining machine builds the same one).

    Raises:
        ValueError: for an unknown name.
    """
    name = name or task.default_pruner
    return name, make_pruner(name, task.max_epochs(space))


def asha_rungs(max_epochs: int) -> list[int]:
    """The epochs at which the ``asha`` pruner compares a trial with the others (1, 3, 9, 27 for 30)."""
    rungs, epoch = [], _asha_min_resource(max_epochs)
    while epoch <= max_epochs:
        rungs.append(epoch)
        epoch *= ASHA_REDUCTION
    return rungs


def _asha_min_resource(max_epochs: int) -> int:
    return max(1, max_epochs // 20)
