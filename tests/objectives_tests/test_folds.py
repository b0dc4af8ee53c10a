"""``stratified_folds``: disjoint, covering, stratified, seeded; the pooled tie-broken figure."""

from __future__ import annotations

import numpy as np
import pytest

from objectives.folds import pooled, stratified_folds, tie_broken_error


def test_stratified_folds_are_disjoint_cover_all_images_and_keep_the_class_shares() -> None:
    labels = np.r_[np.zeros(300, int), np.ones(200, int)][np.random.default_rng(0).permutation(500)][:, None]
    folds = stratified_folds(labels, 5, seed=1)
    assert len(folds) == 5
    validated = np.concatenate([val for _, val in folds])
    assert np.array_equal(np.sort(validated), np.arange(500)), "every image is validated exactly once"
    for trn, val in folds:
        assert not np.intersect1d(trn, val).size and len(trn) + len(val) == 500
        assert labels[val].sum() == 40 and len(val) == 100, "each fold holds 60 % / 40 % like the whole"


def test_stratified_folds_are_seeded() -> None:
    labels = np.arange(100) % 2
    same = stratified_folds(labels, 4, seed=7), stratified_folds(labels, 4, seed=7)
    other = stratified_folds(labels, 4, seed=8)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(*same, strict=True))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(same[0], other, strict=True))


def test_stratified_folds_refuse_more_folds_than_a_class_has_images() -> None:
    with pytest.raises(ValueError):
        stratified_folds(np.r_[np.zeros(10), np.ones(3)], 5, seed=0)


def test_tie_broken_error_orders_ties_by_brier_and_never_crosses_one_image() -> None:
    n = 1000
    assert tie_broken_error(0.010, 0.02, n) < tie_broken_error(0.010, 0.03, n)
    assert tie_broken_error(0.010, 1.0, n) < tie_broken_error(0.011, 0.0, n)
    assert pooled([0.0, 0.1], [300, 100]) == pytest.approx(0.025)
