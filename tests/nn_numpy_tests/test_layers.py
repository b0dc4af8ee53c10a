"""Layers and losses against the RPZ lab's own example values, and the lab's parameter idioms."""

import copy
import warnings

import numpy as np
import numpy.testing as testing
import pytest

from nn_numpy import BCE, SE, LeakyReLU, Linear, ReLU, Sigmoid, Tanh, initial_weights

# The lab's inputs and expected values, copied from rpz-cnn-lab.txt (Part 1).
LAB_W = np.array([[1.0, 0.6], [0.2, -0.2], [-0.6, -1.0]])
LAB_B = np.array([[-0.5, 0.5]])
LAB_X = np.array([[-2.0, -1.2, -0.4], [0.4, 1.2, 2.0]])
LAB_DL_WRT_OUTPUT = np.array([[1.0, 1.33333333], [1.66666667, 2.0]])
LAB_ACT_DL_WRT_OUTPUT = np.array([[-3.0, 1.2, -0.5], [-0.4, 2.2, 3.0]])


def _lab_linear() -> Linear:
    layer = Linear(3, 2)
    layer.W = LAB_W.copy()
    layer.b = LAB_B.copy()
    return layer


def test_linear_lab_forward() -> None:
    out = _lab_linear().forward(LAB_X)
    testing.assert_array_almost_equal([[-2.5, -0.06], [-1.06, -1.5]], out, decimal=6)


def test_linear_lab_backward() -> None:
    layer = _lab_linear()
    layer.forward(LAB_X)
    dL_wrt_x = layer.backward(LAB_DL_WRT_OUTPUT)
    testing.assert_array_almost_equal(
        [[1.8, -0.06666667, -1.93333333], [2.86666667, -0.06666667, -3.0]], dL_wrt_x, decimal=6
    )
    testing.assert_array_almost_equal(
        [
            [[-2.0, -2.66666667], [-1.2, -1.6], [-0.4, -0.53333333]],
            [[0.66666667, 0.8], [2.0, 2.4], [3.33333333, 4.0]],
        ],
        layer.dL_wrt_W,
        decimal=6,
    )
    testing.assert_array_almost_equal([[[1.0, 1.33333333]], [[1.66666667, 2.0]]], layer.dL_wrt_b, decimal=6)


def test_relu_lab_values() -> None:
    layer = ReLU()
    testing.assert_array_almost_equal([[0, 0, 0], [0.4, 1.2, 2.0]], layer.forward(LAB_X), decimal=6)
    testing.assert_array_almost_equal(
        [[0.0, 0.0, 0.0], [-0.4, 2.2, 3.0]], layer.backward(LAB_ACT_DL_WRT_OUTPUT), decimal=6
    )


def test_sigmoid_lab_values() -> None:
    layer = Sigmoid()
    testing.assert_array_almost_equal(
        [[0.119203, 0.231475, 0.401312], [0.598688, 0.768525, 0.880797]], layer.forward(LAB_X), decimal=6
    )
    testing.assert_array_almost_equal(
        [[-0.314981, 0.213473, -0.12013], [-0.096104, 0.391368, 0.314981]],
        layer.backward(LAB_ACT_DL_WRT_OUTPUT),
        decimal=6,
    )


def test_se_lab_values() -> None:
    layer = SE()
    y = np.linspace(-2, 2, 1001)
    testing.assert_array_almost_equal(y**2, layer.forward(y, 0 * y))
    y = np.linspace(-5, 5, 9)
    layer.forward(y, 0.5 * y)
    testing.assert_array_almost_equal(
        [-5.0, -3.75, -2.5, -1.25, 0.0, 1.25, 2.5, 3.75, 5.0], layer.backward(), decimal=6
    )


@pytest.mark.parametrize("layer", [ReLU(), LeakyReLU(0.1), Sigmoid(), Tanh()], ids=repr)
def test_activation_any_shape(layer) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    assert layer.forward(x).shape == x.shape
    assert layer.backward(np.ones_like(x)).shape == x.shape
    assert layer.params() == {} and layer.grads() == {}


def test_linear_params_same_dict_and_properties() -> None:
    layer = Linear(3, 2, rng=np.random.default_rng(0))
    params = layer.params()
    assert layer.params() is params
    assert params["W"] is layer.W and params["b"] is layer.b
    assert layer.W.shape == (3, 2) and layer.b.shape == (1, 2)
    np.testing.assert_array_equal(layer.b, 0)
    layer.W = LAB_W
    assert params["W"] is layer.W


def test_linear_lab_update_loop_changes_layer() -> None:
    """The lab's ``param_value -= lr * layer.grads()[name].mean(axis=0)`` updates the layer."""
    layer = _lab_linear()
    layer.forward(LAB_X)
    layer.backward(LAB_DL_WRT_OUTPUT)
    expected_W = LAB_W - 0.1 * (LAB_X.T @ LAB_DL_WRT_OUTPUT) / 2
    expected_b = LAB_B - 0.1 * LAB_DL_WRT_OUTPUT.mean(axis=0, keepdims=True)
    for param_name, param_value in layer.params().items():
        param_value -= 0.1 * layer.grads()[param_name].mean(axis=0)
    np.testing.assert_allclose(layer.W, expected_W, rtol=1e-12)
    np.testing.assert_allclose(layer.b, expected_b, rtol=1e-12)
    np.testing.assert_allclose(layer.forward(LAB_X), LAB_X @ expected_W + expected_b, rtol=1e-12)


