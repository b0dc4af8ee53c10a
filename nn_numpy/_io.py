"""Building, running, saving and loading lab-style models (a plain list of layers).

Besides the layers this module uses only ``json``, ``os`` and NumPy, so it can be exported into a
standalone ``numpy_nn.py`` (the ``from ._layers`` import is dropped there).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from ._layers import LeakyReLU, Linear, ReLU, Sigmoid, Tanh

_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "leaky_relu": LeakyReLU}
_KINDS = {"ReLU": ReLU, "Tanh": Tanh, "Sigmoid": Sigmoid, "LeakyReLU": LeakyReLU}
_ARCHITECTURE_KEY = "architecture"


def build_mlp(
    input_dim: int,
    widths: Sequence[int],
    activation: str = "relu",
    *,
    init: str = "lab",
    output_dim: int = 1,
    rng: np.random.Generator | None = None,
    dtype: type | np.dtype = np.float64,
) -> list:
    """Builds ``[Linear, act, ..., Linear, act, Linear, Sigmoid]``, the lab's model layout.

    Args:
        input_dim: Number of inputs (784 for MNIST).
        widths: Hidden layer widths; empty gives logistic regression ``[Linear, Sigmoid]``.
        activation: Hidden activation, one of ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"leaky_relu"``.
        init: Weight initialisation of every Linear, see :func:`initial_weights`.
        output_dim: Number of sigmoid outputs.
        rng: Source of randomness for all weights (drawn layer by layer).
        dtype: dtype of every parameter.

    Returns:
        The list of layers.

    Raises:
        ValueError: If ``activation`` is unknown or a dimension is not a positive integer.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, but got {activation!r}.")
    dims = [input_dim, *widths, output_dim]
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"layer sizes must be positive integers, but got {dims}.")
    rng = np.random.default_rng() if rng is None else rng
    model: list = []
    for fan_in, fan_out in zip(dims[:-2], dims[1:-1], strict=True):
        model += [Linear(fan_in, fan_out, init=init, rng=rng, dtype=dtype), _ACTIVATIONS[activation]()]
    model += [Linear(dims[-2], dims[-1], init=init, rng=rng, dtype=dtype), Sigmoid()]
    return model


def predict(model: list, x: np.ndarray) -> np.ndarray:
    """Runs the forward pass of every layer.

    Args:
        model: List of layers.
        x: Input, shape (batch, in).

    Returns:
        The last layer's output, e.g. probabilities of shape (batch, 1).
    """
    for layer in model:
        x = layer.forward(x)
    return x


def save_model(path: str | os.PathLike, model: list, **extra_arrays: np.ndarray) -> None:
    """Saves a model to an ``.npz`` file, atomically (a temporary file in the same folder, then rename).

    The file holds ``W0, b0, W1, b1, ...`` (one pair per Linear), ``architecture`` (a JSON string such as
    ``[{"kind": "Linear", "in": 784, "out": 64}, {"kind": "ReLU"}, ...]``) and the extra arrays.
    It is written exactly at ``path``; NumPy does not append ``.npz``.

    Args:
        path: Destination file.
        model: List of layers (Linear, ReLU, LeakyReLU, Tanh, Sigmoid).
        **extra_arrays: More arrays to store, e.g. ``mean=..., std=...`` of the input normalisation.

    Raises:
        ValueError: If a layer kind is unknown or an extra name clashes with the model's entries.
    """
    arrays: dict[str, np.ndarray] = {}
    architecture = []
    n_linear = 0
    for layer in model:
        kind = type(layer).__name__
        if isinstance(layer, Linear):
            arrays[f"W{n_linear}"], arrays[f"b{n_linear}"] = layer.W, layer.b
            n_linear += 1
            architecture.append({"kind": kind, "in": int(layer.W.shape[0]), "out": int(layer.W.shape[1])})
        elif isinstance(layer, LeakyReLU):
            architecture.append({"kind": kind, "negative_slope": float(layer.negative_slope)})
        elif kind in _KINDS:
            architecture.append({"kind": kind})
        else:
            raise ValueError(f"cannot save layer {layer!r}: supported kinds are Linear and {sorted(_KINDS)}.")
    arrays[_ARCHITECTURE_KEY] = np.array(json.dumps(architecture))
    clashes = sorted(set(extra_arrays) & {*arrays, "file", "allow_pickle"})  # the last two: np.savez's own
    if clashes:
        raise ValueError(f"extra array names {clashes} clash with the model's entries {sorted(arrays)}.")
    arrays.update(extra_arrays)

    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp_path = os.path.join(folder, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp_path, "xb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def load_model(path: str | os.PathLike) -> tuple[list, dict[str, np.ndarray]]:
    """Loads a model written by :func:`save_model`.

    Args:
        path: The ``.npz`` file.

    Returns:
        ``(model, extras)``: the list of layers (parameters keep their saved dtype) and a dict of the
        extra arrays.

    Raises:
        ValueError: If the file has no architecture entry, names an unknown layer kind or its parameter
            shapes disagree with the architecture.
    """
    with np.load(os.fspath(path), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if _ARCHITECTURE_KEY not in arrays:
        raise ValueError(f"{os.fspath(path)!r} has no {_ARCHITECTURE_KEY!r} entry: not from save_model.")
    architecture = json.loads(str(arrays.pop(_ARCHITECTURE_KEY)))
    model: list = []
    n_linear = 0
    for spec in architecture:
        kind = spec["kind"]
        if kind == "Linear":
            weights, biases = arrays.pop(f"W{n_linear}"), arrays.pop(f"b{n_linear}")
            if weights.shape != (spec["in"], spec["out"]) or biases.shape != (1, spec["out"]):
                raise ValueError(
                    f"Linear {n_linear} in {os.fspath(path)!r} has W {weights.shape} and b {biases.shape}, "
                    f"but the architecture says in={spec['in']}, out={spec['out']}."
                )
            layer = Linear(spec["in"], spec["out"], dtype=weights.dtype)
            layer.W, layer.b = weights, biases
            n_linear += 1
        elif kind == "LeakyReLU":
            layer = LeakyReLU(spec["negative_slope"])
        elif kind in _KINDS:
            layer = _KINDS[kind]()
        else:
            raise ValueError(
                f"unknown layer kind {kind!r} in {os.fspath(path)!r}: expected Linear or {sorted(_KINDS)}."
            )
        model.append(layer)
    return model, arrays
