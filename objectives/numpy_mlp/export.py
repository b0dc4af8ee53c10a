"""Export a numpy-mlp winner: ``numpy_nn.py``, its weights, the lab's two figures and ``winner.json``.
The weights are the trial's refit (every training image, the confirmed epoch count) when one is stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nn_numpy import load_model, predict, standalone_source
from objectives.files import atomic_copy, atomic_write_text
from objectives.hooks import ExportJob
from objectives.mnist import load_mnist, select_pair
from reports import plot_classification, plot_training

__all__ = ["export_numpy_mlp"]

_LOSS_LABELS = {"se": "MSE", "bce": "binary cross-entropy"}


def export_numpy_mlp(job: ExportJob) -> list[Path]:
    """``numpy_nn.py`` (standalone layers, ``load_model``), weights, the lab's figures, ``winner.json``."""
    trial, out = job.trial, job.out
    written = [atomic_write_text(out / "numpy_nn.py", standalone_source())]
    weights = out / "numpy_nn_weights.npz"
    atomic_copy(job.weights, weights)
    written.append(weights)

    config = trial.user_attrs["config"]
    curves = trial.user_attrs["curves"]
    best_epoch = trial.user_attrs.get("best_epoch")
    written.append(
        plot_training(
            {"validation": curves["val_loss"], "training": curves["train_loss"]},
            out / "numpy_nn_training.png",
            ylabel=_LOSS_LABELS.get(config["loss"], config["loss"]),
            best_epoch=best_epoch,
            title=f"{job.study_name}: trial {trial.number}",
        )
    )

    model, extras = load_model(weights)
    classes = tuple(int(c) for c in extras["classes"])
    images = load_mnist(job.data or job.study_attrs.get("data"))
    x, y = select_pair(images.x_test, images.y_test, classes)
    x_norm = ((x - float(extras["mean"])) / float(extras["std"])).astype(model[0].W.dtype)
    predicted = (predict(model, x_norm) > 0.5).astype(np.int64).ravel()
    test_error = float(np.mean(predicted != y.ravel()))
    written.append(
        plot_classification(
            x.reshape(-1, 28, 28),
            predicted,
            y.ravel(),
            [str(c) for c in classes],
            out / "numpy_nn_classification.png",
            title=f"NN classification: test error {test_error:.4f}",
        )
    )
    source = job.weights_source()
    print(f"numpy_nn_weights.npz: {source}; test_error {test_error:.4f} on {len(y)} test images")
    written.append(
        job.write_winner_json(
            "val_error",
            test_error=test_error,
            n_test=int(len(y)),
            config=config,
            data_source=images.source,
            usage="model, extras = numpy_nn.load_model('numpy_nn_weights.npz'); numpy_nn.predict(model, x)",
        )
    )
    return written
