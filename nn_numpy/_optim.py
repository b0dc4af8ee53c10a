"""Stochastic gradient descent with classic momentum, weight decay and per-epoch learning-rate decay."""

from __future__ import annotations

import math

import numpy as np


class SGD:
    """Minibatch SGD that updates a lab-style model's parameters in place.

    For every parameter ``p`` with batch-mean gradient ``g``::

        v = momentum * v + g + weight_decay * p   # weight decay on weights "W" only, never on biases
        p -= lr * v

    With ``momentum=0`` and ``weight_decay=0`` this is exactly the lab's update ``p -= lr * g``.

    Args:
        lr: Learning rate, > 0.
        momentum: Momentum factor in [0, 1).
        weight_decay: L2 penalty factor (>= 0) applied to weights named ``"W"``.
        lr_decay: Factor in (0, 1] applied to ``lr`` by :meth:`end_epoch`.

    Raises:
        ValueError: If an argument is out of its range.

    Example:
        >>> optimizer = SGD(lr=0.1, momentum=0.9, lr_decay=0.95)
        >>> optimizer.step(model, grads_per_layer)  # after each forward/backward  # doctest: +SKIP
        >>> optimizer.end_epoch()  # after each epoch
    """

    def __init__(
        self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, lr_decay: float = 1.0
    ) -> None:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, but got {lr=}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), but got {momentum=}.")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, but got {weight_decay=}.")
        if not 0 < lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], but got {lr_decay=}.")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.lr_decay = float(lr_decay)
        self._velocity: list[dict[str, np.ndarray]] | None = None

    def step(self, model: list, grads_per_layer: list[dict[str, np.ndarray]]) -> None:
        """Updates every parameter of ``model`` in place.

        Args:
            model: List of layers; ``layer.params()`` must return the layer's own parameter dict.
            grads_per_layer: One dict per layer with the batch-mean gradient of each parameter, same shapes as
                the parameters (``{}`` for layers without parameters).

        Raises:
            ValueError: If ``grads_per_layer`` does not have one entry per layer.
        """
        if len(grads_per_layer) != len(model):
            raise ValueError(
                f"expected one gradient dict per layer ({len(model)}), but got {len(grads_per_layer)}."
            )
        if self.momentum and self._velocity is None:
            self._velocity = [{name: np.zeros_like(p) for name, p in lay.params().items()} for lay in model]
        for i, (layer, grads) in enumerate(zip(model, grads_per_layer, strict=True)):
            for name, param in layer.params().items():
                decay = self.weight_decay if name == "W" else 0.0
                if self._velocity is None:
                    update = grads[name] + decay * param if decay else grads[name]
                else:
                    update = self._velocity[i][name]
                    update *= self.momentum
                    update += grads[name]
                    if decay:
                        update += decay * param
                param -= self.lr * update

    def end_epoch(self) -> None:
        """Multiplies the learning rate by ``lr_decay``; call once after every epoch."""
        self.lr *= self.lr_decay
