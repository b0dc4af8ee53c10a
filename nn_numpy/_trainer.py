"""Epoch-by-epoch minibatch training of a lab-style model (a list of layers) for binary classification.

The loop is the lab's: shuffle, forward, ``loss.forward(...).mean()``, ``loss.backward()`` (not divided by
the batch size), backward through the layers, batch-mean parameter gradients, SGD step; then a validation
pass. By default the batch-mean gradients come from ``Linear.mean_grads()`` (one matmul) instead of the
lab's per-sample ``grads()`` averaged with ``.mean(axis=0)``; both give the same numbers up to rounding.

Nothing is cast: model and data should share one dtype (float32 or float64), with labels ``y`` of shape
(N, 1) holding 0.0 or 1.0 in that dtype. Mixed dtypes still work, but compute in the wider one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ._optim import SGD

_EVAL_CHUNK = 4096  # validation samples per forward pass, bounds memory on large sets
_STOP_EVERY = 32  # minibatches between two calls of a step's ``stop``


class _Loss(Protocol):
    def forward(self, y: np.ndarray, y_gt: np.ndarray) -> np.ndarray: ...

    def backward(self) -> np.ndarray: ...


@dataclass(frozen=True)
class EpochStats:
    """Metrics of one epoch.

    Attributes:
        epoch: 1-based epoch number (how many epochs have been trained).
        train_loss: Mean over the epoch's minibatches of the minibatch mean loss (the lab's report).
        val_loss: Mean loss over the validation set after the epoch.
        val_error: Fraction of misclassified validation outputs (prediction > 0.5 vs label > 0.5).
        lr: Learning rate used during the epoch.
        seconds: Wall-clock time of the epoch, validation included.
        val_brier: Mean squared difference of the validation outputs and labels, whatever the loss (a
            continuous figure that configurations trained with different losses share).
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_error: float
    lr: float
    seconds: float
    val_brier: float = math.nan


class Diverged(Exception):
    """Raised by :func:`train` when the training or validation loss is not finite.

    Attributes:
        epoch: 1-based epoch in which it happened.
        loss: The offending loss value (nan or inf).
        what: ``"train loss"`` or ``"val loss"``.
    """

    def __init__(self, epoch: int, loss: float, what: str = "train loss") -> None:
        super().__init__(epoch, loss, what)  # keeps the exception picklable across worker processes
        self.epoch = epoch
        self.loss = loss
        self.what = what

    def __str__(self) -> str:
        return f"training diverged at epoch {self.epoch}: {self.what} {self.loss:g}"


class Stopped(Exception):
    """Raised by :meth:`Trainer.step` when its ``stop`` says so: the epoch under way is abandoned.

    Attributes:
        epoch: 1-based epoch that was under way (not in the history).
    """

    def __init__(self, epoch: int) -> None:
        super().__init__(epoch)
        self.epoch = epoch

    def __str__(self) -> str:
        return f"stopped in epoch {self.epoch}"


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        history: One :class:`EpochStats` per epoch.
        best_epoch: 1-based epoch with the lowest val_error, ties broken by the lower val_loss (then the
            earlier epoch); ``history[best_epoch - 1]`` is its stats.
        best_params: Copies of every layer's ``params()`` after that epoch, for :func:`restore`.
    """

    history: list[EpochStats]
    best_epoch: int
    best_params: list[dict[str, np.ndarray]]

    @property
    def best(self) -> EpochStats:
        """Stats of the best epoch."""
        return self.history[self.best_epoch - 1]


def train(
    model: list,
    loss: _Loss,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    optimizer: SGD,
    rng: np.random.Generator,
    on_epoch: Callable[[EpochStats], None] | None = None,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    per_sample_grads: bool = False,
) -> TrainResult:
    """Trains ``model`` in place with minibatch SGD and tracks the best epoch.

    Args:
        model: List of layers, e.g. from :func:`build_mlp`.
        loss: A loss with ``forward(y, y_gt)`` and ``backward()``, e.g. ``SE()`` or ``BCE()``.
        x_train: Training inputs, shape (N, in).
        y_train: Training labels in {0, 1}, shape (N, out).
        x_val: Validation inputs, shape (M, in).
        y_val: Validation labels in {0, 1}, shape (M, out).
        epochs: Number of epochs, >= 1.
        batch_size: Minibatch size, >= 1 (the last minibatch of an epoch may be smaller).
        optimizer: Updates the parameters; its ``end_epoch()`` is called after every epoch.
        rng: Shuffles the training set every epoch (and is passed to ``augment``).
        on_epoch: Called with each epoch's stats, after ``optimizer.end_epoch()``; whatever it raises (e.g.
            a pruning exception) propagates unchanged.
        augment: Maps a minibatch of inputs (a copy) and ``rng`` to augmented inputs of the same shape.
        per_sample_grads: Use the lab's per-sample ``grads()`` and ``.mean(axis=0)`` instead of
            ``mean_grads()``; same result, far slower and batch times more memory (for tests and benchmarks).

    Returns:
        The per-epoch history, the best epoch and copies of its parameters. The model keeps the parameters
        of the last epoch; call ``restore(model, result.best_params)`` for the best ones.

    Raises:
        Diverged: As soon as a minibatch loss or the validation loss is not finite.
        ValueError: If the data shapes or ``epochs``/``batch_size`` are invalid.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, but got {epochs=}.")
    trainer = Trainer(
        model,
        loss,
        x_train,
        y_train,
        x_val,
        y_val,
        batch_size=batch_size,
        optimizer=optimizer,
        rng=rng,
        augment=augment,
        per_sample_grads=per_sample_grads,
    )
    for _ in range(epochs):
        stats = trainer.step()
        if on_epoch is not None:
            on_epoch(stats)
    return trainer.result()


