"""Confirmation replicates: one re-training of a finished trial's configuration on fresh folds or seeds.

A *replicate* is one re-training of one configuration: ``("fold", i, k)`` trains on every training image
outside fold ``i`` of a seeded, stratified ``k``-fold partition of the task's training and validation images
together, and scores fold ``i``; ``("seed", i, n)`` trains on the study's own split with a fresh seed ``i``.
The fold partition is drawn with its own seed, so its folds are not the search's validation split. Each
task's ``replicate.py`` trains one (its :class:`~objectives.hooks.Confirmation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objectives.folds import stratified_folds

__all__ = ["Replicate", "fold_split"]

_FOLD_SEED = 7_919  # the partition's seed offset: folds never coincide with the search's split (seed 0)


@dataclass(frozen=True)
class Replicate:
    """One re-training: ``scheme`` ``"fold"`` (fold ``index`` of ``count``) or ``"seed"`` (seed ``index``)."""

    scheme: str
    index: int
    count: int
    seed: int = 0

    @property
    def key(self) -> str:
        """A stable name, e.g. ``fold3of5``."""
        return f"{self.scheme}{self.index}of{self.count}"


def fold_split(y: np.ndarray, rep: Replicate) -> tuple[np.ndarray, np.ndarray]:
    """The training and held-out indices of fold replicate ``rep`` over labels ``y``."""
    return stratified_folds(y, rep.count, rep.seed + _FOLD_SEED)[rep.index]
