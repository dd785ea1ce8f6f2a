"""Evaluation protocols without leakage: folds, which protocol applies, and that a query never shapes the
model that ranks it (spies on every model fit and every ranking, on the NumPy path and through an engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hierqdrant.core.features import FeatureSet
from hierqdrant.core.model import HierarchyModel
from hierqdrant.evaluation.items import Items
from hierqdrant.evaluation.methods import Method
from hierqdrant.evaluation.protocols import assign_folds, fit_index, merge_results, query_folds
from hierqdrant.evaluation.ranking import evaluate_arrays
from hierqdrant.evaluation.run import EvalPlan, run_eval
from hierqdrant.evaluation.tuning import TuneSettings
from tests.conftest import gaussian_classes

CENTRES = np.array([[0.0, 0.0], [1.0, 0.0], [7.0, 7.0], [7.6, 7.0], [3.0, -9.0]])


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 classes × 30 (train 24 / test 6 per class)."""
    x, y = gaussian_classes(CENTRES, per_class=30, dims=5, seed=0)
    splits = np.where(np.arange(len(y)) % 30 < 24, "train", "test")
    path = tmp_path_factory.mktemp("protocols") / "f.npz"
    FeatureSet(
        x, y, classes=[f"k{i}" for i in range(5)], paths=[f"{i}.jpg" for i in range(len(y))], splits=list(splits)
    ).save(path)
    return path


def test_folds_are_stratified_balanced_and_seeded() -> None:
    y = np.repeat(np.arange(4), [10, 7, 3, 1])
    folds = assign_folds(y, 5, seed=3)
    assert np.array_equal(folds, assign_folds(y, 5, seed=3))
    assert not np.array_equal(folds, assign_folds(y, 5, seed=4))
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for c in range(4):  # each class dealt round the folds: at most one more in one fold than in another
        per = np.bincount(folds[y == c], minlength=5)
        assert per.max() - per.min() <= 1
    match = np.array([2, -1, 20, -1])
    q = query_folds(match, folds, 5, seed=3)
    assert q[0] == folds[2] and q[2] == folds[20] and ((0 <= q) & (q < 5)).all()
    assert fit_index(["a", "x", "c"], ["c", "a"]).tolist() == [1, -1, 0]
    assert fit_index(["a"], ["a"], same_origin=False).tolist() == [-1]


def test_merge_puts_fold_scores_back_in_query_order() -> None:
    z = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    items = Items(z, np.array([0, 0, 1, 1]), ["a", "b", "c", "d"])
    whole = evaluate_arrays(items, items, [Method("cosine")], num_classes=2, ks=(1,))
    parts = [
        (
            np.array([0, 2]),
            evaluate_arrays(items.subset(np.array([0, 2])), items, [Method("cosine")], num_classes=2, ks=(1,)),
        ),
        (
            np.array([1, 3]),
            evaluate_arrays(items.subset(np.array([1, 3])), items, [Method("cosine")], num_classes=2, ks=(1,)),
        ),
    ]
    merged = merge_results(parts, 4)
    for key, values in whole.per_query["cosine"].items():
        assert np.array_equal(merged.per_query["cosine"][key], values, equal_nan=True)
    assert merged.metrics == whole.metrics and merged.queries == 4


def _spy_fits(monkeypatch: pytest.MonkeyPatch) -> dict[int, set[bytes]]:
    """Every HierarchyModel.fit: the id of its Gaussians → the raw feature rows it was fitted on."""
    fitted: dict[int, set[bytes]] = {}
    real = HierarchyModel.fit.__func__  # type: ignore[attr-defined]

    def spy(cls: type, features: np.ndarray, *args: Any, **kwargs: Any) -> HierarchyModel:
        model = real(cls, features, *args, **kwargs)
        fitted[id(model.gaussians)] = {row.tobytes() for row in np.asarray(features, dtype=np.float64)}
        return model

    monkeypatch.setattr(HierarchyModel, "fit", classmethod(spy))
    return fitted


