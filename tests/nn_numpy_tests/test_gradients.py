"""Analytic gradients against central finite differences (float64), layer by layer and through a network."""

from collections.abc import Callable

import numpy as np
import pytest

from nn_numpy import BCE, SE, LeakyReLU, Linear, ReLU, Sigmoid, Tanh, build_mlp, predict

RTOL, ATOL = 1e-5, 1e-8

# Every layer kind, built fresh for each test.
LAYERS: dict[str, Callable[[], object]] = {
    "Linear": lambda: Linear(4, 3, init="he", rng=np.random.default_rng(1)),
    "ReLU": ReLU,
    "LeakyReLU": lambda: LeakyReLU(0.1),
    "Sigmoid": Sigmoid,
    "Tanh": Tanh,
}
ACTIVATIONS = ["relu", "tanh", "sigmoid", "leaky_relu"]


def numerical_grad(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of ``f()`` w.r.t. every element of ``x``, perturbed in place."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        original = x[idx]
        x[idx] = original + h
        f_plus = f()
        x[idx] = original - h
        f_minus = f()
        x[idx] = original
        grad[idx] = (f_plus - f_minus) / (2 * h)
    return grad


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values with |v| in [0.1, 2]: far from the ReLU kink compared with the step h."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 2.0, size=shape)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_input_gradient_matches_finite_differences(name: str) -> None:
    rng = np.random.default_rng(0)
    layer = LAYERS[name]()
    x = away_from_zero(rng, (5, 4))
    upstream = rng.standard_normal(layer.forward(x).shape)
    analytic = layer.backward(upstream)

    numeric = numerical_grad(lambda: float(np.sum(layer.forward(x) * upstream)), x)
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("param_name", ["W", "b"])
def test_linear_param_gradients_match_finite_differences(param_name: str) -> None:
    rng = np.random.default_rng(0)
    layer = Linear(4, 3, rng=rng)
    layer.b = rng.standard_normal((1, 3))
    x = rng.standard_normal((6, 4))
    upstream = rng.standard_normal((6, 3))
    layer.forward(x)
    layer.backward(upstream)
    per_sample_mean = layer.grads()[param_name].mean(axis=0)
    fast = layer.mean_grads()[param_name]

    # The lab's per-sample gradients average to the gradient of the batch-mean objective.
    def batch_mean_objective() -> float:
        return float(np.sum(layer.forward(x) * upstream)) / len(x)

    numeric = numerical_grad(batch_mean_objective, layer.params()[param_name])
    np.testing.assert_allclose(per_sample_mean, numeric, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(fast, numeric, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("loss_cls", "targets"),
    [(SE, "binary"), (SE, "real"), (BCE, "binary"), (BCE, "soft")],
)
def test_loss_gradient_matches_finite_differences(loss_cls: type, targets: str) -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(0.05, 0.95, size=(7, 1))
    t = {
        "binary": rng.integers(0, 2, size=(7, 1)).astype(np.float64),
        "real": rng.standard_normal((7, 1)),
        "soft": rng.uniform(0, 1, size=(7, 1)),
    }[targets]
    loss = loss_cls()
    loss.forward(y, t)
    analytic = loss.backward()

    numeric = numerical_grad(lambda: float(np.sum(loss.forward(y, t))), y)
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("loss_cls", [SE, BCE])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_network_gradients_match_finite_differences(activation: str, loss_cls: type) -> None:
    """The lab's loop (backward of the un-divided loss, batch-mean of parameter gradients) yields the
    gradient of the batch-mean loss for every parameter of a whole network."""
    rng = np.random.default_rng(0)
    model = build_mlp(5, [4, 3], activation, init="he", rng=rng)
    for layer in model:
        if isinstance(layer, Linear):  # zero biases would put samples with all-zero ReLU inputs on the kink
            layer.b = away_from_zero(rng, layer.b.shape)
    x = rng.standard_normal((8, 5))
    y = rng.integers(0, 2, size=(8, 1)).astype(np.float64)
    loss = loss_cls()
    loss.forward(predict(model, x), y)
    grad = loss.backward()
    for layer in reversed(model):
        grad = layer.backward(grad)

    def mean_loss() -> float:
        return float(loss.forward(predict(model, x), y).mean())

    linears = [layer for layer in model if isinstance(layer, Linear)]
    analytic = [layer.mean_grads() for layer in linears]
    for layer, grads in zip(linears, analytic, strict=True):
        for name, param in layer.params().items():
            np.testing.assert_allclose(grads[name], numerical_grad(mean_loss, param), rtol=RTOL, atol=ATOL)
