"""Fully-connected networks in pure NumPy, with the interface of the RPZ lab's ``numpy_nn.py``.

Layers (``forward``/``backward``/``params``/``grads``), losses, an SGD optimiser, a training loop with
best-epoch tracking, ``.npz`` model files, and :func:`standalone_source`, which exports the layers, losses and
model I/O as one self-contained ``numpy_nn.py``. Imports only NumPy and the standard library (no torch).

Example:
    >>> import numpy as np
    >>> import nn_numpy as nn
    >>> model = nn.build_mlp(784, [64], "relu", rng=np.random.default_rng(0))
    >>> result = nn.train(model, nn.SE(), x_trn, y_trn, x_val, y_val, epochs=10, batch_size=32,
    ...                   optimizer=nn.SGD(lr=0.1), rng=np.random.default_rng(0))  # doctest: +SKIP
    >>> nn.restore(model, result.best_params)  # doctest: +SKIP
"""

from ._io import build_mlp
from ._io import load_model
from ._io import predict
from ._io import save_model
from ._layers import LeakyReLU
from ._layers import Linear
from ._layers import ReLU
from ._layers import Sigmoid
from ._layers import Tanh
from ._layers import initial_weights
from ._losses import BCE
from ._losses import SE
from ._optim import SGD
from ._stack import stack_models
from ._standalone import sorted_imports
from ._standalone import standalone_source
from ._trainer import Diverged
from ._trainer import EpochStats
from ._trainer import Stopped
from ._trainer import Trainer
from ._trainer import TrainResult
from ._trainer import restore
from ._trainer import train

__all__ = [
    "BCE",
    "Diverged",
    "EpochStats",
    "LeakyReLU",
    "Linear",
    "ReLU",
    "SE",
    "SGD",
    "Sigmoid",
    "Stopped",
    "Tanh",
    "TrainResult",
    "Trainer",
    "build_mlp",
    "initial_weights",
    "load_model",
    "predict",
    "restore",
    "save_model",
    "stack_models",
    "sorted_imports",
    "standalone_source",
    "train",
]
