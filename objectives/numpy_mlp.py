"""The ``numpy-mlp`` task: train one NumPy MLP configuration on a two-digit MNIST split.

Canonical order per epoch: train -> validate -> ``trial.report(val_error, epoch)`` -> prune if told.
The best epoch's weights are kept and written as the trial's checkpoint; curves and the test error are
stored as trial user attributes (the test split is never used to choose anything).
"""

from __future__ import annotations

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
    build_mlp,
    load_model,
    predict,
    restore,
    save_model,
    train,
)
from spaces import Space
from spaces.numpy_mlp import SPACE, suggest

from ._registry import Task, TrialContext, register
from .data import DigitPair, binary_split, load_mnist, select_pair

__all__ = ["evaluate", "load_data", "objective", "random_shift"]

_SIDE = 28


def load_data(data: str | None, settings: dict[str, Any]) -> DigitPair:
    """Load MNIST from ``data`` and split the study's two classes (settings ``classes``, ``val_fraction``)."""
    return binary_split(load_mnist(data), tuple(settings["classes"]), val_fraction=settings["val_fraction"])


def objective(trial: optuna.Trial, data: DigitPair, space: Space, context: TrialContext) -> float:
    """Train the configuration drawn for ``trial``; return the best epoch's validation error."""
    cfg = suggest(trial, space)
    trial.set_user_attr("config", cfg.to_dict())
    dtype = np.dtype(cfg.dtype)
    rng = np.random.default_rng([trial.number, int(trial.study.user_attrs.get("seed", 0))])
    model = build_mlp(data.x_train.shape[1], cfg.widths, cfg.activation, init=cfg.init, rng=rng, dtype=dtype)
    loss = SE() if cfg.loss == "se" else BCE()
    curves: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_error": []}

    def on_epoch(stats: EpochStats) -> None:
        for key, values in curves.items():
            values.append(float(getattr(stats, key)))
        context.report(trial, stats.val_error, stats.epoch)

    augment = None
    if cfg.augment_shift:
        background = np.asarray(-data.mean / data.std, dtype=dtype)
        augment = lambda x, r: random_shift(x, r, cfg.augment_shift, background)  # noqa: E731
    try:
        result = train(
            model,
            loss,
            data.x_train.astype(dtype),
            data.y_train.astype(dtype),
            data.x_val.astype(dtype),
            data.y_val.astype(dtype),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            rng=rng,
            on_epoch=on_epoch,
            augment=augment,
            optimizer=SGD(
                cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, lr_decay=cfg.lr_decay
            ),
        )
    except (Diverged, optuna.TrialPruned) as exc:
        raise context.pruned(trial, curves, str(exc)) from None

    restore(model, result.best_params)
    test_error = _error(model, data.x_test.astype(dtype), data.y_test)
    checkpoint = context.checkpoint_dir / f"trial-{trial.number:05d}.npz"
    save_model(
        checkpoint,
        model,
        mean=np.float64(data.mean),
        std=np.float64(data.std),
        classes=np.array(data.classes),
    )
    trial.set_user_attr("curves", curves)
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("test_error", test_error)
    trial.set_user_attr("n_test", len(data.y_test))
    trial.set_user_attr("checkpoint", checkpoint.name)
    return float(result.best.val_error)


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


def max_epochs(space: Space) -> int:
    """The largest epoch count the space can draw (the pruners' budget)."""
    return int(space.largest("epochs"))


def _error(model: list, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((predict(model, x) > 0.5).astype(np.int64) != y))


register(
    Task(
        name="numpy-mlp",
        space=SPACE,
        metric="val_error",
        direction="minimize",
        load_data=load_data,
        objective=objective,
        evaluate=evaluate,
        max_epochs=max_epochs,
        # Small matrices: a second BLAS thread gained 1.13x on a quiet 2-core machine and lost 4x on a busy
        # one, while a second worker gains 1.8x (bench/parallel.py). An explicit --threads overrides this.
        max_threads=1,
    )
)
