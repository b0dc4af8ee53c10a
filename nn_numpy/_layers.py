"""Layers of a fully-connected network in pure NumPy, with the RPZ lab's interface.

Every layer has ``forward(x)``, ``backward(dL_wrt_output)`` (returns the gradient w.r.t. its input),
``params()`` and ``grads()``. Each ``backward`` sits right below its ``forward``. The activations share
their empty ``params()``/``grads()`` and the description of the interface through ``_Activation``.

This module imports only NumPy: its source is copied verbatim into the exported ``numpy_nn.py``.
"""

from __future__ import annotations

import numpy as np

_INITS = ("lab", "he", "xavier")


def initial_weights(
    init: str,
    input_dim: int,
    output_dim: int,
    rng: np.random.Generator | None = None,
    dtype: type | np.dtype = np.float64,
) -> np.ndarray:
    """Draws an initial weight matrix.

    Weights are drawn in float64 and then cast, so one seed gives the same weights (up to rounding) for
    every dtype.

    Args:
        init: ``"lab"`` (``randn(in, out) / 100``, the lab's choice), ``"he"`` (``randn * sqrt(2 / in)``,
            for ReLU networks) or ``"xavier"`` (uniform Glorot: ``U(-a, a)``, ``a = sqrt(6 / (in + out))``).
        input_dim: Number of inputs ``in``.
        output_dim: Number of outputs ``out``.
        rng: Source of randomness; a fresh unseeded generator when ``None``.
        dtype: dtype of the returned array.

    Returns:
        Array of shape (in, out).

    Raises:
        ValueError: If ``init`` is not one of the names above.
    """
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, but got {init!r}.")
    rng = np.random.default_rng() if rng is None else rng
    shape = (input_dim, output_dim)
    if init == "lab":
        weights = rng.standard_normal(shape) / 100
    elif init == "he":
        weights = rng.standard_normal(shape) * np.sqrt(2.0 / input_dim)
    else:
        limit = np.sqrt(6.0 / (input_dim + output_dim))
        weights = rng.uniform(-limit, limit, size=shape)
    return weights.astype(dtype, copy=False)


def _param_property(name: str, doc: str) -> property:
    """A property that reads ``self._params[name]`` and writes it with ``np.asarray(value)``."""

    def get(self) -> np.ndarray:
        return self._params[name]

    def set_(self, value: np.ndarray) -> None:
        self._params[name] = np.asarray(value)

    return property(get, set_, doc=doc)


class Linear:
    """Fully-connected layer ``f(x) = x @ W + b`` (PyTorch convention).

    ``params()`` returns the same dict on every call, so in-place updates (``param -= lr * grad``) and
    replacing an entry (``layer.params()["W"] = saved_W``) both change the layer. The ``W`` and ``b``
    properties read and write that dict.

    Args:
        input_dim: Number of inputs ``in``.
        output_dim: Number of outputs ``out``.
        init: Weight initialisation, see :func:`initial_weights`. Biases start at zero.
        rng: Source of randomness for the weights.
        dtype: dtype of ``W`` and ``b``; inputs of the same dtype keep it end to end.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        init: str = "lab",
        rng: np.random.Generator | None = None,
        dtype: type | np.dtype = np.float64,
    ) -> None:
        self._params = {
            "W": initial_weights(init, input_dim, output_dim, rng, dtype),
            "b": np.zeros((1, output_dim), dtype=dtype),
        }
        self._x: np.ndarray | None = None  # input of the last forward
        self._saved: tuple[np.ndarray, np.ndarray] | None = None  # (x, dL_wrt_output) of the last backward

    W = _param_property("W", "Weights, shape (in, out).")
    b = _param_property("b", "Biases, shape (1, out).")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Computes ``x @ W + b``.

        Args:
            x: Input, shape (batch, in).

        Returns:
            Output, shape (batch, out).
        """
        self._x = x
        return x @ self.W + self.b

    def backward(self, dL_wrt_output: np.ndarray) -> np.ndarray:
        """Back-propagates through the layer and keeps what the parameter gradients need.

        Args:
            dL_wrt_output: Gradient of the loss w.r.t. the output, shape (batch, out).

        Returns:
            Gradient of the loss w.r.t. the input, shape (batch, in).
        """
        if self._x is None:
            raise RuntimeError("Linear.backward() called before forward().")
        self._saved = (self._x, dL_wrt_output)
        return dL_wrt_output @ self.W.T

    def _saved_or_raise(self) -> tuple[np.ndarray, np.ndarray]:
        if self._saved is None:
            raise RuntimeError("Linear has no gradients yet: call backward() first.")
        return self._saved

    @property
    def dL_wrt_W(self) -> np.ndarray:
        """Per-sample gradients w.r.t. ``W`` from the last backward, shape (batch, in, out).

        Computed on access; it is batch times the size of ``W``, prefer :meth:`mean_grads` for training.
        """
        x, g = self._saved_or_raise()
        return x[:, :, None] * g[:, None, :]

    @property
    def dL_wrt_b(self) -> np.ndarray:
        """Per-sample gradients w.r.t. ``b`` from the last backward, shape (batch, 1, out)."""
        _, g = self._saved_or_raise()
        return g[:, None, :]

    def params(self) -> dict[str, np.ndarray]:
        """Returns the parameter dict ``{"W": (in, out), "b": (1, out)}`` (always the same object)."""
        return self._params

    def grads(self) -> dict[str, np.ndarray]:
        """Returns the per-sample gradients ``{"W": (batch, in, out), "b": (batch, 1, out)}``.

        The lab's training loop averages them with ``.mean(axis=0)``.
        """
        return {"W": self.dL_wrt_W, "b": self.dL_wrt_b}

    def mean_grads(self) -> dict[str, np.ndarray]:
        """Returns the batch-mean gradients ``{"W": (in, out), "b": (1, out)}``.

        Equal to ``{k: v.mean(axis=0) for k, v in grads().items()}`` but one matmul, with no
        (batch, in, out) tensor.
        """
        x, g = self._saved_or_raise()
        dL_wrt_W = x.T @ g
        dL_wrt_W /= x.shape[0]  # in place: no second (in, out) array
        return {"W": dL_wrt_W, "b": g.mean(axis=0, keepdims=True)}

    def __repr__(self) -> str:
        return f"Linear({self.W.shape[0]}, {self.W.shape[1]})"


