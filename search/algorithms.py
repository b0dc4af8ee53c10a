"""Samplers and pruners by name, as the CLI offers them."""

from __future__ import annotations

import warnings

import optuna

__all__ = ["PRUNERS", "SAMPLERS", "make_pruner", "make_sampler"]

SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("asha", "median", "hyperband", "none")


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

    Raises:
        ValueError: for an unknown name.
    """
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, max_epochs // 20), reduction_factor=3
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, max_epochs // 10))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; valid pruners: {', '.join(PRUNERS)}")
