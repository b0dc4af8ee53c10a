"""The ``numpy-mlp`` task: train one NumPy MLP configuration on a two-digit MNIST split.

A trial is validated by stratified k-fold cross-validation of the training images (setting ``folds``,
default 5; the folds train side by side, an epoch at a time) or, with ``folds=1``, on the study's one seeded
validation split (``val_fraction``). Canonical order per epoch: train -> validate -> ``trial.report(value,
epoch)`` -> prune if told; a trial the run's deadline reaches ends with its best epoch so far
(:meth:`~objectives.task.TrialContext.out_of_time`). The best epoch's weights are kept and written as the
trial's checkpoint; curves, per-fold figures and the test error are stored as trial user attributes (the test
split is never used to choose anything). :func:`fit_config` trains one configuration on given
train/validation indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from nn_numpy import (
    BCE,
    SE,
    SGD,
    Diverged,
    EpochStats,
    Stopped,
    Trainer,
    TrainResult,
    build_mlp,
    load_model,
    predict,
    restore,
    save_model,
)
from objectives.folds import pooled, stratified_folds, tie_broken_error
from objectives.mnist import DigitPair, binary_split, load_mnist, select_pair
from objectives.numpy_mlp.fold_arrays import derived, read_only
from objectives.task import DeadlineReached, TrialContext
from spaces import Space
from spaces.numpy_mlp import NumpyMLPConfig, suggest

__all__ = [
    "ConfigFit",
    "evaluate",
    "fit_config",
    "fold_arrays",
    "load_data",
    "objective",
    "pool",
    "random_shift",
    "start_fit",
]

_SIDE = 28


def load_data(data: str | None, settings: dict[str, Any]) -> DigitPair:
    """Load MNIST from ``data`` and split the study's two classes (settings ``classes``, ``val_fraction``;
    with ``folds`` > 1 the folds are drawn from both parts, see :func:`pool`)."""
    return binary_split(load_mnist(data), tuple(settings["classes"]), val_fraction=settings["val_fraction"])


@dataclass
class ConfigFit:
    """One configuration trained on one train/validation split: the model (at its best epoch) and its
    per-epoch figures (``result.history``, ``result.best_epoch``)."""

    model: list
    result: TrainResult


def start_fit(
    cfg: NumpyMLPConfig,
    data: DigitPair,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    rng: np.random.Generator,
) -> Trainer:
    """Build ``cfg``'s model and a :class:`~nn_numpy.Trainer` that trains it an epoch per ``step()`` on the
    training images ``train_idx`` of :func:`pool` ``(data)``, validating on ``val_idx``."""
    return _trainer(cfg, data, _split_arrays(data, train_idx, val_idx, np.dtype(cfg.dtype)), rng)


def _split_arrays(
    data: DigitPair, train_idx: np.ndarray, val_idx: np.ndarray, dtype: np.dtype
) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_val, y_val)`` of ``pool(data)`` at the indices, as ``dtype``."""
    x, y = pool(data)
    return tuple(a[idx].astype(dtype) for idx in (train_idx, val_idx) for a in (x, y))


def fold_arrays(data: DigitPair, k: int, seed: int, dtype: np.dtype) -> list[tuple[np.ndarray, ...]]:
    """The ``k`` seeded stratified folds' arrays (see :func:`_split_arrays`), made once per worker."""

    def build() -> list[tuple[np.ndarray, ...]]:
        splits = stratified_folds(pool(data)[1], k, seed)
        return [read_only(*_split_arrays(data, trn, val, dtype)) for trn, val in splits]

    return derived(data, ("folds", k, seed, dtype.str), build)


def _trainer(
    cfg: NumpyMLPConfig, data: DigitPair, arrays: tuple[np.ndarray, ...], rng: np.random.Generator
) -> Trainer:
    dtype = np.dtype(cfg.dtype)
    x_train = arrays[0]
    model = build_mlp(x_train.shape[1], cfg.widths, cfg.activation, init=cfg.init, rng=rng, dtype=dtype)
    augment = None
    if cfg.augment_shift:
        background = np.asarray(-data.mean / data.std, dtype=dtype)
        augment = lambda x, r: random_shift(x, r, cfg.augment_shift, background)  # noqa: E731
    return Trainer(
        model,
        SE() if cfg.loss == "se" else BCE(),
        *arrays,
        batch_size=cfg.batch_size,
        rng=rng,
        augment=augment,
        optimizer=SGD(cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, lr_decay=cfg.lr_decay),
    )


