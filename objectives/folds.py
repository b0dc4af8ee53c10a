"""Cross-validation folds of a training set and the one figure a study ranks their validation by.

Folds are stratified (each fold holds the classes in the training set's proportions) and seeded, so every
trial of a study sees the same folds and trials are compared on the same images. The figure is the error
pooled over the folds' validation images (every training image is validated once) with the pooled Brier
score as a tie-break far below one image: ``error + brier / (10 n)``. Error alone ties often at the top
(a study's best trials differ by an image or two), and the first of a tie is not the best; the Brier score
(mean squared distance of the sigmoid output from the label) is continuous, and shared by configurations
trained with different losses, unlike their own validation losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold

__all__ = ["pooled", "stratified_folds", "tie_broken_error"]


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` disjoint validation folds covering ``labels``, each with its training indices (the rest).

    Args:
        labels: Class labels, shape (N,) or (N, 1).
        k: Number of folds, >= 2 and at most the size of the smallest class.
        seed: Shuffles the images before they are dealt into folds.

    Raises:
        ValueError: when ``k`` is below 2 or a class has fewer than ``k`` images.
    """
    y = np.asarray(labels).reshape(len(labels), -1)[:, 0]
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if k < 2 or smallest < k:
        raise ValueError(f"{k} folds need k >= 2 and k images per class; the smallest class has {smallest}")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(trn), np.sort(val)) for trn, val in splitter.split(np.zeros(len(y)), y)]


def tie_broken_error(error: float, brier: float, n: int) -> float:
    """``error`` (a fraction of ``n`` images) plus ``brier`` scaled below a tenth of one image's share."""
    return float(error + brier / (10 * n))


def pooled(values: Sequence[float], sizes: Sequence[int]) -> float:
    """The mean of per-fold ``values`` weighted by the folds' ``sizes`` (their value over all images)."""
    return float(np.average(values, weights=sizes))
