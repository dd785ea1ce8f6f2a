"""Sub-class leaves (issue 15): the x-means split, the grafted tree, the model's map and its stored form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierqdrant.core.build import graft_subclasses
from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.subclasses import (
    SubclassMap,
    check_subclass_of,
    compact,
    false_negative_rates,
    split_classes,
    subclass_names,
)


def _two_modes(seed: int = 0, n: int = 120, d: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class 0 is one Gaussian; class 1 two clusters far apart along axis 0 (hidden: 0, 1, 2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3 * n, d))
    hidden = np.repeat([0, 1, 2], n)
    x[hidden == 1, 0] += 10.0
    x[hidden == 2, 0] -= 10.0
    x[hidden > 0, 1] += 20.0  # class 1 away from class 0
    return x, np.minimum(hidden, 1), hidden


def test_split_finds_the_clusters_of_a_two_mode_class_and_keeps_a_gaussian_one() -> None:
    x, y, hidden = _two_modes()
    split = split_classes(x, y, np.arange(2))
    assert split.subclass_of.tolist() == [0, 1, 1]
    # the two sub-classes of class 1 are exactly the hidden clusters
    for s in (1, 2):
        assert np.unique(hidden[split.labels == s]).size == 1
    assert np.array_equal(split.labels == 0, y == 0)
    again = split_classes(x, y, np.arange(2))  # seeded
    assert np.array_equal(again.labels, split.labels)


def test_only_candidates_are_split_and_a_group_may_split_again() -> None:
    x, y, _ = _two_modes()
    kept = split_classes(x, y, np.arange(2), candidates=[0])
    assert kept.subclass_of.tolist() == [0, 1] and np.array_equal(kept.labels, y)
    # a second round on the sub-classes: nothing left to split, the map still points at the classes
    first = split_classes(x, y, np.arange(2))
    second = split_classes(x, first.labels, first.subclass_of)
    assert second.subclass_of.tolist() == [0, 1, 1]


def test_small_classes_are_not_split() -> None:
    x, y, _ = _two_modes(n=12)
    assert split_classes(x, y, np.arange(2)).subclass_of.tolist() == [0, 1]


def test_maps_are_checked_and_compacted() -> None:
    with pytest.raises(InputError):
        check_subclass_of([0, 2])  # class 1 missing
    with pytest.raises(InputError):
        check_subclass_of([1, 0])  # not ordered by class
    got = compact(np.array([0, 2, 2, 3]), np.array([0, 0, 1, 1]))
    assert got.subclass_of.tolist() == [0, 1, 1] and got.labels.tolist() == [0, 1, 1, 2]
    with pytest.raises(InputError, match="every class"):
        compact(np.array([0, 1]), np.array([0, 0, 1]))
    assert subclass_names(["cat", "dog"], np.array([0, 0, 1])) == ["cat~1", "cat~2", "dog"]
    rates = false_negative_rates(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    assert rates[0] == 0.5 and rates[1] == 0.0 and np.isnan(rates[2])


def test_graft_puts_sub_classes_under_their_class_node() -> None:
    classes = Hierarchy(np.array([3, 3, 4, 4, -1]), 3, class_names=["a", "b", "c"])
    tree = graft_subclasses(classes, np.array([0, 0, 1, 2, 2, 2]), ["a~1", "a~2", "b", "c~1", "c~2", "c~3"])
    assert tree.num_leaves == 6 and tree.tree_height == classes.tree_height + 1
    a, c = tree.node_names.index("a"), tree.node_names.index("c")
    assert tree.parent[0] == tree.parent[1] == a and tree.parent[3] == tree.parent[4] == tree.parent[5] == c
    assert tree.parent[a] == tree.parent[2]  # a's node takes a's place next to b
    assert tree.lca_height_matrix()[0, 1] == 1 and tree.lca_height_matrix()[0, 2] == 2


@pytest.mark.parametrize("builder", ["overlap", "ward", "given"])
def test_a_model_with_sub_class_leaves(builder: str, tmp_path: Path) -> None:
    x, y, _ = _two_modes()
    split = split_classes(x, y, np.arange(2))
    tax = tmp_path / "tax.json"
    tax.write_text(Hierarchy(np.array([2, 2, -1]), 2, class_names=["one", "two"]).to_json())
    model = HierarchyModel.fit(
        x, split.labels, class_names=["one", "two"], subclass_of=split.subclass_of, builder=builder, taxonomy=tax
    )
    assert model.class_names == ["one", "two"] and model.leaf_names == ["one", "two~1", "two~2"]
    assert model.num_classes == 3 and model.hierarchy.node_names[3] == "two"
    assert model.subclass_marks() == {1: "sub-class of two", 2: "sub-class of two"}
    # a labelled item's leaf is the best sub-class of its own class
    leaves = model.database_leaves(x, y)
    assert np.array_equal(model.class_of_leaf(leaves), y) and np.array_equal(leaves, split.labels)
    # stored and read back: the same model (and id); the manifest names the classes and the map
    model.save(tmp_path / "m")
    back = HierarchyModel.load(tmp_path / "m")
    assert back.model_id == model.model_id and back.class_names == ["one", "two"]
    assert back.subclasses is not None and back.subclasses.subclass_of.tolist() == [0, 1, 1]
    assert model.summary()["classes"] == 2 and model.summary()["subclasses"] == 3


def test_a_model_without_sub_classes_keeps_its_manifest() -> None:
    x, y, _ = _two_modes()
    plain = HierarchyModel.fit(x, y)
    assert "subclasses" not in plain.to_files()["model.json"].decode() and plain.subclasses is None
    assert "subclasses" not in plain.summary()
    with pytest.raises(InputError):
        SubclassMap(["a"], np.array([0, 1]))


def test_collapsing_grafted_subclasses_gives_the_class_tree_back() -> None:
    """Scoring by class (mahp, hdist, severity) uses the class tree under a sub-class model's tree."""
    from hierqdrant.core.build import collapse_subclasses, graft_subclasses
    from hierqdrant.core.hierarchy import Hierarchy

    classes = list("abcde")
    tree = Hierarchy(np.array([5, 5, 6, 6, 7, 7, 8, 8, -1]), 5, class_names=classes)
    rng = np.random.default_rng(3)
    for _ in range(20):
        sub = np.sort(np.concatenate([np.arange(5), rng.integers(0, 5, rng.integers(0, 6))]))
        names = [f"s{i}" for i in range(sub.size)]
        grafted = graft_subclasses(tree, sub, names)
        back = collapse_subclasses(grafted, sub, classes)
        assert np.array_equal(back.parent, tree.parent), sub
        assert np.array_equal(back.lca_height_matrix(), tree.lca_height_matrix())
        assert back.class_names == classes


