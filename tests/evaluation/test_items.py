"""``evaluation.items``: the database leaves an evaluation ranks with are the ones ingest stores."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.subclasses import split_classes
from hierqdrant.evaluation.items import Items, database_leaves, stored_leaf_mode
from tests.core.test_subclasses import _two_modes


def test_label_leaves_of_a_sub_class_model_are_sub_classes_of_the_label() -> None:
    x, y, hidden = _two_modes()
    split = split_classes(x, y, np.arange(2))
    model = HierarchyModel.fit(x, split.labels, class_names=["one", "two"], subclass_of=split.subclass_of)
    items = Items(model.transform(x), y, [str(i) for i in range(len(y))])
    leaves = database_leaves(model, items, "label")
    # leaves index the 3 sub-classes (not the 2 classes), each inside the item's class, one per hidden mode
    np.testing.assert_array_equal(leaves, model.database_leaves(x, y))
    np.testing.assert_array_equal(model.class_of_leaf(leaves), y)
    assert {int(leaves[hidden == m][0]) for m in (1, 2)} == {1, 2}
    plain = HierarchyModel.fit(x, y)
    np.testing.assert_array_equal(database_leaves(plain, Items(plain.transform(x), y, items.ids), "label"), y)
    with pytest.raises(InputError, match="no label"):
        database_leaves(model, Items(items.z, np.where(y > 0, y, -1), items.ids), "label")


def test_stored_leaf_mode_is_the_models_when_both_explain_the_leaves() -> None:
    x, y, _ = _two_modes()
    split = split_classes(x, y, np.arange(2))
    for leaf_from in ("label", "predicted"):
        model = HierarchyModel.fit(
            x, split.labels, class_names=["one", "two"], subclass_of=split.subclass_of, leaf_from=leaf_from
        )
        z = model.transform(x)
        stored = model.database_leaves(x, y)  # separable: the label's sub-class is the predicted one
        assert np.array_equal(stored, model.assign(z, projected=True))
        assert stored_leaf_mode(model, Items(z, y, [str(i) for i in range(len(y))], stored)) == leaf_from
