"""The lab's figures, drawn from arrays: training curves and a grid of classified test images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_classification", "plot_training"]


def plot_training(
    curves: Mapping[str, Sequence[float]],
    path: Path,
    *,
    ylabel: str,
    best_epoch: int | None = None,
    title: str = "",
) -> Path:
    """Plot each named curve per epoch (epochs count from 1), marking ``best_epoch``; write a PNG."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=name)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch ({best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_classification(
    images: np.ndarray,
    predicted: np.ndarray,
    truth: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    *,
    title: str,
    max_images: int = 100,
) -> Path:
    """A grid of test images ``[N, 28, 28]`` labelled with the predicted class; mistakes first, in red."""
    wrong = np.flatnonzero(predicted != truth)
    right = np.flatnonzero(predicted == truth)
    order = np.concatenate([wrong, right])[:max_images]
    cols = 10
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.35 + 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index in zip(axes.ravel(), order, strict=False):
        ax.imshow(images[index], cmap="gray")
        mistake = predicted[index] != truth[index]
        ax.set_title(class_names[int(predicted[index])], color="red" if mistake else "black", fontsize=10)
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.tight_layout()
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
