"""``Linear.mean_grads()`` (one matmul) against the lab's per-sample ``grads()`` averaged over the batch."""

import numpy as np
import pytest

from nn_numpy import BCE, SE, SGD, Linear, build_mlp, train


@pytest.mark.parametrize(
    ("batch", "n_in", "n_out"), [(1, 1, 1), (2, 3, 2), (7, 5, 3), (32, 20, 9), (128, 64, 1)]
)
def test_mean_grads_equals_mean_of_per_sample_grads(batch: int, n_in: int, n_out: int) -> None:
    rng = np.random.default_rng(batch * n_in * n_out)
    layer = Linear(n_in, n_out, init="he", rng=rng)
    layer.forward(rng.standard_normal((batch, n_in)))
    layer.backward(rng.standard_normal((batch, n_out)))
    per_sample = layer.grads()
    fast = layer.mean_grads()
    assert per_sample["W"].shape == (batch, n_in, n_out) and per_sample["b"].shape == (batch, 1, n_out)
    for name in ("W", "b"):
        assert fast[name].shape == layer.params()[name].shape
        np.testing.assert_allclose(fast[name], per_sample[name].mean(axis=0), rtol=1e-12, atol=1e-12)


def _problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((150, 12))
    return x, (x @ rng.standard_normal(12) > 0).astype(np.float64)[:, None]


@pytest.mark.parametrize("loss_cls", [SE, BCE])
def test_train_fast_path_matches_per_sample_path(loss_cls: type) -> None:
    x_trn, y_trn = _problem(0)
    x_val, y_val = _problem(1)
    results, models = [], []
    for per_sample_grads in (True, False):
        rng = np.random.default_rng(42)
        model = build_mlp(12, [10, 6], "tanh", init="xavier", rng=rng)
        optimizer = SGD(0.2, momentum=0.5, weight_decay=1e-3, lr_decay=0.9)
        results.append(
            train(
                model,
                loss_cls(),
                x_trn,
                y_trn,
                x_val,
                y_val,
                epochs=5,
                batch_size=32,
                optimizer=optimizer,
                rng=rng,
                per_sample_grads=per_sample_grads,
            )
        )
        models.append(model)

    per_sample, fast = results
    assert per_sample.best_epoch == fast.best_epoch
    for a, b in zip(per_sample.history, fast.history, strict=True):
        assert (a.epoch, a.val_error, a.lr) == (b.epoch, b.val_error, b.lr)
        np.testing.assert_allclose([a.train_loss, a.val_loss], [b.train_loss, b.val_loss], rtol=1e-10, atol=0)
    for layer_a, layer_b in zip(*models, strict=True):
        for name, param in layer_a.params().items():
            np.testing.assert_allclose(param, layer_b.params()[name], rtol=1e-10, atol=1e-12)
    for params_a, params_b in zip(per_sample.best_params, fast.best_params, strict=True):
        for name, param in params_a.items():
            np.testing.assert_allclose(param, params_b[name], rtol=1e-10, atol=1e-12)
