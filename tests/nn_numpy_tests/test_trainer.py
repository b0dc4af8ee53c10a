"""Training loop, optimiser, best-epoch bookkeeping and model files."""

import os
import pickle

import numpy as np
import pytest

from nn_numpy import (
    BCE,
    SE,
    SGD,
    Diverged,
    EpochStats,
    LeakyReLU,
    Linear,
    Sigmoid,
    Tanh,
    build_mlp,
    load_model,
    predict,
    restore,
    save_model,
    train,
)


def separable_data(n: int, seed: int, dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Linearly separable 10-d points with a margin; labels (N, 1) in {0, 1}."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10))
    score = x @ np.linspace(-1, 1, 10)
    keep = np.abs(score) > 0.3
    return x[keep].astype(dtype), (score[keep] > 0).astype(dtype)[:, None]


X_TRN, Y_TRN = separable_data(400, seed=0)
X_VAL, Y_VAL = separable_data(400, seed=1)


def error_rate(model: list, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((predict(model, x) > 0.5) != (y > 0.5)))


def run(model: list, **kwargs) -> object:
    options = {
        "epochs": 10,
        "batch_size": 16,
        "optimizer": SGD(0.5, momentum=0.9),
        "rng": np.random.default_rng(0),
    }
    options.update(kwargs)
    return train(model, SE(), X_TRN, Y_TRN, X_VAL, Y_VAL, **options)


@pytest.mark.parametrize("loss", [SE(), BCE()], ids=lambda loss: type(loss).__name__)
def test_train_learns_separable_problem(loss) -> None:
    rng = np.random.default_rng(0)
    model = build_mlp(10, [16], "relu", init="he", rng=rng)
    assert error_rate(model, X_VAL, Y_VAL) > 0.2  # untrained: about chance
    result = train(
        model,
        loss,
        X_TRN,
        Y_TRN,
        X_VAL,
        Y_VAL,
        epochs=20,
        batch_size=16,
        optimizer=SGD(0.1, momentum=0.9),
        rng=rng,
    )
    assert len(result.history) == 20
    assert result.best.val_error <= 0.01
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert error_rate(model, X_VAL, Y_VAL) == result.history[-1].val_error


def test_train_lab_setup_learns() -> None:
    """The lab's defaults: init randn/100, [Linear, ReLU, Linear, Sigmoid], SE, plain SGD."""
    rng = np.random.default_rng(0)
    model = build_mlp(10, [5], "relu", rng=rng)
    result = train(
        model, SE(), X_TRN, Y_TRN, X_VAL, Y_VAL, epochs=10, batch_size=16, optimizer=SGD(0.5), rng=rng
    )
    assert result.history[0].val_error > 0.2
    assert result.best.val_error <= 0.01


def test_train_raises_diverged_on_huge_learning_rate() -> None:
    model = build_mlp(10, [16], "relu", init="he", rng=np.random.default_rng(0))
    with pytest.raises(Diverged, match=r"training diverged at epoch 1: train loss nan") as error:
        run(model, optimizer=SGD(1e200))
    assert error.value.epoch == 1 and np.isnan(error.value.loss)


def test_train_raises_diverged_on_non_finite_val_loss() -> None:
    x_val = X_VAL.copy()
    x_val[3, 0] = np.nan
    model = build_mlp(10, [4], "relu", rng=np.random.default_rng(0))
    with pytest.raises(Diverged, match="val loss nan"):
        train(
            model,
            SE(),
            X_TRN,
            Y_TRN,
            x_val,
            Y_VAL,
            epochs=2,
            batch_size=16,
            optimizer=SGD(0.1),
            rng=np.random.default_rng(0),
        )


def test_diverged_is_picklable() -> None:
    error = pickle.loads(pickle.dumps(Diverged(3, float("inf"), "val loss")))
    assert (error.epoch, error.loss, error.what) == (3, float("inf"), "val loss")
    assert str(error) == "training diverged at epoch 3: val loss inf"


def test_train_on_epoch_gets_one_stats_per_epoch() -> None:
    seen: list[EpochStats] = []
    model = build_mlp(10, [8], "tanh", rng=np.random.default_rng(0))
    result = run(model, epochs=4, optimizer=SGD(0.5, lr_decay=0.5), on_epoch=seen.append)
    assert seen == result.history
    assert [stats.epoch for stats in seen] == [1, 2, 3, 4]
    assert [stats.lr for stats in seen] == [0.5, 0.25, 0.125, 0.0625]
    assert all(stats.seconds > 0 for stats in seen)


def test_train_on_epoch_exception_propagates() -> None:
    class Pruned(Exception):
        pass

    calls: list[int] = []

    def prune_at_two(stats: EpochStats) -> None:
        calls.append(stats.epoch)
        if stats.epoch == 2:
            raise Pruned("stop")

    model = build_mlp(10, [8], "relu", rng=np.random.default_rng(0))
    with pytest.raises(Pruned, match="stop"):
        run(model, epochs=5, on_epoch=prune_at_two)
    assert calls == [1, 2]


def test_train_best_params_restore_best_epoch() -> None:
    model = build_mlp(10, [16], "relu", init="he", rng=np.random.default_rng(0))
    result = run(model)
    assert 1 <= result.best_epoch < len(result.history)  # this seed's best epoch is not the last one
    keys = [(stats.val_error, stats.val_loss) for stats in result.history]
    assert result.best_epoch == 1 + min(range(len(keys)), key=keys.__getitem__)

    last_val_loss = result.history[-1].val_loss
    assert SE().forward(predict(model, X_VAL), Y_VAL).mean() == pytest.approx(last_val_loss)
    linears = [layer for layer in model if isinstance(layer, Linear)]
    arrays_before = [(layer.params(), layer.W, layer.b) for layer in linears]
    restore(model, result.best_params)
    best = result.best
    assert SE().forward(predict(model, X_VAL), Y_VAL).mean() == pytest.approx(best.val_loss, rel=1e-12)
    assert error_rate(model, X_VAL, Y_VAL) == best.val_error
    for layer, (params, W, b) in zip(linears, arrays_before, strict=True):  # restored in place
        assert layer.params() is params and layer.W is W and layer.b is b
    # best_params are copies: training on does not change them.
    saved = [{name: p.copy() for name, p in layer_params.items()} for layer_params in result.best_params]
    run(model, epochs=1)
    for kept, copy in zip(result.best_params, saved, strict=True):
        for name in kept:
            np.testing.assert_array_equal(kept[name], copy[name])


def test_restore_rejects_mismatched_params() -> None:
    model = build_mlp(4, [3], rng=np.random.default_rng(0))
    good = [{name: p.copy() for name, p in layer.params().items()} for layer in model]
    with pytest.raises(ValueError, match="one params dict per layer"):
        restore(model, good[:-1])
    bad = [dict(params) for params in good]
    bad[0]["W"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"shape \(4, 3\)"):
        restore(model, bad)


def test_train_augment_gets_each_minibatch() -> None:
    shapes = []

    def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shapes.append(x.shape)
        return x + 0.01 * rng.standard_normal(x.shape)

    x_before = X_TRN.copy()
    run(build_mlp(10, [4], rng=np.random.default_rng(0)), epochs=2, batch_size=100, augment=augment)
    n = len(X_TRN)
    expected = [(100, 10)] * (n // 100) + [(n % 100, 10)]
    assert shapes == expected * 2
    np.testing.assert_array_equal(X_TRN, x_before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr must be"),
        ({"lr": -1.0}, "lr must be"),
        ({"lr": float("nan")}, "lr must be"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum must be"),
        ({"lr": 0.1, "momentum": -0.1}, "momentum must be"),
        ({"lr": 0.1, "weight_decay": -1e-4}, "weight_decay must be"),
        ({"lr": 0.1, "lr_decay": 0.0}, "lr_decay must be"),
        ({"lr": 0.1, "lr_decay": 1.5}, "lr_decay must be"),
    ],
)
def test_sgd_rejects_invalid_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SGD(**kwargs)


def test_sgd_momentum_and_weight_decay_update() -> None:
    layer = Linear(2, 1)
    layer.W = np.array([[1.0], [2.0]])
    layer.b = np.array([[0.5]])
    optimizer = SGD(0.1, momentum=0.9, weight_decay=0.01)
    grads = {"W": np.array([[1.0], [-1.0]]), "b": np.array([[2.0]])}
    optimizer.step([layer, Sigmoid()], [grads, {}])
    # v = g + wd * W (weights only); p -= lr * v
    np.testing.assert_allclose(layer.W, [[1.0 - 0.1 * 1.01], [2.0 - 0.1 * (-1.0 + 0.02)]])
    np.testing.assert_allclose(layer.b, [[0.5 - 0.2]])
    w1 = layer.W.copy()
    v_w = np.array([[1.01], [-0.98]])
    optimizer.step([layer, Sigmoid()], [grads, {}])
    v_w = 0.9 * v_w + grads["W"] + 0.01 * w1
    np.testing.assert_allclose(layer.W, w1 - 0.1 * v_w)
    np.testing.assert_allclose(layer.b, [[0.3 - 0.1 * (0.9 * 2.0 + 2.0)]])


def test_sgd_end_epoch_decays_lr() -> None:
    optimizer = SGD(1.0, lr_decay=0.9)
    optimizer.end_epoch()
    optimizer.end_epoch()
    assert optimizer.lr == pytest.approx(0.81)


def test_build_mlp_layout() -> None:
    model = build_mlp(784, [64, 32], "leaky_relu", rng=np.random.default_rng(0))
    assert [type(layer).__name__ for layer in model] == [
        "Linear",
        "LeakyReLU",
        "Linear",
        "LeakyReLU",
        "Linear",
        "Sigmoid",
    ]
    assert [layer.W.shape for layer in model[::2]] == [(784, 64), (64, 32), (32, 1)]
    assert [type(layer) for layer in build_mlp(784, [])] == [Linear, Sigmoid]


def test_build_mlp_rejects_unknown_activation() -> None:
    with pytest.raises(ValueError, match="'gelu'") as error:
        build_mlp(784, [8], "gelu")
    assert all(name in str(error.value) for name in ("relu", "tanh", "sigmoid", "leaky_relu"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_same_predictions(tmp_path, dtype: type) -> None:
    model = build_mlp(10, [8, 4], "tanh", init="he", rng=np.random.default_rng(0), dtype=dtype)
    model[1] = LeakyReLU(0.2)
    model[0].b = model[0].b + np.asarray(0.1, dtype=dtype)
    mean, std = np.arange(10.0), np.ones(10)
    path = tmp_path / "model.npz"
    path.write_bytes(b"an older file")
    save_model(path, model, mean=mean, std=std)

    loaded, extras = load_model(path)
    assert [repr(layer) for layer in loaded] == [repr(layer) for layer in model]
    assert isinstance(loaded[1], LeakyReLU) and loaded[1].negative_slope == 0.2
    assert isinstance(loaded[3], Tanh)
    x = X_VAL.astype(dtype)
    np.testing.assert_array_equal(predict(loaded, x), predict(model, x))
    assert predict(loaded, x).dtype == dtype
    assert sorted(extras) == ["mean", "std"]
    np.testing.assert_array_equal(extras["mean"], mean)
    assert os.listdir(tmp_path) == ["model.npz"]  # replaced atomically, no temporary file left


def test_save_model_rejects_clashing_extra_name(tmp_path) -> None:
    with pytest.raises(ValueError, match="clash"):
        save_model(tmp_path / "m.npz", build_mlp(3, [2]), W0=np.zeros(1))
    assert os.listdir(tmp_path) == []


def test_load_model_rejects_file_without_architecture(tmp_path) -> None:
    np.savez(tmp_path / "other.npz", W0=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="architecture"):
        load_model(tmp_path / "other.npz")


def test_train_float32_end_to_end() -> None:
    x_trn, y_trn = separable_data(400, seed=0, dtype=np.float32)
    x_val, y_val = separable_data(400, seed=1, dtype=np.float32)
    rng = np.random.default_rng(0)
    model = build_mlp(10, [16], "relu", init="he", rng=rng, dtype=np.float32)
    result = train(
        model,
        BCE(),
        x_trn,
        y_trn,
        x_val,
        y_val,
        epochs=10,
        batch_size=16,
        optimizer=SGD(0.1, momentum=0.9, weight_decay=1e-4),
        rng=rng,
    )
    assert result.best.val_error <= 0.01
    assert all(p.dtype == np.float32 for layer in model for p in layer.params().values())
    assert all(p.dtype == np.float32 for params in result.best_params for p in params.values())
    assert predict(model, x_val).dtype == np.float32


def test_train_mnist_4_vs_9_lab_setup(data_dir) -> None:
    """The lab's task on the real images (500 + 500 of digits 4 and 9): model [Linear(784, 5), ReLU,
    Linear(5, 1), Sigmoid], SE, plain SGD, half the images for validation."""
    with np.load(data_dir / "mnist" / "full-mnist.npz") as mnist:
        images, digits = mnist["x_train"], mnist["y_train"]
    keep = (digits == 4) | (digits == 9)
    x = images[keep].reshape(-1, 784) / 255.0
    y = (digits[keep] == 9).astype(np.float64)[:, None]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y, half = x[order], y[order], len(x) // 2
    model = build_mlp(784, [5], "relu", rng=rng)
    assert error_rate(model, x[:half], y[:half]) > 0.3
    result = train(
        model,
        SE(),
        x[half:],
        y[half:],
        x[:half],
        y[:half],
        epochs=20,
        batch_size=32,
        optimizer=SGD(0.5),
        rng=rng,
    )
    assert result.best.val_error <= 0.05