def test_linear_lab_restore_idiom_takes_effect() -> None:
    """The lab's ``model[i].params()[key] = value`` restore changes what forward computes."""
    model = [_lab_linear(), Sigmoid()]
    best = [copy.deepcopy(layer.params()) for layer in model]
    model[0].params()["W"] -= 1.0
    model[0].params()["b"] += 1.0
    for layer_id in range(len(best)):
        for key, value in best[layer_id].items():
            model[layer_id].params()[key] = value
    np.testing.assert_array_equal(model[0].W, LAB_W)
    np.testing.assert_array_equal(model[0].b, LAB_B)
    testing.assert_array_almost_equal([[-2.5, -0.06], [-1.06, -1.5]], model[0].forward(LAB_X), decimal=6)


def test_linear_grads_before_backward_raises() -> None:
    with pytest.raises(RuntimeError, match="backward"):
        Linear(3, 2).mean_grads()


def test_linear_grads_use_inputs_seen_by_backward() -> None:
    layer = _lab_linear()
    layer.forward(LAB_X)
    layer.backward(LAB_DL_WRT_OUTPUT)
    layer.forward(np.zeros((5, 3)))  # e.g. a validation pass between backward and the update
    np.testing.assert_allclose(layer.mean_grads()["W"], LAB_X.T @ LAB_DL_WRT_OUTPUT / 2, rtol=1e-12)


@pytest.mark.parametrize("x", [1000.0, -1000.0, 1e30, -1e30])
def test_sigmoid_no_warning_at_extremes(x: float) -> None:
    layer = Sigmoid()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = layer.forward(np.array([[x]], dtype=np.float64))
        g = layer.backward(np.ones_like(y))
    assert y[0, 0] == (1.0 if x > 0 else 0.0)
    assert g[0, 0] == 0.0


def test_sigmoid_precise_near_zero_and_one() -> None:
    x = np.array([-30.0, -5.0, 5.0, 30.0])
    np.testing.assert_allclose(Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-15)


@pytest.mark.parametrize("layer", [ReLU(), LeakyReLU(), Sigmoid(), Tanh(), Linear(4, 3)], ids=repr)
def test_layer_float32_stays_float32(layer) -> None:
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    if isinstance(layer, Linear):
        layer = Linear(4, 3, dtype=np.float32)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == np.float32 and dx.dtype == np.float32
    for name, param in layer.params().items():
        assert param.dtype == np.float32
        assert layer.mean_grads()[name].dtype == np.float32
        assert layer.grads()[name].dtype == np.float32


@pytest.mark.parametrize("loss", [SE(), BCE()], ids=lambda loss: type(loss).__name__)
def test_loss_float32_stays_float32(loss) -> None:
    y = np.array([[0.2], [0.9]], dtype=np.float32)
    t = np.array([[0.0], [1.0]], dtype=np.float32)
    assert loss.forward(y, t).dtype == np.float32
    assert loss.backward().dtype == np.float32


def test_bce_values_and_clipping() -> None:
    loss = BCE()
    y = np.array([[0.8], [0.8], [0.0], [1.0]])
    t = np.array([[1.0], [0.0], [1.0], [1.0]])
    out = loss.forward(y, t)
    np.testing.assert_allclose(out[:2, 0], [-np.log(0.8), -np.log(0.2)], rtol=1e-12)
    np.testing.assert_allclose(out[2, 0], -np.log(np.finfo(np.float64).eps), rtol=1e-12)
    assert out[3, 0] < 1e-15
    grad = loss.backward()
    np.testing.assert_allclose(grad[:2, 0], [-1 / 0.8, 1 / 0.2], rtol=1e-12)
    np.testing.assert_array_equal(grad[2:, 0], [0.0, 0.0])  # clipped: zero gradient, as documented


@pytest.mark.parametrize("init", ["lab", "he", "xavier"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_initial_weights_scale_and_dtype(init: str, dtype: type) -> None:
    weights = initial_weights(init, 400, 100, np.random.default_rng(0), dtype)
    assert weights.shape == (400, 100) and weights.dtype == dtype
    expected_std = {"lab": 0.01, "he": np.sqrt(2 / 400), "xavier": np.sqrt(2 / 500)}[init]
    assert abs(weights.std() / expected_std - 1) < 0.02
    if init == "xavier":
        assert np.abs(weights).max() <= np.sqrt(6 / 500)


def test_initial_weights_same_seed_same_weights() -> None:
    a = initial_weights("he", 5, 3, np.random.default_rng(7))
    b = initial_weights("he", 5, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_initial_weights_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="'kaiming'") as error:
        initial_weights("kaiming", 3, 2)
    assert all(name in str(error.value) for name in ("lab", "he", "xavier"))
