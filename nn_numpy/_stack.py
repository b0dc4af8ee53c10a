"""Pack an ensemble of same-shaped MLPs into one plain, wider MLP (same layer kinds, same ``.npz`` format).

Members ``[Linear, act, ..., Linear, Sigmoid]`` with equal widths and activations become one network whose
hidden layers hold the members side by side: the first Linear's weights are concatenated column-wise, every
later hidden Linear is block-diagonal (a member's units see only that member's units), and the output
Linear stacks the members' output weights row-wise divided by their number. The packed network therefore
computes ``sigmoid(mean of the members' logits)`` exactly, with the lab's layers only: ``numpy_nn.load_model``
and ``predict`` need no change. Parameters and compute grow with the number of members (K members of width w
have K·w units; hidden-to-hidden weights K·w² as blocks of zeros included).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._layers import LeakyReLU, Linear, Sigmoid

__all__ = ["stack_models"]


def stack_models(members: Sequence[list]) -> list:
    """One MLP computing ``sigmoid(mean of the members' output logits)`` (see the module docstring).

    Args:
        members: Lists of layers of one architecture, each ending ``Linear, Sigmoid`` with one output.

    Returns:
        The packed list of layers (new arrays; the members are not changed).

    Raises:
        ValueError: without members, or when their layer kinds, widths or output differ from the layout.
    """
    if not members:
        raise ValueError("stack_models needs at least one member")
    first = members[0]
    kinds = [_kind(layer) for layer in first]
    if len(first) < 2 or not isinstance(first[-2], Linear) or not isinstance(first[-1], Sigmoid):
        raise ValueError("each member must end with Linear, Sigmoid")
    if first[-2].W.shape[1] != 1:
        raise ValueError("stack_models packs single-output members")
    for member in members[1:]:
        same = [_kind(layer) for layer in member] == kinds and all(
            a.W.shape == b.W.shape for a, b in zip(first, member, strict=True) if isinstance(a, Linear)
        )
        if not same:
            raise ValueError("every member must have the same layer kinds and shapes")
    k = len(members)
    linear = [i for i, layer in enumerate(first) if isinstance(layer, Linear)]
    packed: list = []
    for i, layer in enumerate(first):
        if not isinstance(layer, Linear):
            packed.append(LeakyReLU(layer.negative_slope) if isinstance(layer, LeakyReLU) else type(layer)())
            continue
        weights = [m[i].W for m in members]
        biases = [m[i].b for m in members]
        if i == linear[-1] and i == linear[0]:  # logistic regression: the mean of the members
            w, b = np.mean(weights, axis=0), np.mean(biases, axis=0)
        elif i == linear[0]:
            w, b = np.concatenate(weights, axis=1), np.concatenate(biases, axis=1)
        elif i == linear[-1]:
            w, b = np.concatenate(weights, axis=0) / k, np.mean(biases, axis=0)
        else:
            w, b = _block_diagonal(weights), np.concatenate(biases, axis=1)
        out = Linear(w.shape[0], w.shape[1], dtype=layer.W.dtype)
        out.W, out.b = w.astype(layer.W.dtype), b.astype(layer.W.dtype)
        packed.append(out)
    return packed


def _kind(layer: object) -> tuple:
    return (type(layer).__name__, getattr(layer, "negative_slope", None))


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    rows, cols = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols), dtype=blocks[0].dtype)
    r = c = 0
    for block in blocks:
        out[r : r + block.shape[0], c : c + block.shape[1]] = block
        r, c = r + block.shape[0], c + block.shape[1]
    return out