def test_a_subclass_models_evaluation_is_scored_on_its_class_tree() -> None:
    from hierqdrant.core.model import HierarchyModel
    from hierqdrant.evaluation.scoring import class_tree

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [0.0, 6.0], [9.0, 0.0], [9.0, 6.0], [30.0, 30.0]])
    sub = np.repeat(np.arange(5), 20)
    x = np.hstack([centres[sub], np.zeros((sub.size, 1))]) + rng.standard_normal((sub.size, 3)) * 0.5
    model = HierarchyModel.fit(x, sub, class_names=["a", "b", "c"], subclass_of=[0, 0, 1, 1, 2], n_components=None)
    tree = class_tree(model)
    assert tree.num_leaves == 3 and tree.class_names == ["a", "b", "c"]
    lca = tree.lca_height_matrix()
    assert (np.diag(lca) == 0).all() and lca[0, 1] == lca[1, 0] >= 1
    plain = HierarchyModel.fit(x, sub, n_components=None)
    assert class_tree(plain) is plain.hierarchy


def test_one_class_split_into_sub_classes_is_still_one_class() -> None:
    x, y, _ = _two_modes()
    one = np.flatnonzero(y == 1)
    split = split_classes(x[one], np.zeros(one.size, np.int64), np.arange(1))
    assert split.num_subclasses == 2
    for builder in ("overlap", "ward"):
        with pytest.raises(InputError, match="at least 2 classes, the labels have 1"):
            HierarchyModel.fit(x[one], split.labels, subclass_of=split.subclass_of, builder=builder)
