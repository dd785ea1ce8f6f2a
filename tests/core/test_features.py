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
    with pytest.raises(InputError, match="is not a features .npz file"):
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


def _jpeg(path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format="JPEG")


@pytest.mark.parametrize(
    ("name", "make", "what"),
    [
        ("some.jpg", _jpeg, "it is a JPEG image"),
        ("photo.npz", _jpeg, "it is a JPEG image"),  # whatever the name says
        ("notes.npz", lambda p: p.write_text("a,b\n1,2\n"), "it is a text file"),
        ("empty.npz", lambda p: p.write_bytes(b""), "it is empty"),
        ("one.npz", lambda p: p.write_bytes(open_npy_bytes()), "it is a bare .npy array, not an .npz archive"),
        ("blob.npz", lambda p: p.write_bytes(bytes(range(200, 256)) * 4), "it is not a zip archive"),
    ],
)
def test_a_file_that_is_not_an_npz_says_what_it_is_and_what_to_pass(tmp_path, name, make, what) -> None:
    """Issue 12 (6): an image or a text file given as features says so in one line — never numpy's
    "allow_pickle" hint — and names what to pass instead."""
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as err:
        FeatureSet.load(path)
    message = str(err.value)
    assert message == (
        f"{path} is not a features .npz file ({what}) — pass an image folder or a features file made by "
        "`hierqdrant embed`"
    )
    assert "pickle" not in message and "\n" not in message
    with pytest.raises(InputError, match="pass a features file"):
        FeatureSet.load(path, fix="pass a features file")  # each command can say what it takes


def open_npy_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ones(3))
    return buf.getvalue()


def test_a_damaged_or_foreign_npz_is_one_line_without_the_pickle_hint(tmp_path) -> None:
    FeatureSet(np.ones((50, 40)) * np.arange(40)).save(tmp_path / "good.npz")
    whole = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"is a damaged or foreign .npz features file \(truncated or corrupt zip"):
        FeatureSet.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "obj.npz", features=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="Python objects; pickled data is never loaded") as err:
        FeatureSet.load(tmp_path / "obj.npz")
    assert "allow_pickle" not in str(err.value)
