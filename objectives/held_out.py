"""Held-out class probabilities of a confirmation replicate, kept so that ensembles of the confirmed
configurations can be scored on the same held-out images (``search/selection/ensemble.py``).

Each part maps to ``(probabilities [N, C] float32, labels [N] int64)``: mynet ``val`` (the study's
validation images, its large holdout when it has one); finetune ``orig``, ``aug`` (the condition-bank copies),
``new`` (when the study has NEW photos) and ``orig_flip`` (the ORIG photos flipped left-right, for
test-time augmentation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Predictions", "accuracy", "finetune_predictions", "mean_probabilities", "probabilities"]

Predictions = dict[str, tuple[np.ndarray, np.ndarray]]
FEATURE_CHUNK = 500
_NET_CHUNK = 32  # a whole FinetuneNet at 224 px: 128 images at a time held over 3 GB (bench/allocator.py)


def probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    prepare: Callable | None = None,
    chunk_size: int = FEATURE_CHUNK,
) -> np.ndarray:
    """``softmax(forward(x))`` in chunks of ``chunk_size``, as float32 on the CPU (``prepare`` maps each
    chunk first)."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), chunk_size):
            chunk = x[i : i + chunk_size]
            out.append(forward(chunk if prepare is None else prepare(chunk)).float().softmax(dim=1).cpu())
    return torch.cat(out).numpy()


def _labels(y: torch.Tensor) -> np.ndarray:
    return y.cpu().numpy().astype(np.int64)


def finetune_predictions(
    model: nn.Module, parts: Any, features: dict[str, torch.Tensor] | None
) -> Predictions:
    """A trained FinetuneNet's held-out probabilities: from cached backbone ``features`` through the head
    when given (linear probes), else through the whole net; ``orig_flip`` always runs the whole net."""
    model.eval()

    def to_float(x: torch.Tensor) -> torch.Tensor:
        return x.float().div(255) if x.dtype == torch.uint8 else x

    whole = {"orig": parts.x_val, "aug": parts.x_aug}
    labels = {"orig": parts.y_val, "aug": parts.y_aug}
    if parts.x_new is not None:
        whole["new"], labels["new"] = parts.x_new, parts.y_new
    out: Predictions = {}
    for name, x in whole.items():
        key = {"orig": "val"}.get(name, name)
        if features is not None and key in features:
            probs = probabilities(model.head, features[key])
        else:
            probs = probabilities(model, x, prepare=to_float, chunk_size=_NET_CHUNK)
        out[name] = (probs, _labels(labels[name]))
    flipped = probabilities(model, parts.x_val, prepare=lambda c: to_float(c).flip(-1), chunk_size=_NET_CHUNK)
    out["orig_flip"] = (flipped, _labels(parts.y_val))
    return out


def mean_probabilities(members: Sequence[dict[str, np.ndarray]], part: str) -> tuple[np.ndarray, np.ndarray]:
    """The members' mean class probabilities on held-out ``part`` and its labels (kept prediction files).

    Raises:
        ValueError: when the members were scored on different images.
    """
    labels = members[0][f"{part}_y"]
    for other in members[1:]:
        if not np.array_equal(other[f"{part}_y"], labels):
            raise ValueError(f"the members' held-out {part} images differ; confirm them under one plan")
    return np.mean([m[part] for m in members], axis=0), labels


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """The share of rows whose most probable class is the label."""
    return float(np.mean(probs.argmax(axis=1) == labels))