@pytest.mark.parametrize("tuning", [None, TuneSettings(thresholds=[0.1, 0.5], alphas=[1.0, 2.0], pcas=[0.95, None])])
def test_cross_fitting_never_ranks_a_query_with_a_model_fitted_on_it(
    npz: Path, monkeypatch: pytest.MonkeyPatch, tuning: TuneSettings | None
) -> None:
    """Leave-one-out over the training split (the items the model is fitted on): every ranking with a
    model gets queries none of which is among that model's fitting rows — PCA, Gaussians, tree and the
    tuning included — and the database items get their leaves from that same model."""
    import hierqdrant.evaluation.run_files as run_files

    fitted = _spy_fits(monkeypatch)
    ranked: list[tuple[int, int]] = []  # (queries, methods with a model) per ranking
    real_eval = run_files.evaluate_arrays

    def spy_eval(queries: Items, database: Items, methods: list[Method], **kwargs: Any) -> Any:
        for m in methods:
            if m.model is None:
                continue
            rows = fitted[id(m.model.gaussians)]
            assert queries.raw is not None
            leaked = [r.tobytes() in rows for r in np.asarray(queries.raw, dtype=np.float64)]
            assert not any(leaked), f"{sum(leaked)} queries were in the fit of {m.key}'s model"
        ranked.append((len(queries), sum(m.model is not None for m in methods)))
        return real_eval(queries, database, methods, **kwargs)

    monkeypatch.setattr(run_files, "evaluate_arrays", spy_eval)
    methods = ["cosine-raw", "cosine", "hierarchy-only", "overlap", "ward"]
    plan = EvalPlan(db=str(npz), db_split="train", methods=methods, ks=(1, 5), mahp_ks=(5,), hdist_ks=(5,),
                    tuning=tuning, folds=4)  # fmt: skip
    report = run_eval(plan)
    assert report.protocol == "cross-fitting"
    out = report.to_dict()
    assert out["ranking"] == "leave-one-out" and out["protocol"] == "cross-fitting"
    assert out["cross_fitting"]["folds"] == 4 and len(out["cross_fitting"]["per_fold"]) == 4
    assert sum(f["queries"] for f in out["cross_fitting"]["per_fold"]) == 120
    assert sum(q for q, n in ranked if n) == 120  # every query ranked once by a fold's model
    assert any("cross-fitting, 4 folds" in n for n in report.notes)
    assert list(report.result.metrics) == methods
    if tuning is not None:
        assert len(out["tuning"]["overlap"]["folds"]) == 4


