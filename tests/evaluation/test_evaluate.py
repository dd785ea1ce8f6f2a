"""Evaluation: method definitions on hand-made data, protocols, and engine ↔ NumPy agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import Gaussians, Projection
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel
from hierqdrant.evaluation.collection import euclidean_vectors, evaluate_collection
from hierqdrant.evaluation.items import Items
from hierqdrant.evaluation.methods import METHODS, Method, build_methods, parse_per_method
from hierqdrant.evaluation.ranking import evaluate_arrays, rank
from hierqdrant.evaluation.scoring import Scoring, paired, parse_metric
from hierqdrant.store.collection import create_collection, point_id, upsert_points
from hierqdrant.store.engines import EdgeEngine
from tests.conftest import gaussian_classes


def hand_model(means: np.ndarray, parent: list[int], alpha: float = 1.0) -> HierarchyModel:
    """Identity PCA, unit covariances (so the Mahalanobis leaf is the nearest mean) and a given tree."""
    k, d = means.shape
    return HierarchyModel(
        projection=Projection(np.zeros(d), np.eye(d), np.full(d, 1.0 / d)),
        gaussians=Gaussians(means, np.stack([np.eye(d)] * k), np.full(k, 10), "ledoit-wolf", np.zeros(k, bool)),
        hierarchy=Hierarchy(np.asarray(parent), k, class_names=[f"c{i}" for i in range(k)]),
        alpha=alpha,
        threshold=0.3,
        builder="overlap",
    )


# Leaves 0 and 1 meet at node 3 (height 1); leaf 2 meets them at the root 4 (height 2 = H).
TREE = [3, 3, 4, 4, -1]
MEANS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


@pytest.fixture
def crafted() -> tuple[HierarchyModel, Items, Items]:
    """A query of leaf 0 at (1, 0) and four database items with fixed leaves:
    far (leaf 2, cos-dist ≈ 0.001), sib (leaf 1, 0.29), same (leaf 0, 1.98), same2 (leaf 0, 1.0)."""
    model = hand_model(MEANS, TREE)
    db = Items(
        np.array([[1.0, 0.05], [0.7, 0.7], [-1.0, 0.2], [0.0, 1.0]]),
        np.array([2, 1, 0, 0]),
        ["far", "sib", "same", "same2"],
        leaves=np.array([2, 1, 0, 0]),
    )
    query = Items(np.array([[1.0, 0.0]]), np.array([0]), ["q"])
    return model, query, db


def test_hierarchy_only_ranks_by_lca_height_alone(crafted: tuple[HierarchyModel, Items, Items]) -> None:
    model, query, db = crafted
    # h(LCA) = 0 for both leaf-0 items (same2 first: smaller cosine distance), then sib (1), far (2),
    # although far is by far the closest by cosine.
    got = rank(query, db, Method("hierarchy-only", model), 4)
    assert got.tolist() == [[3, 2, 1, 0]]


def test_cosine_and_ours_on_the_crafted_case(crafted: tuple[HierarchyModel, Items, Items]) -> None:
    model, query, db = crafted
    assert rank(query, db, Method("cosine"), 4).tolist() == [[0, 1, 3, 2]]
    # D = D_C + 1·h/2: sib 0.29 + 0.5 = 0.79, same2 1.0, far 0.001 + 1 = 1.001, same 1.98.
    assert rank(query, db, Method("overlap", model, alpha=1.0), 4).tolist() == [[1, 3, 0, 2]]
    # α = 0 is cosine again.
    assert rank(query, db, Method("overlap", model, alpha=0.0), 4).tolist() == [[0, 1, 3, 2]]


def test_euclidean_and_cosine_differ_on_a_crafted_case() -> None:
    # x1 points the query's way but is far; x2 is near but at 45°.
    db = Items(np.array([[10.0, 1.0], [0.5, 0.5]]), np.array([0, 1]), ["x1", "x2"])
    query = Items(np.array([[1.0, 0.0]]), np.array([0]), ["q"])
    assert rank(query, db, Method("cosine"), 2).tolist() == [[0, 1]]
    assert rank(query, db, Method("euclidean"), 2).tolist() == [[1, 0]]


def test_leave_one_out_excludes_the_query_by_id_and_pads() -> None:
    z = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    items = Items(z, np.array([0, 0, 1]), ["a", "b", "c"])
    got = rank(items, items, Method("cosine"), 3)
    for i, row in enumerate(got):
        assert i not in row.tolist()
    assert (got[:, 2] == -1).all()  # only two other items are left
    # A query that is not in the database keeps everything.
    other = Items(z[:1], np.array([0]), ["elsewhere"])
    assert rank(other, items, Method("cosine"), 3).tolist() == [[0, 1, 2]]


def test_protocols_and_r_under_leave_one_out() -> None:
    z = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    items = Items(z, np.array([0, 0, 1, 1]), list("abcd"))
    loo = evaluate_arrays(items, items, [Method("cosine")], num_classes=2, ks=(1, 3))
    assert loo.protocol == "leave-one-out"
    # R = 1 other item per class, found first: map@r = 1; map@3 = (1/3)·1 (one relevant at rank 1).
    assert loo.metrics["cosine"]["map@r"] == pytest.approx(1.0)
    assert loo.metrics["cosine"]["map@3"] == pytest.approx(1 / 3)
    queries = Items(z + 0.01, np.array([0, 0, 1, 1]), list("wxyz"))
    split = evaluate_arrays(queries, items, [Method("cosine")], num_classes=2, ks=(2,))
    assert split.protocol == "queries-vs-database"
    # R = 2 per class, both found first: map@2 = (1/2)(1 + 1) = 1.
    assert split.metrics["cosine"]["map@2"] == pytest.approx(1.0)
    assert split.metrics["cosine"]["map@r"] == pytest.approx(1.0)


def test_a_perfect_ranking_scores_one() -> None:
    rng = np.random.default_rng(0)
    directions = np.eye(3) * 10
    z = np.concatenate([d + 0.1 * rng.standard_normal((6, 3)) for d in directions])
    y = np.repeat(np.arange(3), 6)
    items = Items(z, y, [f"i{i}" for i in range(18)])
    model = hand_model(directions, [3, 3, 4, 4, -1])
    res = evaluate_arrays(
        items,
        items,
        [Method("cosine"), Method("euclidean"), Method("overlap", model, 2.0), Method("hierarchy-only", model)],
        num_classes=3,
        ks=(1, 5),
        scoring=Scoring.from_hierarchy(model.hierarchy, "hand tree"),
        mahp_ks=(5,),
    )
    for name, row in res.metrics.items():
        assert row["map@r"] == pytest.approx(1.0), name
        assert row["p@1"] == pytest.approx(1.0), name
        assert row["map@5"] == pytest.approx(1.0), name
        assert np.isnan(row["severity"])  # no mistake at rank 1
    assert res.scored_by == "hand tree"
    assert res.metrics["overlap"]["mahp@5"] == pytest.approx(4 / 5)  # a perfect ranking scores (k − 1)/k
    # Top 10 = 5 class mates (h 0), then 5 of the nearest class: h 1 for classes 0 and 1, h 2 for class 2.
    assert res.metrics["overlap"]["hdist@10"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert res.metrics["hierarchy-only"]["hdist@10"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)


def test_chunking_does_not_change_the_numbers() -> None:
    x, y = gaussian_classes(np.array([[0.0, 0.0], [1.0, 0.0], [6.0, 6.0]]), per_class=20, dims=4, seed=3)
    model = HierarchyModel.fit(x, y, threshold=0.2, alpha=1.0)
    items = Items(model.transform(x), y, [str(i) for i in range(len(y))])
    methods = build_methods(["euclidean", "cosine", "hierarchy-only", "overlap", "ward"], model, None, None)
    one = evaluate_arrays(items, items, methods, num_classes=3, ks=(1, 5, 10))
    many = evaluate_arrays(items, items, methods, num_classes=3, ks=(1, 5, 10), chunk_elements=7 * len(items))
    assert one.metrics == many.metrics


def test_euclidean_vectors_rank_like_euclidean_distance() -> None:
    rng = np.random.default_rng(1)
    db = rng.normal(size=(50, 5)) * rng.uniform(0.2, 3.0, size=(50, 1))
    q = rng.normal(size=(7, 5))
    x_aug, q_aug = euclidean_vectors(db, q)
    norms = np.linalg.norm(x_aug, axis=1)
    assert np.allclose(norms, norms[0])  # one norm for every item: cosine = scaled inner product
    cos = (q_aug / np.linalg.norm(q_aug, axis=1, keepdims=True)) @ (x_aug / norms[:, None]).T
    euclid = ((q[:, None, :] - db[None, :, :]) ** 2).sum(-1)
    assert (np.argsort(-cos, axis=1) == np.argsort(euclid, axis=1)).all()


def test_build_methods_trees_and_alphas() -> None:
    x, y = gaussian_classes(np.array([[0.0, 0.0], [0.8, 0.0], [6.0, 6.0], [6.5, 6.0]]), 25, 4, seed=2)
    base = HierarchyModel.fit(x, y, threshold=0.3, alpha=3.0)
    z = base.transform(x)
    taxonomy = Hierarchy(np.array([4, 4, 5, 5, 6, 6, -1]), 4)
    methods = build_methods(list(METHODS), base, z, y, alphas={"ward": 1.0}, threshold=0.05, taxonomy=taxonomy)
    by = {m.name: m for m in methods}
    assert [m.name for m in methods] == list(METHODS)
    assert by["overlap"].model is not None and by["overlap"].model.threshold == 0.05
    assert by["hierarchy-only"].model is by["overlap"].model
    assert by["ward"].alpha == 1.0 and by["overlap"].alpha == 3.0
    assert by["ward"].model is not None and by["ward"].model.builder == "ward"
    assert by["given"].model is not None and by["given"].model.hierarchy.same_shape(taxonomy)
    # The base's own t reuses the base model itself.
    assert build_methods(["overlap"], base, None, None)[0].model is base
    with pytest.raises(InputError, match="taxonomy"):
        build_methods(["given"], base, z, y)
    with pytest.raises(InputError, match="unknown method"):
        build_methods(["nearest"], base, z, y)
    with pytest.raises(InputError, match="threshold"):
        build_methods(["ward"], base, z, y, thresholds={"ward": 0.2})
    with pytest.raises(InputError, match="training points"):
        build_methods(["overlap"], base, None, None, threshold=0.1)


def test_parsers() -> None:
    assert parse_metric("map@10") == ("map", 10)
    assert parse_metric("MAP@R") == ("map@r", None)
    assert parse_metric("mahp@250") == ("mahp", 250)
    for bad in ("map@0", "map@x", "ndcg@10", "mahp@1"):
        with pytest.raises(InputError):
            parse_metric(bad)
    assert parse_per_method("3", "alpha") == (3.0, {})
    assert parse_per_method("overlap=3,ward=1", "alpha", 2.0) == (2.0, {"overlap": 3.0, "ward": 1.0})
    assert parse_per_method("2,given=0.5", "alpha") == (2.0, {"given": 0.5})
    with pytest.raises(InputError, match="unknown method"):
        parse_per_method("nope=1", "alpha")
    with pytest.raises(InputError, match="not a number"):
        parse_per_method("overlap=x", "alpha")


def test_paired_overlap_against_cosine() -> None:
    x, y = gaussian_classes(np.array([[0.0, 0.0], [1.0, 0.0], [6.0, 6.0], [6.6, 6.0]]), 20, 4, seed=5)
    model = HierarchyModel.fit(x, y, threshold=0.2, alpha=2.0)
    items = Items(model.transform(x), y, [str(i) for i in range(len(y))])
    res = evaluate_arrays(
        items, items, build_methods(["cosine", "overlap"], model, None, None), num_classes=4, ks=(10,)
    )
    tests = paired(res, metrics=("map@10", "map@r"), n_resamples=500)
    assert set(tests) == {"map@10", "map@r"}
    r = tests["map@10"]
    assert r.diff == pytest.approx(res.metrics["overlap"]["map@10"] - res.metrics["cosine"]["map@10"])
    assert r.n == len(items)
    with pytest.raises(InputError, match="paired"):
        paired(res, "ward", "cosine")


# ---------------------------------------------------------------------------------- through an engine


def test_collection_and_numpy_give_the_same_numbers(tmp_path: Path) -> None:
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [7.0, 7.0], [7.6, 7.0]])
    x, y = gaussian_classes(centres, per_class=12, dims=4, seed=4)
    model = HierarchyModel.fit(x, y, threshold=0.3, alpha=2.0)
    engine = EdgeEngine(tmp_path / "store")
    create_collection(engine, "c", model)
    keys = [f"img{i}" for i in range(len(y))]
    upsert_points(engine, "c", model, x, keys, labels=y)
    z = model.transform(x)
    db = Items(z, y, [point_id("c", key) for key in keys])
    # A taxonomy unlike the learned tree ({0, 2} and {1, 3}): 'given' needs a temporary copy.
    taxonomy = Hierarchy(np.array([4, 5, 4, 5, 6, 6, -1]), 4)
    methods = build_methods(list(METHODS), model, z, y, alphas={"ward": 0.5}, taxonomy=taxonomy)
    scoring = Scoring.from_hierarchy(taxonomy, "given")
    kw = {"ks": (1, 5, 10), "scoring": scoring, "mahp_ks": (10,), "hdist_ks": (5,)}
    # Leave-one-out over the collection.
    # upsert_points stored the model's database leaves (leaf_from: the labels); NumPy ranks with the same.
    numpy_loo = evaluate_arrays(db, db, methods, num_classes=4, leaf_from=model.leaf_from, **kw)  # type: ignore[arg-type]
    engine_loo = evaluate_collection(engine, "c", None, methods, **kw)  # type: ignore[arg-type]
    # New queries against the collection.
    xq, yq = gaussian_classes(centres, per_class=4, dims=4, seed=99)
    queries = Items(model.transform(xq), yq, [f"new{i}" for i in range(len(yq))])
    numpy_split = evaluate_arrays(queries, db, methods, num_classes=4, leaf_from=model.leaf_from, **kw)  # type: ignore[arg-type]
    engine_split = evaluate_collection(engine, "c", queries, methods, **kw)  # type: ignore[arg-type]
    for numpy_res, engine_res, protocol in (
        (numpy_loo, engine_loo, "leave-one-out"),
        (numpy_split, engine_split, "queries-vs-database"),
    ):
        assert numpy_res.protocol == engine_res.protocol == protocol
        assert set(engine_res.metrics) == set(METHODS)
        for name in METHODS:
            for key, value in numpy_res.metrics[name].items():
                assert engine_res.metrics[name][key] == pytest.approx(value, nan_ok=True), (protocol, name, key)
    assert "temporary" in engine_loo.settings["given"]["path"]
    assert "temporary" in engine_loo.settings["euclidean"]["path"]
    assert engine_loo.settings["overlap"]["path"] == "engine (HierarchicalSearcher)"
    assert engine.collections() == ["c"]  # the temporary copies are gone
    with pytest.raises(InputError, match="stores label leaves"):
        evaluate_collection(engine, "c", None, methods[:2], leaf_from="predicted")
    engine.close()
