"""HierarchyModel: fit, assign, distance, save/load, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.model import ARRAYS, MANIFEST, HierarchyModel


@pytest.fixture
def model(five_classes) -> HierarchyModel:
    x, y = five_classes
    return HierarchyModel.fit(x, y, class_names=list("abcde"), threshold=0.3, alpha=2.0)


def test_fit_assign_and_ancestors(model: HierarchyModel, five_classes) -> None:
    x, y = five_classes
    leaves = model.assign(x)
    assert leaves.shape == y.shape
    # The far class and the two pairs are separable; within a pair the classes overlap.
    assert (leaves[y == 4] == 4).all()
    assert np.isin(leaves[y <= 1], [0, 1]).all()
    assert model.ancestors(0)[0] == 0 and model.ancestors(0)[-1] == model.hierarchy.root
    assert model.class_names == list("abcde")
    assert model.summary()["leaves"] == 5


def test_distance_is_cosine_plus_scaled_lca_height(model: HierarchyModel, five_classes) -> None:
    x, _ = five_classes
    q, db = x[0], x[::37]
    d = model.distance(q, db)
    zq, zx = model.transform(q)[0], model.transform(db)
    cos = zx @ zq / (np.linalg.norm(zx, axis=1) * np.linalg.norm(zq))
    lq = model.assign(q)[0]
    h = model.hierarchy.lca_height_matrix()[lq, model.assign(db)]
    np.testing.assert_allclose(d, 1 - cos + 2.0 * h / model.tree_height)
    np.testing.assert_allclose(model.distance(q, db, alpha=0), 1 - cos)
    with pytest.raises(InputError, match="alpha"):
        model.distance(q, db, alpha=-1)


def test_three_images_per_class_in_50_dims_fits_and_assigns() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((3, 50)) + 4 * c for c in range(6)])
    y = np.repeat(np.arange(6), 3)
    m = HierarchyModel.fit(x, y, n_components=None)
    assert m.dims > 3  # more dims than images per class: only shrinkage makes Σ invertible
    assert (m.assign(x) == y).mean() > 0.8


def test_save_load_same_assignments_and_id(model: HierarchyModel, five_classes, tmp_path) -> None:
    x, _ = five_classes
    model.save(tmp_path / "m")
    back = HierarchyModel.load(tmp_path / "m")
    assert back.model_id == model.model_id
    np.testing.assert_array_equal(back.assign(x), model.assign(x))
    assert back.hierarchy.same_shape(model.hierarchy)
    assert back.alpha == 2.0


def test_model_id_is_a_content_hash(model: HierarchyModel, five_classes) -> None:
    x, y = five_classes
    again = HierarchyModel.fit(x, y, class_names=list("abcde"), threshold=0.3, alpha=2.0)
    assert again.model_id == model.model_id
    assert model.with_alpha(1.0).model_id != model.model_id


def test_corrupt_truncated_or_foreign_files_are_refused(model: HierarchyModel, tmp_path) -> None:
    files = model.to_files()
    with pytest.raises(InputError, match="corrupt or truncated"):
        HierarchyModel.from_files({**files, ARRAYS: files[ARRAYS][: len(files[ARRAYS]) // 2]})
    with pytest.raises(InputError, match="not valid JSON"):
        HierarchyModel.from_files({**files, MANIFEST: files[MANIFEST][:-20]})
    with pytest.raises(InputError, match="not a hierqdrant model"):
        HierarchyModel.from_files({**files, MANIFEST: json.dumps({"hello": 1}).encode()})
    other = HierarchyModel.fit(np.random.default_rng(1).standard_normal((40, 6)), np.repeat([0, 1], 20))
    with pytest.raises(InputError, match="does not match"):
        HierarchyModel.from_files({MANIFEST: files[MANIFEST], ARRAYS: other.to_files()[ARRAYS]})
    with pytest.raises(NotFoundError):
        HierarchyModel.load(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        (np.full((10, 3), np.nan), np.repeat([0, 1], 5), {}, "NaN"),
        (np.ones((10, 3)), np.zeros(10, dtype=int), {}, "at least 2 classes"),
        (np.ones((10, 3)), np.repeat([0, 5], 5), {"class_names": ["a", "b"]}, "out of range"),
        (np.ones((10, 3)), np.repeat([0, 1], 4), {}, "labels for 10"),
        (np.ones((10, 3)), np.repeat([0, 1], 5), {"threshold": 0}, "outside"),
        (np.ones((10, 3)), np.repeat([0, 1], 5), {"builder": "magic"}, "unknown builder"),
        (np.ones((10, 3)), np.repeat([0, 1], 5), {"builder": "given"}, "taxonomy"),
        (np.ones((10, 3)), np.repeat([0, 2], 5), {"class_names": ["a", "b", "c"]}, "no images"),
    ],
)
def test_bad_input_is_one_clear_error(x, y, kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        HierarchyModel.fit(x, y, **kwargs)


def test_single_image_class_uses_pooled_covariance() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal((20, 4)), rng.standard_normal((20, 4)) + 5, [[10, 10, 10, 10]]])
    y = np.array([0] * 20 + [1] * 20 + [2])
    m = HierarchyModel.fit(x, y, n_components=None)
    assert m.info["tied_classes"] == [2]
    assert m.assign(x[-1:])[0] == 2


def test_ward_and_given_builders(five_classes, tmp_path) -> None:
    x, y = five_classes
    ward = HierarchyModel.fit(x, y, builder="ward")
    assert ward.hierarchy.num_nodes == 9
    tax = tmp_path / "t.txt"
    tax.write_text("5 0\n5 1\n6 2\n6 3\n7 5\n7 6\n7 4\n")
    given = HierarchyModel.fit(x, y, builder="given", taxonomy=tax)
    assert given.hierarchy.ancestors(0) == [0, 5, 7]
    assert given.threshold is None


def test_refit_tree_keeps_pca_and_gaussians(model: HierarchyModel, five_classes) -> None:
    x, y = five_classes
    z = model.transform(x)
    flat = model.refit_tree(z, y, threshold=0.999, alpha=0.5)
    assert flat.tree_height == 1 and flat.alpha == 0.5 and flat.threshold == 0.999
    assert flat.projection is model.projection and flat.gaussians is model.gaussians
    assert flat.model_id != model.model_id
    same = model.refit_tree(z, y, threshold=0.3, alpha=2.0)
    assert same.model_id == model.model_id
    ward = model.refit_tree(x, y, builder="ward", projected=False)
    assert ward.builder == "ward" and ward.threshold is None and ward.hierarchy.num_nodes == 9


@pytest.mark.parametrize(
    "features",
    [
        np.ones((40, 6)),  # every image the same vector
        np.zeros((40, 6)),
        np.tile(np.random.default_rng(0).random((1, 512)).astype(np.float32), (40, 1)),  # a constant extractor
    ],
)
def test_features_without_variance_are_refused_at_fit(features: np.ndarray) -> None:
    """Issue 12 (7): constant features used to fit (and ingest with exit 0) with every stored vector zero."""
    labels = np.repeat([0, 1], 20)
    with pytest.raises(InputError) as err:
        HierarchyModel.fit(features, labels)
    assert str(err.value) == (
        "the features have zero variance after centring: all 40 images give the same vector — check the backbone "
        "and its weights (or the features file): a constant extractor cannot be indexed"
    )


def test_a_small_but_real_spread_still_fits() -> None:
    rng = np.random.default_rng(1)
    x = 1000.0 + 0.1 * rng.standard_normal((40, 6))  # a spread of 1e-4 of the size, far from the origin: real
    model = HierarchyModel.fit(x, np.repeat([0, 1], 20), threshold=0.3)
    assert not model.zero_rows(model.transform(x)).any()


def test_zero_rows_marks_queries_at_the_mean(model: HierarchyModel, five_classes) -> None:
    x, _ = five_classes
    mean = model.projection.mean
    rows = np.vstack([x[:3], mean, mean.astype(np.float32)])  # the mean, also as float32 features round it
    assert model.zero_rows(model.transform(rows)).tolist() == [False, False, False, True, True]