class Trainer:
    """One model's training, an epoch per :meth:`step` (what :func:`train` loops over), so that several
    models can train side by side, e.g. the folds of a cross-validation reporting their mean each epoch.

    The arguments are :func:`train`'s; the best epoch is tracked the same way.

    Raises:
        ValueError: If the data shapes or ``batch_size`` are invalid.
    """

    def __init__(
        self,
        model: list,
        loss: _Loss,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: np.ndarray,
        y_val: np.ndarray,
        *,
        batch_size: int,
        optimizer: SGD,
        rng: np.random.Generator,
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        per_sample_grads: bool = False,
    ) -> None:
        _check_data(x_train, y_train, "train")
        _check_data(x_val, y_val, "val")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, but got {batch_size=}.")
        self.model, self.loss, self.optimizer, self.rng = model, loss, optimizer, rng
        self._train, self._val = (x_train, y_train), (x_val, y_val)
        self._batch_size, self._augment, self._per_sample = batch_size, augment, per_sample_grads
        self.history: list[EpochStats] = []
        self._best_epoch, self._best_key, self._best_params = 0, (math.inf, math.inf), []

    def step(self, stop: Callable[[], bool] | None = None) -> EpochStats:
        """Train one epoch, validate, track the best epoch and return the epoch's stats.

        Args:
            stop: Asked before the epoch's first minibatch and every 32 after it (e.g. a deadline).

        Raises:
            Diverged: As soon as a minibatch loss or the validation loss is not finite.
            Stopped: When ``stop`` says ``True``. The history and the best epoch stay those of the epochs
                that ended; the model keeps the part of the epoch it trained (:func:`restore` the best).
        """
        epoch = len(self.history) + 1
        start, lr = time.perf_counter(), self.optimizer.lr
        with np.errstate(over="ignore", invalid="ignore"):
            train_loss = _train_one_epoch(
                self.model,
                self.loss,
                *self._train,
                self._batch_size,
                self.optimizer,
                self.rng,
                self._augment,
                self._per_sample,
                epoch,
                stop,
            )
            val_loss, val_error, val_brier = _evaluate(self.model, self.loss, *self._val)
        if not math.isfinite(val_loss):
            raise Diverged(epoch, val_loss, "val loss")
        stats = EpochStats(epoch, train_loss, val_loss, val_error, lr, time.perf_counter() - start, val_brier)
        self.history.append(stats)
        if (val_error, val_loss) < self._best_key:
            self._best_epoch, self._best_key = epoch, (val_error, val_loss)
            self._best_params = self.params()
        self.optimizer.end_epoch()
        return stats

    def params(self) -> list[dict[str, np.ndarray]]:
        """Copies of the model's current parameters, for :func:`restore`."""
        return [{name: p.copy() for name, p in layer.params().items()} for layer in self.model]

    def result(self) -> TrainResult:
        """The history so far, the best epoch and copies of its parameters.

        Raises:
            ValueError: before the first :meth:`step`.
        """
        if not self.history:
            raise ValueError("no epoch has been trained yet")
        return TrainResult(list(self.history), self._best_epoch, self._best_params)


