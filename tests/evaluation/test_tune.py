"""Tuning t and α on a validation split of the training items."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.settings import FitSettings
from hierqdrant.evaluation.items import Items
from hierqdrant.evaluation.ranking import evaluate_arrays
from hierqdrant.evaluation.tuning import TuneSettings, prepare_methods, tune
from hierqdrant.evaluation.tuning import tune as tune_function
from tests.conftest import gaussian_classes

CENTRES = np.array([[0.0, 0.0], [0.9, 0.0], [7.0, 7.0], [7.7, 7.0], [3.0, -9.0]])


@pytest.fixture(scope="module")
def train() -> tuple[np.ndarray, np.ndarray]:
    return gaussian_classes(CENTRES, per_class=40, dims=5, seed=11)


def test_tune_picks_the_best_grid_point_and_stores_it(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    grids = TuneSettings(thresholds=[0.05, 0.3, 0.9], alphas=[0.0, 0.5, 2.0], pcas=[None], widen=False)
    result = tune(x, y, [f"c{i}" for i in range(5)], settings=grids)
    assert len(result.rows) == 18  # 3 t × 3 α for each of the two default query classifiers
    assert [r.classifier for r in result.rows] == ["tied"] * 9 + ["mahalanobis"] * 9
    scores = [r.score for r in result.rows]
    assert result.best_score == max(scores)
    best = result.rows[scores.index(max(scores))]  # ties: the first in grid order, tied before mahalanobis
    assert (result.best_threshold, result.best_alpha) == (best.threshold, best.alpha)
    assert result.best_classifier == best.classifier == result.model.query_classifier
    # α = 0 ranks by cosine alone: the cosine reference is the same number.
    for r in result.rows:
        if r.alpha == 0.0:
            assert r.score == pytest.approx(result.cosine_score)
    model = result.model
    assert model.threshold == result.best_threshold and model.alpha == result.best_alpha
    assert model.info["tuning"]["best_alpha"] == result.best_alpha
    assert model.info["tuning"]["val_size"] == result.val_size == 40  # 20 % of 5 × 40
    assert model.info["images"] == len(y)  # refitted on all the items
    assert result.to_dict()["grid"][0]["threshold"] == 0.05


def test_tune_searches_the_query_classifier_unless_it_is_pinned(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    grids = TuneSettings(thresholds=[0.3], alphas=[2.0], pcas=[None], widen=False)
    searched = tune(x, y, settings=grids)
    by_classifier = {r.classifier: r.score for r in searched.rows}
    assert set(by_classifier) == {"tied", "mahalanobis"}
    assert searched.best_classifier == max(by_classifier, key=lambda c: (by_classifier[c], c == "tied"))
    assert set(searched.classifier_accuracy) == {"tied", "mahalanobis"}
    # Pinned by the user (the CLI's --query-classifier, or --paper): one classifier, that one.
    pinned = tune(x, y, fit=FitSettings(query_classifier="mahalanobis", pinned=frozenset({"query_classifier"})),
                  settings=grids)  # fmt: skip
    assert {r.classifier for r in pinned.rows} == {"mahalanobis"}
    assert pinned.model.query_classifier == "mahalanobis"
    assert pinned.best_score == pytest.approx(by_classifier["mahalanobis"])
    paper = tune(x, y, fit=FitSettings.paper(), settings=replace(grids, pcas=None))
    assert {r.classifier for r in paper.rows} == {"mahalanobis"} and {r.pca for r in paper.rows} == {0.95}
    # An explicit grid wins; a head needs the network's layer.
    only_tied = tune(x, y, settings=replace(grids, classifiers=["tied"]))
    assert only_tied.best_classifier == "tied" and only_tied.best_score == pytest.approx(by_classifier["tied"])
    with pytest.raises(InputError, match="head"):
        tune(x, y, settings=replace(grids, classifiers=["head"]))


def test_tune_is_deterministic_and_the_seed_matters(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    settings = TuneSettings(thresholds=[0.1, 0.5], alphas=[0.5, 2.0], seed=1, protocol="loo", pcas=[0.95, None])
    a = tune(x, y, settings=settings)
    b = tune(x, y, settings=settings)
    assert [r.score for r in a.rows] == [r.score for r in b.rows]
    assert a.model.model_id == b.model.model_id
    c = tune(x, y, settings=replace(settings, seed=2))
    assert [r.score for r in a.rows] != [r.score for r in c.rows]


def test_tune_on_a_base_model_keeps_its_pca(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    base = HierarchyModel.fit(x, y, threshold=0.3, alpha=3.0)
    grids = TuneSettings(thresholds=[0.05, 0.5], alphas=[1.0])
    result = tune(base.transform(x), y, base_model=base, projected=True, settings=grids)
    assert np.array_equal(result.model.projection.components, base.projection.components)
    assert np.array_equal(result.model.gaussians.means, base.gaussians.means)
    assert result.model.alpha == 1.0


def test_tuning_on_a_fixed_pca_refits_the_query_classifier_on_the_fit_part(
    train: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection's model (PCA kept) was fitted on every training item, validation included: the model
    that is scored gets Gaussians and a tied classifier fitted on the fit part alone."""
    import hierqdrant.evaluation.tune_grid as tune_grid

    x, y = train
    base = HierarchyModel.fit(x, y, threshold=0.3, query_classifier="tied")
    z = base.transform(x)
    seen: list[int] = []
    real = tune_grid.fit_tied

    def spy(points: np.ndarray, labels: np.ndarray, *args: object) -> object:
        seen.append(points.shape[0])
        return real(points, labels, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(tune_grid, "fit_tied", spy)
    result = tune(z, y, base_model=base, projected=True, settings=TuneSettings(thresholds=[0.3], alphas=[1.0]))
    assert seen == [result.fit_size] and result.fit_size < len(y)


def test_ward_and_given_tune_alpha_only(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    ward = tune(
        x,
        y,
        fit=FitSettings(builder="ward"),
        settings=TuneSettings(
            "map@r", thresholds=[0.1, 0.2], alphas=[0.5, 1.0], pcas=[None], widen=False, classifiers=["tied"]
        ),
    )
    assert [r.threshold for r in ward.rows] == [None, None]
    assert ward.best_threshold is None and ward.model.builder == "ward"
    taxonomy = Hierarchy(np.array([5, 5, 6, 6, 7, 7, 7, -1]), 5)
    given = tune(
        x, y, fit=FitSettings(builder="given", taxonomy=taxonomy), settings=TuneSettings("p@1", alphas=[1.0, 3.0])
    )
    assert given.model.hierarchy.same_shape(taxonomy)


def test_tune_rejects_bad_settings(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    for kwargs, match in (
        ({"metric": "hdist@10"}, "cannot tune"),
        ({"metric": "mahp@10"}, "score"),
        ({"alphas": []}, "empty"),
        ({"thresholds": [1.5]}, "outside"),
        ({"alphas": [-1.0]}, "alpha"),
        ({"protocol": "test"}, "protocol"),
        ({"builder": "given"}, "taxonomy"),
        ({"val_share": 0.0}, "val_share"),
    ):
        fit = {k: v for k, v in kwargs.items() if k == "builder"}  # the rest are tuning settings
        rest = {k: v for k, v in kwargs.items() if k not in fit}
        with pytest.raises(InputError, match=match):
            tune(x, y, fit=FitSettings(**fit), settings=TuneSettings(**rest))  # type: ignore[arg-type]


def test_eval_tuning_never_sees_the_queries(
    train: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare_methods hands tune() the training points only; the choice does not depend on queries."""
    import hierqdrant.evaluation.tuning as tune_module

    x, y = train
    base = HierarchyModel.fit(x, y, threshold=0.3, alpha=3.0)
    z = base.transform(x)
    seen: list[np.ndarray] = []
    real = tune_module.tune

    def spy(features: np.ndarray, *args: object, **kwargs: object) -> object:
        seen.append(np.asarray(features).copy())
        return real(features, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tune_module, "tune", spy)
    settings = TuneSettings(thresholds=[0.05, 0.5], alphas=[0.5, 2.0], classifiers=["tied"])
    choices = []
    for seed in (1, 2):
        xq, yq = gaussian_classes(CENTRES, per_class=6, dims=5, seed=100 + seed)
        queries = Items(base.transform(xq), yq, [f"q{i}" for i in range(len(yq))])
        methods, tuned = prepare_methods(["cosine", "overlap", "ward"], base, z, y, tuning=settings)
        res = evaluate_arrays(queries, Items(z, y, [str(i) for i in range(len(y))]), methods, num_classes=5, ks=(5,))
        assert set(res.metrics) == {"cosine", "overlap", "ward"}
        choices.append({b: (r.best_threshold, r.best_alpha, r.best_score) for b, r in tuned.items()})
        for features in seen:
            assert features.shape == z.shape and np.array_equal(features, z)
            assert not (np.abs(features[:, None, :] - queries.z[None, :, :]).sum(-1) == 0).any()
    assert choices[0] == choices[1]
    # An explicit α pins that method's grid to it.
    methods, tuned = prepare_methods(["overlap"], base, z, y, alphas={"overlap": 0.25}, tuning=settings)
    assert [r.alpha for r in tuned["overlap"].rows] == [0.25, 0.25]
    assert methods[0].alpha == 0.25


# ---------------------------------------------------------------------------------------------------------
# the PCA grid and widening a grid whose edge wins


def test_tune_searches_the_pca_and_fits_the_gaussians_once_per_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve classes apart in 8 quiet dims, one loud dim of noise: 95 % (and 99 %) of the variance is
    the noise alone, so the search keeps every dim; 0.99 keeps the same one dim as 0.95 and is that space."""
    from hierqdrant.core.gaussian import Gaussians

    rng = np.random.default_rng(0)
    centres = np.zeros((12, 9))
    centres[:, 1:] = rng.standard_normal((12, 8)) * 1.5
    x, y = gaussian_classes(centres, per_class=30, dims=9, spread=0.5, seed=3)
    x[:, 0] = rng.standard_normal(x.shape[0]) * 40
    fits: list[int] = []
    real = Gaussians.fit.__func__  # type: ignore[attr-defined]

    def spy(cls: type, points: np.ndarray, *args: object, **kwargs: object) -> object:
        fits.append(points.shape[1])
        return real(cls, points, *args, **kwargs)

    monkeypatch.setattr(Gaussians, "fit", classmethod(spy))
    result = tune(x, y, settings=TuneSettings(thresholds=[0.1, 0.3], alphas=[0.5, 1.0], widen=False))
    assert result.pcas == [0.95, 0.99, None]
    assert result.best_pca is None and result.best_dims == 9
    assert sorted({(r.pca, r.dims) for r in result.rows}, key=str) == [(0.95, 1), (None, 9)]
    assert len(result.rows) == 2 * 2 * 2 * 2  # PCA spaces × t × α × query classifiers
    # One fit per PCA value (0.95, 0.99, all), shared by both classifiers; then the final model's.
    assert fits == [1, 1, 9, 9]
    assert result.model.dims == 9 and result.to_dict()["best_pca"] == "all"
    assert not any("PCA keeps" in w for w in result.warnings)  # all dims kept: nothing to warn about PCA
    assert result.model.info["tuning"]["best_pca"] == "all"
    pinned = tune(x, y, settings=TuneSettings(thresholds=[0.3], alphas=[1.0], pcas=[0.95]))
    assert pinned.best_dims == 1 and any("PCA keeps 1 dimensions for 12 classes" in w for w in pinned.warnings)


def test_an_edge_that_wins_widens_the_grid_once(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    base = TuneSettings(thresholds=[0.3], pcas=[None])
    # The paper's leaves, the classifier pinned: one grid per axis, as the assertions count.
    fit = FitSettings(query_classifier="mahalanobis", leaf_from="predicted", pinned=frozenset({"query_classifier"}))
    tune = partial(tune_function, fit=fit)
    # α keeps helping: widened to 0.6 and 1.2, still the edge → a warning that says so.
    r = tune(x, y, settings=replace(base, alphas=[0.0, 0.3]))
    assert r.widened == ["alpha-high"] and sorted({row.alpha for row in r.rows}) == [0.0, 0.3, 0.6, 1.2]
    assert r.best_alpha == 1.2
    assert any("α = 1.2 is the largest value" in w and "widened once" in w for w in r.warnings)
    # Widened once and the best moves inside: no warning.
    r = tune(x, y, settings=replace(base, alphas=[0.5, 1.0]))
    assert r.widened == ["alpha-high"] and r.best_alpha == 2.0
    assert not any("largest value" in w for w in r.warnings)
    # A plateau is no edge: α = 10 and 20 rank alike (one level outweighs any cosine), nothing widens.
    r = tune(x, y, settings=replace(base, alphas=[10.0, 20.0]))
    assert r.widened == [] and r.best_alpha == 10.0 and r.warnings == []
    # Without widening the edge is only reported.
    r = tune(x, y, settings=replace(base, alphas=[0.0, 0.3], widen=False))
    assert r.widened == [] and len(r.rows) == 2
    assert any("α = 0.3 is the largest value" in w and "outside the grid" in w for w in r.warnings)
    # t on its largest value: widened towards 1.
    r = tune(x, y, settings=replace(base, thresholds=[0.5, 0.9], alphas=[1.0]))
    assert r.widened == ["t-high"] and sorted({row.threshold for row in r.rows}) == [0.5, 0.9, 0.95, 1.0]


def test_widen_extends_each_axis_once_and_stops_at_limits() -> None:
    from hierqdrant.evaluation.tune_grid import widen

    p, t, a, grown = widen(
        ["pca-low", "t-low", "alpha-high"], (0.95, 0.01, 5.0), 19, [0.95, None], [0.01, 0.1], [1.0, 5.0], 64
    )
    assert p == [0.95, None, 0.9, 0.8] and t == [0.002, 0.005, 0.01, 0.1] and a == [1.0, 5.0, 10.0, 20.0]
    assert grown == ["t-low", "alpha-high", "pca-low"]
    p, _, a, grown = widen(["pca-low", "alpha-low"], (16, None, 0.5), 16, [16, 32], [None], [0.5, 1.0], 64)
    assert p == [16, 32, 8, 4] and a == [0.0, 0.25, 0.5, 1.0]
    # Limits: t = 1 cannot grow, every dim kept cannot grow, α = 0 cannot shrink.
    p, t, a, grown = widen(
        ["t-high", "pca-high", "alpha-low"], (None, 1.0, 0.0), 64, [0.95, None], [0.5, 1.0], [0.0, 1.0], 64
    )
    assert grown == [] and p == [0.95, None] and t == [0.5, 1.0] and a == [0.0, 1.0]
    _, _, _, grown = widen(["pca-high"], (0.99, 0.3, 1.0), 43, [0.95, 0.99], [0.3], [1.0], 64)
    assert grown == ["pca-high"]


def test_tune_with_a_splitter_finds_sub_classes_on_the_fit_part_and_ranks_by_class() -> None:
    from hierqdrant.core.subclasses import SubclassSplit, split_classes

    # Class 1 is two far-apart modes (hidden 1 and 2); class 0 is one.
    x, mode = gaussian_classes(np.array([[0.0, 0.0], [12.0, 0.0], [0.0, 12.0]]), per_class=60, dims=4, seed=5)
    y = np.minimum(mode, 1)
    seen: list[int] = []

    def splitter(points: np.ndarray, labels: np.ndarray) -> SubclassSplit:
        seen.append(points.shape[0])
        return split_classes(points, labels, np.arange(2))

    grids = TuneSettings(thresholds=[0.3], alphas=[0.0, 1.0], pcas=[None], widen=False)
    split = tune(x, y, ["one", "two"], settings=grids, splitter=splitter)
    assert seen == [split.fit_size, len(y)]  # the fit part while searching, every item for the final model
    model = split.model
    assert model.subclasses is not None and model.subclasses.subclass_of.tolist() == [0, 1, 1]
    assert model.class_names == ["one", "two"] and model.info["images"] == len(y)
    assert model.info["tuning"]["best_alpha"] == split.best_alpha
    # The leaf accuracy counts a sub-class as its class (as sub-class indices, mode 2 would all miss).
    assert all(a == 1.0 for a in split.classifier_accuracy.values())
    # Relevance is by class: cosine ranks the same validation queries as without sub-classes.
    plain = tune(x, y, ["one", "two"], settings=grids)
    assert split.cosine_score == pytest.approx(plain.cosine_score)
    assert split.fit_size == plain.fit_size and split.val_size == plain.val_size
    assert not any("the grid was scored with" in w for w in split.warnings)  # the fit part splits the same
    # ward and a given taxonomy (of the classes) work above the sub-classes too
    ward = tune(x, y, fit=FitSettings(builder="ward"), settings=grids, splitter=splitter)
    taxonomy = Hierarchy(np.array([2, 2, -1]), 2)
    given = tune(x, y, fit=FitSettings(builder="given", taxonomy=taxonomy), settings=grids, splitter=splitter)
    for tuned in (ward, given):
        assert tuned.model.leaf_names == ["0", "1~1", "1~2"] and tuned.model.tree_height == 2
    for base in (plain.model, model):  # a collection's fixed PCA: its sub-classes are not re-found there
        with pytest.raises(InputError, match="sub-class leaves is tuned where"):
            tune(x, y, settings=grids, base_model=base, splitter=splitter if base is plain.model else None)


def test_tune_warns_when_the_fit_part_splits_otherwise_than_all_items() -> None:
    from hierqdrant.core.subclasses import SubclassSplit

    x, y = gaussian_classes(np.array([[0.0, 0.0], [9.0, 0.0]]), per_class=40, dims=3, seed=2)

    def by_size(points: np.ndarray, labels: np.ndarray) -> SubclassSplit:
        # a split that depends on how many items it sees, as x-means' minimum cluster size does
        if points.shape[0] < len(y):
            return SubclassSplit(np.asarray(labels), np.arange(2))
        halves = np.where((labels == 1) & (np.arange(labels.size) % 2 == 1), 2, labels)
        return SubclassSplit(halves, np.array([0, 1, 1]))

    grids = TuneSettings(thresholds=[0.3], alphas=[1.0], pcas=[None], widen=False)
    result = tune(x, y, settings=grids, splitter=by_size)
    assert result.model.num_classes == 3
    assert any("scored with 2 sub-classes" in w and "the model has 3" in w for w in result.warnings)
