"""Export a study's winner as the lab's files (per task) into an output folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nn_numpy import load_model, predict, standalone_source
from objectives.data import load_mnist, select_pair
from reports import plot_classification, plot_training

from .winner import Winner

__all__ = ["EXPORTERS", "export"]

_LOSS_LABELS = {"se": "MSE", "bce": "binary cross-entropy"}


def export(winner: Winner, out: str | Path, *, data: str | None = None) -> list[Path]:
    """Write the winner's files into ``out`` (created if needed); return the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    exporter = EXPORTERS.get(winner.task.name)
    if exporter is None:
        raise ValueError(f"no exporter for task {winner.task.name!r}")
    return exporter(winner, out, data)


def export_numpy_mlp(winner: Winner, out: Path, data: str | None) -> list[Path]:
    """``numpy_nn.py`` (standalone layers, ``load_model``), weights, the lab's figures, ``winner.json``."""
    trial = winner.trial
    written = [_write_text(out / "numpy_nn.py", standalone_source())]
    weights = out / "numpy_nn_weights.npz"
    _copy(winner.checkpoint, weights)
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
            title=f"{winner.study.study_name}: trial {trial.number}",
        )
    )

    model, extras = load_model(weights)
    classes = tuple(int(c) for c in extras["classes"])
    images = load_mnist(data or winner.data)
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
    summary = {
        "study": winner.study.study_name,
        "trial": trial.number,
        "val_error": trial.value,
        "best_epoch": best_epoch,
        "test_error": test_error,
        "n_test": int(len(y)),
        "config": config,
        "data_source": images.source,
        "usage": "model, extras = numpy_nn.load_model('numpy_nn_weights.npz'); numpy_nn.predict(model, x)",
    }
    written.append(_write_text(out / "winner.json", json.dumps(summary, indent=2) + "\n"))
    return written


EXPORTERS: dict[str, Callable[[Winner, Path, str | None], list[Path]]] = {"numpy-mlp": export_numpy_mlp}


def _write_text(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def _copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