def restore(model: list, params_list: list[dict[str, np.ndarray]]) -> None:
    """Copies saved parameters (e.g. ``TrainResult.best_params``) into the model's parameter arrays.

    The copy is in place, so the layers' parameter dicts and arrays stay the same objects.

    Args:
        model: List of layers.
        params_list: One dict per layer, with the same names and shapes as ``layer.params()``.

    Raises:
        ValueError: If the list length, a name or a shape does not match; nothing is copied then.
    """
    if len(params_list) != len(model):
        raise ValueError(f"expected one params dict per layer ({len(model)}), but got {len(params_list)}.")
    for i, (layer, saved) in enumerate(zip(model, params_list, strict=True)):
        params = layer.params()
        if params.keys() != saved.keys():
            raise ValueError(f"layer {i} has params {sorted(params)}, but got {sorted(saved)}.")
        for name, value in saved.items():
            if np.shape(value) != params[name].shape:
                raise ValueError(f"layer {i} {name!r} has shape {params[name].shape}, not {np.shape(value)}.")
    for layer, saved in zip(model, params_list, strict=True):
        for name, value in saved.items():
            np.copyto(layer.params()[name], value)


def _train_one_epoch(
    model: list,
    loss: _Loss,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    optimizer: SGD,
    rng: np.random.Generator,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None,
    per_sample_grads: bool,
    epoch: int,
    stop: Callable[[], bool] | None = None,
) -> float:
    """Runs one shuffled pass over the data and returns the mean of the minibatch mean losses."""
    order = rng.permutation(len(x))
    batch_losses = []
    for start in range(0, len(x), batch_size):
        if stop is not None and start // batch_size % _STOP_EVERY == 0 and stop():
            raise Stopped(epoch)
        idx = order[start : start + batch_size]
        activation = x[idx]
        if augment is not None:
            activation = augment(activation, rng)
        for layer in model:
            activation = layer.forward(activation)
        batch_loss = float(loss.forward(activation, y[idx]).mean())
        if not math.isfinite(batch_loss):
            raise Diverged(epoch, batch_loss, "train loss")
        batch_losses.append(batch_loss)

        grad = loss.backward()
        for layer in reversed(model):
            grad = layer.backward(grad)
        optimizer.step(model, [_batch_mean_grads(layer, per_sample_grads) for layer in model])
    return float(np.mean(batch_losses))


def _batch_mean_grads(layer, per_sample: bool) -> dict[str, np.ndarray]:
    if not per_sample and hasattr(layer, "mean_grads"):
        return layer.mean_grads()
    return {name: g.mean(axis=0) for name, g in layer.grads().items()}


def _evaluate(model: list, loss: _Loss, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Returns (mean loss, error rate, Brier score) over a data set, in chunks of ``_EVAL_CHUNK`` samples."""
    loss_sum, n_wrong, squares = 0.0, 0, 0.0
    for start in range(0, len(x), _EVAL_CHUNK):
        activation = x[start : start + _EVAL_CHUNK]
        for layer in model:
            activation = layer.forward(activation)
        target = y[start : start + _EVAL_CHUNK]
        loss_sum += float(loss.forward(activation, target).sum())
        n_wrong += int(np.count_nonzero((activation > 0.5) != (target > 0.5)))
        squares += float(np.sum(np.square(activation - target, dtype=np.float64)))
    return loss_sum / y.size, n_wrong / y.size, squares / y.size


def _check_data(x: np.ndarray, y: np.ndarray, name: str) -> None:
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{name} data must be non-empty x of shape (N, in) and y of shape (N, out), "
            f"but got x {x.shape} and y {y.shape}."
        )
