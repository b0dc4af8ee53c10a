"""The NumPy MLP's search space (lab Part 1: MNIST 4 vs 9 with Linear/ReLU/Sigmoid layers)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from ._space import Choice, FloatRange, IntRange, Param, Space

__all__ = ["BASELINE", "NumpyMLPConfig", "SPACE", "suggest"]

ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")
INITS = ("lab", "he", "xavier")
LOSSES = ("se", "bce")


def _check_classes(value: Any) -> str | None:
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9 for v in value)
        and value[0] != value[1]
    )
    return None if ok else "must be two distinct digits 0-9, e.g. [4, 9]"


def _check_fraction(value: Any) -> str | None:
    ok = isinstance(value, float | int) and not isinstance(value, bool) and 0.05 <= value <= 0.5
    return None if ok else "must be a number in [0.05, 0.5]"


def _check_folds(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 20
    return None if ok else "must be an integer in [1, 20]"


_LAYER_WIDTH = re.compile(r"width_[1-9][0-9]*")


class _NumpyMLPSpace(Space):
    """The space, knowing that the hidden widths are drawn as ``width_1``, ``width_2`` ... under the one
    ``width`` spec (see :func:`suggest`), so that a baseline's widths can be enqueued."""

    def with_overrides(self, overrides: Mapping[str, Any], *, origin: str = "--set") -> Space:
        """See :meth:`Space.with_overrides`."""
        specs = super().with_overrides(overrides, origin=origin).specs
        return _NumpyMLPSpace(self.task, self.params.values(), specs)

    def searched(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """See :meth:`Space.searched`; ``width_N`` is searched when ``width`` is and its value reachable."""
        plain = super().searched
        found = plain({k: v for k, v in params.items() if not _LAYER_WIDTH.fullmatch(k)})
        widths = {k: v for k, v in params.items() if _LAYER_WIDTH.fullmatch(k) and plain({"width": v})}
        return {k: v for k, v in params.items() if k in found or k in widths}


SPACE = _NumpyMLPSpace(
    "numpy-mlp",
    [
        Param("depth", "int", IntRange(0, 3), bounds=(0, 3), doc="hidden layers"),
        Param("width", "int", IntRange(16, 512, log=True), bounds=(1, 8192), doc="units per hidden layer"),
        Param("activation", "choice", Choice(ACTIVATIONS), allowed=ACTIVATIONS, doc="hidden non-linearity"),
        Param("init", "choice", Choice(INITS), allowed=INITS, doc="weight initialisation"),
        Param("loss", "choice", Choice(LOSSES), allowed=LOSSES, doc="squared error or binary cross-entropy"),
        Param("lr", "float", FloatRange(1e-3, 1.0, log=True), bounds=(1e-8, 1e3), doc="learning rate"),
        Param("momentum", "float", FloatRange(0.0, 0.95), bounds=(0.0, 0.999), doc="SGD momentum"),
        Param("batch_size", "int", Choice((16, 32, 64, 128)), bounds=(1, 65536), doc="minibatch size"),
        Param("weight_decay", "float", FloatRange(1e-6, 1e-2, log=True), bounds=(0.0, 1.0), doc="L2 on W"),
        Param("lr_decay", "float", FloatRange(0.9, 1.0), bounds=(0.01, 1.0), doc="lr factor per epoch"),
        Param("epochs", "int", 40, bounds=(1, 10000), doc="training epochs (the pruning budget)"),
        Param("augment_shift", "int", IntRange(0, 2), bounds=(0, 4), doc="random image shift, pixels"),
        Param("dtype", "choice", "float32", allowed=("float32", "float64"), doc="floating-point precision"),
        Param("classes", "setting", [4, 9], check=_check_classes, doc="the two digits told apart"),
        Param(
            "val_fraction",
            "setting",
            0.2,
            check=_check_fraction,
            doc="share of training images for validation (folds=1 only)",
        ),
        Param(
            "folds",
            "setting",
            5,
            check=_check_folds,
            doc="stratified cross-validation folds of all training images; 1: the val_fraction split",
        ),
    ],
)

# A new study's first trial (see Task.baseline): one hidden layer of 100 ReLUs (scikit-learn's default MLP's
# size), cross-entropy and one-pixel shifts; chosen among a handful on dev splits of the training images,
# seconds to train (docs/measurements.md, "numpy-mlp: a known-good first trial").
BASELINE: dict[str, Any] = {
    "depth": 1,
    "width_1": 100,
    "activation": "relu",
    "init": "he",
    "loss": "bce",
    "lr": 0.05,
    "momentum": 0.9,
    "batch_size": 32,
    "weight_decay": 1e-3,
    "lr_decay": 0.95,
    "augment_shift": 1,
}


@dataclass(frozen=True)
class NumpyMLPConfig:
    """One trial's configuration of the NumPy MLP."""

    widths: tuple[int, ...]
    activation: str
    init: str
    loss: str
    lr: float
    momentum: float
    batch_size: int
    weight_decay: float
    lr_decay: float
    epochs: int
    augment_shift: int
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored as the trial's ``config`` attribute)."""
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumpyMLPConfig:
        """Rebuild a config stored by :meth:`to_dict`."""
        return cls(**{**data, "widths": tuple(data["widths"])})


# drawn after depth and widths, in this order
_DRAWN_IN_ORDER = (
    "activation",
    "init",
    "loss",
    "lr",
    "momentum",
    "batch_size",
    "weight_decay",
    "lr_decay",
    "epochs",
    "augment_shift",
    "dtype",
)


def suggest(trial: optuna.Trial, space: Space = SPACE) -> NumpyMLPConfig:
    """Draw one configuration; hidden widths are conditional on the drawn depth."""
    depth = space.suggest(trial, "depth")
    widths = tuple(space.suggest(trial, "width", name=f"width_{i + 1}") for i in range(depth))
    return NumpyMLPConfig(
        widths=widths,
        **space.suggest_all(trial, *_DRAWN_IN_ORDER),
    )
