"""Elementwise losses with the RPZ lab's interface: ``forward(y, y_gt)`` and ``backward()``.

``forward`` returns the loss of every element (the caller takes ``.mean()``); ``backward`` takes no
argument and returns the derivative of each element's loss w.r.t. ``y``, not divided by the batch size,
as in the lab (its training loop averages the per-sample parameter gradients instead).

This module imports only NumPy: its source is copied verbatim into the exported ``numpy_nn.py``.
"""

from __future__ import annotations

import numpy as np


class SE:
    """Squared error ``L(y, y_gt) = (y - y_gt) ** 2``, elementwise."""

    def forward(self, y: np.ndarray, y_gt: np.ndarray) -> np.ndarray:
        """Computes the loss of every element.

        Args:
            y: Network output, e.g. shape (batch, 1).
            y_gt: Targets, same shape as ``y``.

        Returns:
            ``(y - y_gt) ** 2``, same shape as ``y``.
        """
        self._diff = y - y_gt
        return self._diff**2

    def backward(self) -> np.ndarray:
        """Returns ``dL/dy = 2 (y - y_gt)`` for the last forward, same shape as ``y``."""
        return 2 * self._diff


class BCE:
    """Binary cross-entropy ``-(t log y + (1 - t) log(1 - y))`` for probabilities ``y`` (a Sigmoid output).

    ``y`` is clipped to ``[eps, 1 - eps]`` with ``eps`` the machine epsilon of its dtype (2.2e-16 for
    float64, 1.2e-7 for float32), so the loss stays finite (at most about 36.0 and 15.9 per element).
    ``backward`` is the exact derivative of that clipped loss: ``(y - t) / (y (1 - y))`` inside the range and
    **zero where y was clipped**, i.e. a sigmoid saturated at exactly 0 or 1 gets no gradient from this loss.
    """

    def forward(self, y: np.ndarray, y_gt: np.ndarray) -> np.ndarray:
        """Computes the loss of every element.

        Args:
            y: Predicted probabilities, e.g. shape (batch, 1).
            y_gt: Targets in [0, 1] (usually 0 or 1), same shape as ``y``.

        Returns:
            The elementwise loss, same shape as ``y``.
        """
        dtype = y.dtype if np.issubdtype(y.dtype, np.floating) else np.dtype(np.float64)
        eps = np.finfo(dtype).eps
        self._inside = (y >= eps) & (y <= 1 - eps)
        self._y = np.clip(y, eps, 1 - eps)
        self._y_gt = y_gt
        return -(y_gt * np.log(self._y) + (1 - y_gt) * np.log1p(-self._y))

    def backward(self) -> np.ndarray:
        """Returns ``dL/dy`` for the last forward, same shape as ``y`` (zero where ``y`` was clipped)."""
        y = self._y
        return np.where(self._inside, (y - self._y_gt) / (y * (1 - y)), 0.0)
