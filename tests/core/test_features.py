"""The features .npz interchange format."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.features import FeatureSet


def test_round_trip(tmp_path) -> None:
    fs = FeatureSet(
        np.arange(12, dtype=np.float32).reshape(4, 3),
        labels=np.array([0, 1, 1, 0]),
        classes=["cat", "dog"],
        paths=["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
        splits=["train", "train", "test", "test"],
    )
    fs.save(tmp_path / "f.npz")
    back = FeatureSet.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(back.features, fs.features)
    assert back.labels is not None and back.labels.tolist() == [0, 1, 1, 0]
    assert back.classes == ["cat", "dog"] and back.paths == fs.paths and back.splits == fs.splits
    sub = back.subset(back.labels == 1)
    assert sub.paths == ["b.jpg", "c.jpg"] and len(sub) == 2


def test_unlabelled_features_load(tmp_path) -> None:
    np.savez(tmp_path / "u.npz", features=np.ones((3, 2)))
    fs = FeatureSet.load(tmp_path / "u.npz")
    assert fs.labels is None and fs.num_classes == 0


def test_bad_files(tmp_path) -> None:
    with pytest.raises(NotFoundError):
        FeatureSet.load(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable"):
        FeatureSet.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "nofeat.npz", x=np.ones(3))
    with pytest.raises(InputError, match="no 'features'"):
        FeatureSet.load(tmp_path / "nofeat.npz")
    np.savez(tmp_path / "obj.npz", features=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError):
        FeatureSet.load(tmp_path / "obj.npz")  # object arrays would need pickle: refused
    with pytest.raises(InputError, match="2-D"):
        FeatureSet(np.ones(3))
    with pytest.raises(InputError, match="paths for 2"):
        FeatureSet(np.ones((2, 2)), paths=["a"])