class _Activation:
    """Base of the parameter-free layers that act elementwise on any shape (ReLU, LeakyReLU, Sigmoid, Tanh).

    A subclass's ``forward(x)`` returns ``f(x)``, same shape as ``x``, and keeps what the derivative needs.
    Its ``backward(dL_wrt_output)``, right below, takes the gradient of the loss w.r.t. the output (same shape
    as the input) and returns the gradient w.r.t. the input, ``dL_wrt_output * f'(x)``, same shape.
    """

    def params(self) -> dict[str, np.ndarray]:
        """No parameters: returns ``{}``."""
        return {}

    def grads(self) -> dict[str, np.ndarray]:
        """No parameters: returns ``{}``."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU(_Activation):
    """Rectified linear unit ``f(x) = max(0, x)``, elementwise on any shape. Gradient 0 at x = 0."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Returns ``max(0, x)``, same shape as ``x``."""
        self._positive = x > 0
        return np.maximum(x, 0)

    def backward(self, dL_wrt_output: np.ndarray) -> np.ndarray:
        """Returns the gradient w.r.t. the input: ``dL_wrt_output`` where ``x > 0``, 0 elsewhere."""
        return dL_wrt_output * self._positive


class LeakyReLU(_Activation):
    """Leaky ReLU ``f(x) = x if x > 0 else negative_slope * x``, elementwise on any shape.

    Args:
        negative_slope: Slope for negative inputs.
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = negative_slope

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Returns ``x`` where positive, ``negative_slope * x`` elsewhere, same shape as ``x``."""
        self._positive = x > 0
        return np.where(self._positive, x, self.negative_slope * x)

    def backward(self, dL_wrt_output: np.ndarray) -> np.ndarray:
        """Returns the input gradient: ``dL_wrt_output`` if ``x > 0``, else ``negative_slope`` times it."""
        return np.where(self._positive, dL_wrt_output, self.negative_slope * dL_wrt_output)

    def __repr__(self) -> str:
        return f"LeakyReLU({self.negative_slope})"


class Sigmoid(_Activation):
    """Logistic sigmoid ``f(x) = 1 / (1 + exp(-x))``, elementwise on any shape.

    Computed from ``e = exp(-|x|)`` as ``1 / (1 + e)`` for x >= 0 and ``e / (1 + e)`` otherwise: no overflow
    for any ``|x|`` (``e`` may underflow to 0, which NumPy ignores by default) and full relative precision
    near 0.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Returns ``y = 1 / (1 + exp(-x))`` in [0, 1], same shape as ``x``."""
        e = np.exp(-np.abs(x))
        self._y = np.where(x >= 0, 1.0, e) / (1.0 + e)
        return self._y

    def backward(self, dL_wrt_output: np.ndarray) -> np.ndarray:
        """Returns the gradient w.r.t. the input: ``dL_wrt_output * y * (1 - y)``."""
        return dL_wrt_output * self._y * (1.0 - self._y)


class Tanh(_Activation):
    """Hyperbolic tangent, elementwise on any shape."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Returns ``y = tanh(x)`` in [-1, 1], same shape as ``x``."""
        self._y = np.tanh(x)
        return self._y

    def backward(self, dL_wrt_output: np.ndarray) -> np.ndarray:
        """Returns the gradient w.r.t. the input: ``dL_wrt_output * (1 - y * y)``."""
        return dL_wrt_output * (1.0 - self._y * self._y)
