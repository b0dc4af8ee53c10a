"""``stack_models``: K same-shaped MLPs packed into one plain MLP that averages their logits."""

from __future__ import annotations

import numpy as np
import pytest

from nn_numpy import Linear, build_mlp, load_model, predict, save_model, stack_models


def _logits(model: list, x: np.ndarray) -> np.ndarray:
    for layer in model[:-1]:  # everything but the final Sigmoid
        x = layer.forward(x)
    return x


@pytest.mark.parametrize(
    ("widths", "activation"), [((), "relu"), ((7,), "relu"), ((5, 4, 6), "leaky_relu"), ((3, 3), "tanh")]
)
def test_packed_model_is_the_sigmoid_of_the_mean_logit_and_round_trips(widths, activation, tmp_path) -> None:
    rng = np.random.default_rng(0)
    members = [build_mlp(20, list(widths), activation, rng=rng, dtype=np.float64) for _ in range(3)]
    for member in members:  # nonzero biases, so a wrong bias packing shows
        for layer in member:
            if isinstance(layer, Linear):
                layer.b = rng.normal(size=layer.b.shape)
    x = rng.normal(size=(40, 20))
    expected = 1 / (1 + np.exp(-np.mean([_logits(m, x) for m in members], axis=0)))
    packed = stack_models(members)
    np.testing.assert_allclose(predict(packed, x), expected, rtol=1e-12, atol=1e-12)
    assert [type(layer).__name__ for layer in packed] == [type(layer).__name__ for layer in members[0]]
    save_model(tmp_path / "packed.npz", packed)
    loaded, _ = load_model(tmp_path / "packed.npz")
    np.testing.assert_allclose(predict(loaded, x), expected, rtol=1e-12, atol=1e-12)


def test_members_of_different_shapes_are_refused() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="same layer kinds and shapes"):
        stack_models([build_mlp(20, [4], rng=rng), build_mlp(20, [5], rng=rng)])
    with pytest.raises(ValueError, match="same layer kinds and shapes"):
        stack_models([build_mlp(20, [4], "relu", rng=rng), build_mlp(20, [4], "tanh", rng=rng)])
    with pytest.raises(ValueError, match="at least one"):
        stack_models([])
