"""Leaf sources of a model (DESIGN.md §1.5): the query classifier (mahalanobis / tied / head) and where
stored images get their leaf (label / predicted) — fitted, stored, loaded, and models saved before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hierqdrant.core.classifiers import LinearClassifier, fit_tied
from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import NearestClass
from hierqdrant.core.model import ARRAYS, MANIFEST, HierarchyModel
from hierqdrant.core.settings import FitSettings
from tests.model_check import assert_same_model

OLD_MODEL = Path(__file__).parent / "data" / "model_v1"  # written by hierqdrant before leaf sources existed


def old_model_data() -> tuple[np.ndarray, np.ndarray]:
    """The features OLD_MODEL was fitted on (same seed and recipe as when it was written)."""
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(3), 12)
    x = rng.standard_normal((36, 4)) + np.array([[0, 0, 0, 0], [3, 0, 0, 0], [0, 3, 1, 0]])[y]
    return x, y


def mahalanobis_leaves(model: HierarchyModel, z: np.ndarray) -> np.ndarray:
    return NearestClass.of(*model.gaussians.whitening())(z)


def random_head(model: HierarchyModel, seed: int = 3) -> LinearClassifier:
    rng = np.random.default_rng(seed)
    return LinearClassifier(rng.standard_normal((model.num_classes, model.input_dims)), rng.standard_normal(5))


@pytest.fixture
def data(five_classes) -> tuple[np.ndarray, np.ndarray]:
    return five_classes


def test_defaults_are_tied_and_label_and_the_paper_is_mahalanobis_predicted_95(data) -> None:
    x, y = data
    model = HierarchyModel.fit(x, y)
    assert (model.query_classifier, model.leaf_from) == ("tied", "label")
    assert FitSettings().query_classifier == "tied" and FitSettings().leaf_from == "label"
    paper = FitSettings.paper(alpha=2.0, threshold=0.25)
    assert (paper.query_classifier, paper.leaf_from, paper.pca) == ("mahalanobis", "predicted", 0.95)
    assert paper.alpha == 2.0 and paper.threshold == 0.25 and paper.is_paper and not FitSettings().is_paper
    fitted = paper.fit_model(x, y)
    assert (fitted.query_classifier, fitted.leaf_from, fitted.classifier) == ("mahalanobis", "predicted", None)
    with pytest.raises(InputError, match="fixes pca"):
        FitSettings.paper(pca=None)


def test_tied_leaf_is_fit_tieds_prediction_on_the_pca_vectors(data) -> None:
    x, y = data
    model = HierarchyModel.fit(x, y, query_classifier="tied", covariance="oas")
    z = model.transform(x)
    want = fit_tied(z, y, 5, "oas")(z)
    np.testing.assert_array_equal(model.assign(x), want)
    np.testing.assert_array_equal(model.assign(z, projected=True), want)
    assert model.classifier is not None and model.classifier.weight.shape == (5, model.dims)


def test_mahalanobis_leaf_is_the_nearest_class_gaussian(data) -> None:
    x, y = data
    model = HierarchyModel.fit(x, y, query_classifier="mahalanobis")
    np.testing.assert_array_equal(model.assign(x), mahalanobis_leaves(model, model.transform(x)))


def test_head_leaf_is_the_argmax_of_the_linear_layer_on_raw_features(data) -> None:
    x, y = data
    base = HierarchyModel.fit(x, y, n_components=3)
    head = random_head(base)
    model = HierarchyModel.fit(x, y, n_components=3, query_classifier="head", head=head)
    want = (x @ head.weight.T + head.bias).argmax(axis=1)
    np.testing.assert_array_equal(model.assign(x), want)
    z = model.transform(x)
    np.testing.assert_array_equal(model.assign(z, projected=True, raw=x), want)  # the caller projected itself
    with pytest.raises(InputError, match="already projected vector cannot use it"):
        model.assign(z, projected=True)
    with pytest.raises(InputError, match="head query classifier needs the network's final layer"):
        HierarchyModel.fit(x, y, query_classifier="head")
    with pytest.raises(InputError, match="maps 6-d features to 4 classes"):
        HierarchyModel.fit(x, y, query_classifier="head", head=LinearClassifier(np.ones((4, 6)), np.zeros(4)))
    # the NumPy reference follows the head too
    d = model.distance(x[0], x[:40])
    lca = model.lca_height_matrix()[want[0], want[:40]]
    zq, zx = z[0], z[:40]
    cos = zx @ zq / (np.linalg.norm(zx, axis=1) * np.linalg.norm(zq))
    np.testing.assert_allclose(d, 1 - cos + model.alpha * lca / model.tree_height, atol=1e-12)


def test_classifier_arrays_round_trip_and_every_leaf_source_changes_the_model_id(data, tmp_path) -> None:
    x, y = data
    tied = HierarchyModel.fit(x, y)
    paper = tied.with_leaf_sources("mahalanobis", "predicted")
    head = tied.with_leaf_sources("head", head=random_head(tied))
    variants = [
        tied,
        paper,
        head,
        tied.with_leaf_sources(leaf_from="predicted"),
        paper.with_leaf_sources("mahalanobis", "label"),
    ]
    assert len({m.model_id for m in variants}) == len(variants)
    for i, m in enumerate(variants):
        back = HierarchyModel.load(m.save(tmp_path / str(i)))
        assert back.model_id == m.model_id
        assert (back.query_classifier, back.leaf_from) == (m.query_classifier, m.leaf_from)
        np.testing.assert_array_equal(back.assign(x), m.assign(x))
        if m.classifier is not None:
            assert back.classifier is not None
            np.testing.assert_array_equal(back.classifier.weight, m.classifier.weight)
            np.testing.assert_array_equal(back.classifier.bias, m.classifier.bias)
    # the stored manifest says it (the paper's sources are what a manifest without the keys means)
    manifest = json.loads(tied.to_files()[MANIFEST])
    assert manifest["query_classifier"] == "tied" and manifest["leaf_from"] == "label"
    assert {"classifier_weight", "classifier_bias"} <= set(manifest["arrays"])
    plain = json.loads(paper.to_files()[MANIFEST])
    assert "query_classifier" not in plain and "leaf_from" not in plain and "classifier_weight" not in plain["arrays"]
    assert tied.summary()["query_classifier"] == "tied" and paper.summary()["leaf_from"] == "predicted"


def test_a_model_saved_before_leaf_sources_loads_as_mahalanobis_with_its_id(tmp_path) -> None:
    x, _ = old_model_data()
    old = HierarchyModel.load(OLD_MODEL)
    assert old.model_id == json.loads((OLD_MODEL / MANIFEST).read_text())["model_id"] == "a53c4d6f7477fd39"
    assert (old.query_classifier, old.leaf_from, old.classifier) == ("mahalanobis", "predicted", None)
    assert old.assign(x).tolist() == [0] * 12 + [1] * 12 + [2] * 12  # what the old code assigned
    assert old.summary()["query_classifier"] == "mahalanobis"
    # saved again it keeps its format and id (its arrays as read, not refitted)
    again = HierarchyModel.load(old.save(tmp_path / "again"))
    assert again.model_id == old.model_id
    assert json.loads((tmp_path / "again" / MANIFEST).read_text()) == json.loads((OLD_MODEL / MANIFEST).read_text())
    # the same data fitted now with the paper's setting is the same model — up to the last bits of the
    # arrays, which another BLAS kernel computes otherwise (so its id may differ: ids hash the bytes)
    x, y = old_model_data()
    refit = HierarchyModel.fit(
        x,
        y,
        class_names=["ant", "bee", "cat"],
        n_components=None,
        alpha=2.0,
        query_classifier="mahalanobis",
        leaf_from="predicted",
    )
    assert_same_model(refit, old)
    assert old.with_leaf_sources("tied", points=x, labels=y, projected=False).model_id != old.model_id


def test_with_leaf_sources_fits_tied_and_refuses_what_it_cannot_know(data) -> None:
    x, y = data
    paper = HierarchyModel.fit(x, y, query_classifier="mahalanobis", leaf_from="predicted")
    with pytest.raises(InputError, match="pass points= and labels="):
        paper.with_leaf_sources("tied")
    tied = paper.with_leaf_sources("tied", points=x, labels=y, projected=False)
    np.testing.assert_array_equal(tied.assign(x), HierarchyModel.fit(x, y).assign(x))
    assert tied.leaf_from == "predicted" and tied.hierarchy is paper.hierarchy
    assert tied.with_leaf_sources("mahalanobis").classifier is None
    with pytest.raises(InputError, match="final layer"):
        paper.with_leaf_sources("head")
    with pytest.raises(InputError, match="unknown query classifier 'lda'"):
        paper.with_leaf_sources("lda")
    with pytest.raises(InputError, match="unknown leaf source 'both'"):
        HierarchyModel.fit(x, y, leaf_from="both")
    # refitting the tree (tuning t and α) keeps the leaf sources
    refit = tied.refit_tree(x, y, threshold=0.9, projected=False)
    assert refit.query_classifier == "tied" and refit.classifier is tied.classifier


def test_database_leaves_take_known_labels_and_predict_the_rest(data) -> None:
    x, y = data
    model = HierarchyModel.fit(x, y)
    predicted = model.assign(x)
    wrong = np.flatnonzero(predicted != y)
    assert wrong.size > 0  # the overlapping pairs make the classifier miss some
    labels: list[int | None] = [int(v) for v in y]
    labels[int(wrong[0])] = None  # unknown: predicted
    leaves = model.database_leaves(x, labels)
    want = y.copy()
    want[wrong[0]] = predicted[wrong[0]]
    np.testing.assert_array_equal(leaves, want)
    np.testing.assert_array_equal(model.database_leaves(x), predicted)
    np.testing.assert_array_equal(model.with_leaf_sources(leaf_from="predicted").database_leaves(x, labels), predicted)
    z = model.transform(x)
    np.testing.assert_array_equal(
        model.database_leaves(z, np.where(np.arange(len(y)) % 2, y, -1), projected=True),
        np.where(np.arange(len(y)) % 2, y, predicted),
    )
    with pytest.raises(InputError, match="class indices"):
        model.database_leaves(x, [9] * len(y))


def test_a_manifest_that_names_a_classifier_without_its_arrays_is_refused(data) -> None:
    x, y = data
    paper = HierarchyModel.fit(x, y, query_classifier="mahalanobis")
    files = paper.to_files()
    manifest = json.loads(files[MANIFEST])
    manifest["query_classifier"] = "tied"
    with pytest.raises(InputError, match="corrupt or truncated"):
        HierarchyModel.from_files({MANIFEST: json.dumps(manifest).encode(), ARRAYS: files[ARRAYS]})
    manifest["query_classifier"] = "svm"
    with pytest.raises(InputError, match="unknown leaf source"):
        HierarchyModel.from_files({MANIFEST: json.dumps(manifest).encode(), ARRAYS: files[ARRAYS]})
    with pytest.raises(InputError, match="needs its linear classifier"):
        HierarchyModel(paper.projection, paper.gaussians, paper.hierarchy, query_classifier="tied")
    with pytest.raises(InputError, match="maps 6-d vectors to 5 classes"):
        HierarchyModel(
            paper.projection,
            paper.gaussians,
            paper.hierarchy,
            query_classifier="tied",
            classifier=LinearClassifier(np.ones((5, 6)), np.zeros(5)),
        ) if paper.dims != 6 else pytest.fail("the fixture's PCA keeps every dim")