def fit_config(
    cfg: NumpyMLPConfig,
    data: DigitPair,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    rng: np.random.Generator,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> ConfigFit:
    """Train ``cfg`` for its epochs on ``train_idx`` of :func:`pool` ``(data)``, validating on ``val_idx``;
    the model is returned at its best epoch (lowest validation error, then loss).

    Raises:
        Diverged: when a loss turns NaN/inf; whatever ``on_epoch`` raises.
    """
    trainer = start_fit(cfg, data, train_idx, val_idx, rng)
    for _ in range(cfg.epochs):
        stats = trainer.step()
        if on_epoch is not None:
            on_epoch(stats)
    result = trainer.result()
    restore(trainer.model, result.best_params)
    return ConfigFit(trainer.model, result)


def pool(data: DigitPair) -> tuple[np.ndarray, np.ndarray]:
    """All training images of ``data`` (its train part, then its validation part) and their labels: the
    images the folds are drawn from. ``data``'s own split is ``pool`` indices ``[:n_train]`` and the rest.
    Read-only arrays, made once per ``data``."""
    return derived(
        data,
        "pool",
        lambda: read_only(
            np.concatenate([data.x_train, data.x_val]), np.concatenate([data.y_train, data.y_val])
        ),
    )


def objective(trial: optuna.Trial, data: DigitPair, space: Space, context: TrialContext) -> float:
    """Train the configuration drawn for ``trial``: with the setting ``folds`` of 1 on the study's split,
    returning the best epoch's validation error; otherwise on each of ``folds`` stratified folds side by
    side, returning the best epoch's tie-broken error pooled over the folds (see :mod:`objectives.folds`)."""
    cfg = suggest(trial, space)
    trial.set_user_attr("config", cfg.to_dict())
    seed = int(trial.study.user_attrs.get("seed", 0))
    folds = int(space.settings().get("folds", 1))
    if folds == 1:
        model, best_epoch, value = _single_split(trial, cfg, data, context, seed)
    else:
        model, best_epoch, value = _cross_validate(trial, cfg, data, context, seed, folds)
    dtype = np.dtype(cfg.dtype)
    test_error = _error(model, data.x_test.astype(dtype), data.y_test)
    checkpoint = context.checkpoint_dir / f"trial-{trial.number:05d}.npz"
    if context.keeps_checkpoint(trial, value):  # named either way, like a checkpoint deleted later
        save_model(
            checkpoint,
            model,
            mean=np.float64(data.mean),
            std=np.float64(data.std),
            classes=np.array(data.classes),
        )
    trial.set_user_attr("best_epoch", best_epoch)
    trial.set_user_attr("test_error", test_error)
    trial.set_user_attr("n_test", len(data.y_test))
    trial.set_user_attr("checkpoint", checkpoint.name)
    return value


def _single_split(
    trial: optuna.Trial, cfg: NumpyMLPConfig, data: DigitPair, context: TrialContext, seed: int
) -> tuple[list, int, float]:
    """Today's selection: one seeded validation split (``val_fraction``), the best epoch's error."""
    curves: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_error": []}
    n_train = len(data.y_train)
    indices = np.arange(n_train + len(data.y_val))
    rng = np.random.default_rng([trial.number, seed])
    trainer = start_fit(cfg, data, indices[:n_train], indices[n_train:], rng)
    try:
        for _ in range(cfg.epochs):
            stats = trainer.step(stop=context.out_of_time)
            for key, values in curves.items():
                values.append(float(getattr(stats, key)))
            context.report(trial, stats.val_error, stats.epoch)
    except Stopped as stop:
        _stopped_by_deadline(trial, context, curves, stop.epoch, cfg.epochs, _best_epoch(trainer.history))
    except (Diverged, optuna.TrialPruned) as exc:
        raise context.pruned(trial, curves, str(exc)) from None
    result = trainer.result()
    restore(trainer.model, result.best_params)
    trial.set_user_attr("curves", curves)
    return trainer.model, result.best_epoch, float(result.best.val_error)


def _cross_validate(
    trial: optuna.Trial, cfg: NumpyMLPConfig, data: DigitPair, context: TrialContext, seed: int, k: int
) -> tuple[list, int, float]:
    """Train the ``k`` folds an epoch at a time, reporting the pooled figure each epoch (so every pruner
    can stop a poor trial after its first epochs); the checkpoint is fold 1's model at the epoch where the
    pooled figure was best (fold 1: a fixed choice, not the luckiest fold). An epoch has a value once every
    fold ended it: a deadline in epoch E leaves epochs 1 to E - 1."""
    folds = fold_arrays(data, k, seed, np.dtype(cfg.dtype))
    sizes = [len(arrays[3]) for arrays in folds]
    n = sum(sizes)
    trainers = [
        _trainer(cfg, data, arrays, np.random.default_rng([trial.number, seed, fold]))
        for fold, arrays in enumerate(folds)
    ]
    curves: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_error": [], "val_brier": []}
    best = (math.inf, 0, [])  # (pooled figure, epoch, fold 1's parameters)
    try:
        for epoch in range(1, cfg.epochs + 1):
            stats = [trainer.step(stop=context.out_of_time) for trainer in trainers]
            for key, values in curves.items():
                values.append(pooled([getattr(s, key) for s in stats], sizes))
            value = tie_broken_error(curves["val_error"][-1], curves["val_brier"][-1], n)
            if value < best[0]:
                best = (value, epoch, trainers[0].params())
            context.report(trial, value, epoch)
    except Stopped as stop:
        _stopped_by_deadline(trial, context, curves, stop.epoch, cfg.epochs, best[1])
    except (Diverged, optuna.TrialPruned) as exc:
        raise context.pruned(trial, curves, str(exc)) from None
    value, best_epoch, params = best
    done = len(curves["val_error"])  # some folds may have ended the epoch the deadline stopped
    fold_best = [_best_epoch(trainer.history[:done]) for trainer in trainers]
    trial.set_user_attr("curves", curves)
    trial.set_user_attr("folds", k)
    trial.set_user_attr("n_val", n)
    trial.set_user_attr("fold_val_error", [t.history[best_epoch - 1].val_error for t in trainers])
    trial.set_user_attr("fold_val_brier", [t.history[best_epoch - 1].val_brier for t in trainers])
    trial.set_user_attr("fold_best_epochs", fold_best)
    trial.set_user_attr("mean_best_epoch", float(np.mean(fold_best)))
    model = trainers[0].model
    restore(model, params)
    return model, best_epoch, value


def _best_epoch(history: list[EpochStats]) -> int:
    """The best of ``history``'s epochs as :class:`~nn_numpy.Trainer` picks it (0: none)."""
    keys = [(stats.val_error, stats.val_loss) for stats in history]
    return keys.index(min(keys)) + 1 if keys else 0


def _stopped_by_deadline(
    trial: optuna.Trial,
    context: TrialContext,
    curves: dict[str, list[float]],
    epoch: int,
    epochs: int,
    best_epoch: int,
) -> None:
    """Record that the deadline stopped ``trial`` in ``epoch``; it completes with ``best_epoch``, or, when no
    epoch has a value yet (0), is pruned.

    Raises:
        DeadlineReached: when ``best_epoch`` is 0.
    """
    where = f"in epoch {epoch} of {epochs}"
    if not best_epoch:
        context.stopped_by_deadline(trial, f"{where}; no epoch ended")
        reason = f"the run's deadline came {where}, before any epoch ended"
        raise context.pruned(trial, curves, reason, error=DeadlineReached)
    context.stopped_by_deadline(trial, f"{where}; completed with epoch {best_epoch}")


def evaluate(
    trial: optuna.trial.FrozenTrial, checkpoint: Path, data: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """Score a trial's checkpoint on the test split of ``data``: ``{"test_error": ..., "n": ...}``."""
    model, extras = load_model(checkpoint)
    dtype = model[0].W.dtype
    images = load_mnist(data)
    x, y = select_pair(images.x_test, images.y_test, tuple(int(c) for c in extras["classes"]))
    x = ((x - float(extras["mean"])) / float(extras["std"])).astype(dtype)
    return {"test_error": _error(model, x, y), "n": int(len(y))}


def random_shift(
    x: np.ndarray, rng: np.random.Generator, max_shift: int, background: np.ndarray
) -> np.ndarray:
    """Translate each flat 28x28 image of ``x`` [B, 784] by up to ``max_shift`` pixels in x and y."""
    batch = len(x)
    pad = max_shift
    images = np.full((batch, _SIDE + 2 * pad, _SIDE + 2 * pad), background, dtype=x.dtype)
    images[:, pad : pad + _SIDE, pad : pad + _SIDE] = x.reshape(batch, _SIDE, _SIDE)
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, batch))
    rows = dy[:, None] + np.arange(_SIDE)
    cols = dx[:, None] + np.arange(_SIDE)
    shifted = images[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return shifted.reshape(batch, _SIDE * _SIDE)


def _error(model: list, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((predict(model, x) > 0.5).astype(np.int64) != y))
