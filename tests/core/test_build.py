"""The builders: overlap (paper §3.1), Ward, given."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.build import build_given, build_overlap, build_ward
from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import Gaussians


def _groups(tree) -> set[frozenset[int]]:
    """The class sets under each inner node."""
    return {frozenset(tree.leaves_under(v)) for v in range(tree.num_leaves, tree.num_nodes)}


def _fit(x: np.ndarray, y: np.ndarray) -> Gaussians:
    return Gaussians.fit(x, y, int(y.max()) + 1)


def test_overlap_finds_the_two_pairs_and_leaves_the_far_class_alone(five_classes) -> None:
    x, y = five_classes
    tree, report = build_overlap(x, y, _fit(x, y), 0.3)
    assert _groups(tree) == {frozenset({0, 1}), frozenset({2, 3}), frozenset(range(5))}
    assert tree.height.tolist()[:5] == [0] * 5
    assert tree.tree_height == 2
    assert report.root_added  # three nodes were left and nothing overlapped any more
    assert tree.ancestors(4) == [4, tree.root]


def test_raising_t_splits_and_lowering_t_merges_all(five_classes) -> None:
    x, y = five_classes
    g = _fit(x, y)
    high, _ = build_overlap(x, y, g, 0.999)
    assert _groups(high) == {frozenset(range(5))}  # a flat tree: only the added root
    assert high.tree_height == 1
    low, report = build_overlap(x, y, g, 1e-300)
    assert frozenset(range(5)) in _groups(low)
    assert not report.root_added  # everything merged by overlap alone
    assert len(report.levels) >= 1


def test_pooled_statistics_drive_the_next_level() -> None:
    # Pairs {0,1} and {2,3} overlap; the two pair-nodes overlap only once pooled (their spread grows).
    from tests.conftest import gaussian_classes

    centres = np.array([[0.0], [1.0], [3.2], [4.2]])
    x, y = gaussian_classes(centres, 400, dims=1, spread=0.5, seed=1)
    g = _fit(x, y)
    bc_leaf_gap = np.exp(-((g.means[1, 0] - g.means[2, 0]) ** 2) / (8 * 0.25))
    tree, report = build_overlap(x, y, g, 0.2)
    assert bc_leaf_gap < 0.2  # neighbours across the gap do not overlap as leaves
    assert frozenset({0, 1}) in _groups(tree) and frozenset({2, 3}) in _groups(tree)
    assert len(report.levels) >= 2


def test_threshold_outside_the_unit_interval_is_refused(five_classes) -> None:
    x, y = five_classes
    for t in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="outside"):
            build_overlap(x, y, _fit(x, y), t)


def test_ward_pairs_the_close_means() -> None:
    means = np.array([[0.0], [1.0], [10.0], [11.0]])
    tree = build_ward(means, ["a", "b", "c", "d"])
    assert tree.num_nodes == 7
    assert _groups(tree) == {frozenset({0, 1}), frozenset({2, 3}), frozenset(range(4))}
    assert tree.node_names[-1].startswith("ward")


def test_given_taxonomy(tmp_path) -> None:
    path = tmp_path / "tax.txt"
    path.write_text("10 1\n10 2\n11 10\n11 3\n")  # 1-based leaves
    tree = build_given(path, ["x", "y", "z"], 3)
    assert tree.ancestors(1) == [1, 3, 4]
    with pytest.raises(InputError):
        build_given(path, ["x", "y", "z", "w"], 4)