def test_cross_fitting_is_honest_where_leave_one_out_on_the_fitted_items_is_not(tmp_path: Path) -> None:
    """Pure noise (random features, balanced labels): nothing can be retrieved. Fitted on the queries,
    the per-class Gaussians (the paper's Mahalanobis leaves) still "recognise" them and overlap looks far
    better than chance; cross-fitted, it is at chance like cosine."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 40)), np.repeat(np.arange(10), 30)
    path = tmp_path / "noise.npz"
    FeatureSet(x, y, classes=[f"c{i}" for i in range(10)], paths=[f"{i}.jpg" for i in range(300)]).save(path)
    common = {"db": str(path), "methods": ["cosine", "overlap"], "pca": None, "ks": (1,),
              "query_classifier": "mahalanobis", "leaf_from": "predicted"}  # fmt: skip
    honest = run_eval(EvalPlan(**common))  # type: ignore[arg-type]
    leaky = run_eval(EvalPlan(**common, protocol="loo-leaky"))  # type: ignore[arg-type]
    assert honest.protocol == "cross-fitting" and leaky.protocol == "loo-leaky"
    assert leaky.result.metrics["overlap"]["map@r"] > 0.3
    assert honest.result.metrics["overlap"]["map@r"] < 0.1
    assert any("loo-leaky" in w and "optimistic" in w for w in leaky.warnings)
    assert any("leaf accuracy" in w and "cross-fitted" in w for w in honest.warnings)


def test_the_honest_protocols_are_named(npz: Path) -> None:
    short = {"methods": ["cosine", "overlap"], "ks": (1,), "mahp_ks": (5,)}
    held_out = run_eval(EvalPlan(db=str(npz), db_split="train", queries=npz, query_split="test", **short))  # type: ignore[arg-type]
    assert held_out.protocol == "queries-vs-database" and "cross_fitting" not in held_out.to_dict()
    paper = run_eval(EvalPlan(db=str(npz), db_split="test", fit=npz, fit_split="train", **short))  # type: ignore[arg-type]
    assert paper.protocol == "leave-one-out" and paper.to_dict()["ranking"] == "leave-one-out"
    assert any("the paper's protocol" in n for n in paper.notes)
    assert any("(k − 1)/k" in n and "0.8000 at k = 5" in n for n in paper.notes)
    forced = run_eval(EvalPlan(db=str(npz), db_split="test", protocol="cross-fit", folds=3, **short))  # type: ignore[arg-type]
    assert forced.protocol == "cross-fitting" and forced.to_dict()["cross_fitting"]["folds"] == 3


def test_cross_fitting_through_a_collection_never_uses_a_query_in_its_fold_model(
    npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hierqdrant.evaluation.run_collection as run_collection
    from hierqdrant.store.collection import create_collection, upsert_points
    from hierqdrant.store.engines import EdgeEngine

    data = FeatureSet.load(npz)
    assert data.labels is not None and data.paths is not None and data.splits is not None
    model = HierarchyModel.fit(data.features, data.labels, class_names=data.classes)
    engine = EdgeEngine(tmp_path / "store")
    create_collection(engine, "pics", model)
    upsert_points(engine, "pics", model, data.features, data.paths, labels=data.labels, splits=data.splits)
    engine.close()
    fold_fits: dict[int, set[bytes]] = {}
    real_fold, real_search = run_collection.fold_model, run_collection.evaluate_collection

    classifiers: set[int] = set()

    def spy_fold(stored: HierarchyModel, fit_z: np.ndarray, fit_y: np.ndarray) -> HierarchyModel:
        m = real_fold(stored, fit_z, fit_y)
        fold_fits[id(m.gaussians)] = {np.round(r, 9).tobytes() for r in fit_z}
        classifiers.add(id(m.classifier))
        return m

    def spy_search(engine: Any, collection: str, queries: Items, methods: list[Method], **kwargs: Any) -> Any:
        for m in methods:
            if m.model is not None:
                rows = fold_fits[id(m.model.gaussians)]
                assert not any(np.round(r, 9).tobytes() in rows for r in queries.z)
                # The query classifier too is the fold's (the stored one was fitted on every training point).
                assert m.model.classifier is None or id(m.model.classifier) in classifiers
        return real_search(engine, collection, queries, methods, **kwargs)

    monkeypatch.setattr(run_collection, "fold_model", spy_fold)
    monkeypatch.setattr(run_collection, "evaluate_collection", spy_search)
    report = run_eval(
        EvalPlan(db="pics", methods=["cosine-raw", "cosine", "overlap"], ks=(1,), folds=3),
        connect=lambda: EdgeEngine(tmp_path / "store"),
    )
    assert report.protocol == "cross-fitting" and len(fold_fits) == 3
    assert model.query_classifier != "tied" or len(classifiers) == 3
    assert list(report.result.metrics) == ["cosine", "overlap"]  # cosine-raw: no raw features in a collection
    assert any("cosine-raw skipped" in w for w in report.warnings)
    assert report.result.queries == 150 and report.to_dict()["ranking"] == "leave-one-out"


def test_raw_baselines_alone_rank_the_raw_features(npz: Path) -> None:
    """cosine-raw needs no model: the same scores under every protocol, and equal to cosine on the raw
    features ranked directly."""
    data = FeatureSet.load(npz)
    assert data.labels is not None
    for extra in ({"db_split": "train"}, {"db_split": "test"}):
        report = run_eval(EvalPlan(db=str(npz), methods=["cosine-raw", "euclidean-raw"], ks=(1, 5), **extra))  # type: ignore[arg-type]
        assert list(report.result.metrics) == ["cosine-raw", "euclidean-raw"]
        rows = np.flatnonzero(np.asarray(data.splits) == extra["db_split"])
        items = Items(np.zeros((rows.size, 0)), data.labels[rows], [str(i) for i in rows], raw=data.features[rows])
        direct = evaluate_arrays(items, items, [Method("cosine-raw")], num_classes=5, ks=(1, 5), mahp_ks=())
        assert report.result.metrics["cosine-raw"]["map@5"] == pytest.approx(direct.metrics["cosine-raw"]["map@5"])
