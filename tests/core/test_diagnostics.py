"""The warnings of hierqdrant.core.diagnostics: each fires exactly when its condition holds."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core import diagnostics as d
from hierqdrant.core.model import HierarchyModel
from tests.conftest import gaussian_classes


def test_narrow_pca_below_k_minus_1() -> None:
    assert d.narrow_pca(8, 10) and "K − 1 = 9" in d.narrow_pca(8, 10)[0]
    assert d.narrow_pca(9, 10) == [] and d.narrow_pca(64, 10) == []


def test_flat_tree_only_when_every_threshold_gives_height_1() -> None:
    (w,) = d.flat_tree([(0.1, 1), (0.3, 1), (0.5, 1)])
    assert "every threshold tried (t = 0.1, 0.3, 0.5)" in w
    (w,) = d.flat_tree([(0.3, 1)])
    assert "at t = 0.3" in w
    assert d.flat_tree([(0.1, 2), (0.3, 1)]) == []
    assert d.flat_tree([]) == []


def test_few_per_class_names_the_classes() -> None:
    (w,) = d.few_per_class(np.array([0, 0, 1, 2, 2, 2]), 4, ["a", "b", "c", "d"])
    assert w.startswith("2 of 4 classes") and "b, d" in w  # d has no image at all
    assert d.few_per_class(np.array([0, 0, 1, 1]), 2) == []


def test_leaf_accuracy_and_its_warning_say_where() -> None:
    assert d.leaf_accuracy(np.array([0, 1, 1, 0]), np.array([0, 1, 0, -1])) == pytest.approx(2 / 3)
    (w,) = d.low_leaf_accuracy(0.4, "on 10 held-out queries")
    assert "40.0% on 10 held-out queries" in w
    assert d.low_leaf_accuracy(0.5, "x") == [] and d.low_leaf_accuracy(float("nan"), "x") == []


def test_grid_edge() -> None:
    (w,) = d.grid_edge("α", 5.0, [0.1, 1.0, 5.0])
    assert "largest value of its grid (0.1, 1, 5)" in w and "outside the grid" in w
    (w,) = d.grid_edge("t", 0.01, [0.01, 0.1], widened=True)
    assert "smallest" in w and "widened once" in w
    (w,) = d.grid_edge("t", 1.0, [0.5, 1.0], bound=True)
    assert "also its limit" in w
    assert d.grid_edge("α", 1.0, [0.1, 1.0, 5.0]) == []
    assert d.grid_edge("α", 3.0, [3.0]) == []  # a pinned value is no edge


def test_model_warnings_on_a_model_that_means_little() -> None:
    """Ten classes on one axis (PCA at 95 % keeps one dim < K − 1), overlapping so much that most
    leaves are wrong, one class with a single image."""
    rng = np.random.default_rng(0)
    centres = np.zeros((10, 1))
    centres[:, 0] = np.arange(10) * 0.2
    x, y = gaussian_classes(centres, per_class=30, dims=4, spread=1.0, seed=1)
    x[:, 0] *= 30  # the class axis dominates the variance
    x[:, 1:] *= 0.01
    keep = np.flatnonzero(~((y == 9) & (np.arange(y.size) % 30 > 0)))  # class 9: one image
    x, y = x[keep] + 0.001 * rng.standard_normal((keep.size, 4)), y[keep]
    model = HierarchyModel.fit(x, y, threshold=0.3)
    found = d.model_warnings(model, x, y)
    assert any("PCA keeps 1 dimensions" in w for w in found)
    assert any("fewer than 2 images" in w for w in found)
    assert any("on the fitting data" in w and "leaf accuracy" in w for w in found)


def test_model_warnings_quiet_on_a_good_model(five_classes: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = five_classes
    model = HierarchyModel.fit(x, y, threshold=0.3, n_components=None)
    assert d.model_warnings(model, x, y) == []


def test_subclass_agreement_counts_the_images_of_split_classes_only() -> None:
    of = np.array([0, 1, 1])  # class 1 split in two
    want = np.repeat([0, 1, 2], 10)
    got = want.copy()
    got[10:12] = 2  # 2 of class 1's 20 images in the other sub-class: 90 % agree, at the line
    assert d.subclass_agreement(got, want, of, dims=4, input_dims=8) == []
    got[12] = 2  # 85 %
    (w,) = d.subclass_agreement(got, want, of, dims=4, input_dims=8)
    assert "only 85% of the split classes'" in w and "--pca all" in w
    (w,) = d.subclass_agreement(got, want, of, dims=8, input_dims=8)
    assert "fewer splits" in w
    # the class that is not split does not dilute the share: 100 more agreeing images of it change nothing
    more = np.concatenate([np.zeros(100, np.int64), want])
    assert d.subclass_agreement(np.concatenate([np.zeros(100, np.int64), got]), more, of, 4, 8) != []
