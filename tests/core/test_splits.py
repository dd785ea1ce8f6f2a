"""The stratified split: training needs one item of every class, a class Gaussian two."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.core.splits import stratified_split

# The two callers: training (vision.train) and tuning's validation split (evaluation.tuning).
split_train_val = partial(stratified_split, min_per_class=1)
split_validation = partial(stratified_split, min_per_class=2)


def test_stratified_split_keeps_every_class_in_training() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2])
    tr, va = split_train_val(labels, 0.2, seed=0)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(16))
    assert np.bincount(labels[va], minlength=3).tolist() == [2, 1, 0]
    assert set(labels[tr]) == {0, 1, 2}


def test_split_validation_is_stratified_disjoint_and_seeded() -> None:
    y = np.array([0] * 10 + [1] * 5 + [2] * 2)
    fit, val = split_validation(y, 0.2, seed=3)
    assert np.intersect1d(fit, val).size == 0
    assert np.union1d(fit, val).tolist() == list(range(17))
    assert np.bincount(y[val], minlength=3).tolist() == [2, 1, 0]  # round(0.2·n), none from a class of 2
    again = split_validation(y, 0.2, seed=3)
    assert again[0].tolist() == fit.tolist() and again[1].tolist() == val.tolist()
    assert split_validation(y, 0.2, seed=4)[1].tolist() != val.tolist()
    # Every class keeps at least two items for its Gaussian.
    assert np.bincount(y[split_validation(y, 0.9, seed=0)[0]], minlength=3).min() >= 2
    with pytest.raises(InputError, match="val_share"):
        split_validation(y, 1.0)
