"""Tuning t and α on a validation split of the training items."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.settings import FitSettings
from hierqdrant.evaluation.items import Items
from hierqdrant.evaluation.ranking import evaluate_arrays
from hierqdrant.evaluation.tuning import TuneSettings, prepare_methods, tune
from tests.conftest import gaussian_classes

CENTRES = np.array([[0.0, 0.0], [0.9, 0.0], [7.0, 7.0], [7.7, 7.0], [3.0, -9.0]])


@pytest.fixture(scope="module")
def train() -> tuple[np.ndarray, np.ndarray]:
    return gaussian_classes(CENTRES, per_class=40, dims=5, seed=11)


def test_tune_picks_the_best_grid_point_and_stores_it(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    grids = TuneSettings(thresholds=[0.05, 0.3, 0.9], alphas=[0.0, 0.5, 2.0])
    result = tune(x, y, [f"c{i}" for i in range(5)], settings=grids)
    assert len(result.rows) == 9
    scores = [r.score for r in result.rows]
    assert result.best_score == max(scores)
    best = result.rows[scores.index(max(scores))]
    assert (result.best_threshold, result.best_alpha) == (best.threshold, best.alpha)
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


def test_tune_is_deterministic_and_the_seed_matters(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    settings = TuneSettings(thresholds=[0.1, 0.5], alphas=[0.5, 2.0], seed=1, protocol="loo")
    a = tune(x, y, settings=settings)
    b = tune(x, y, settings=settings)
    assert [r.score for r in a.rows] == [r.score for r in b.rows]
    assert a.model.model_id == b.model.model_id
    c = tune(x, y, settings=TuneSettings(thresholds=[0.1, 0.5], alphas=[0.5, 2.0], seed=2, protocol="loo"))
    assert [r.score for r in a.rows] != [r.score for r in c.rows]


def test_tune_on_a_base_model_keeps_its_pca(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    base = HierarchyModel.fit(x, y, threshold=0.3, alpha=3.0)
    grids = TuneSettings(thresholds=[0.05, 0.5], alphas=[1.0])
    result = tune(base.transform(x), y, base_model=base, projected=True, settings=grids)
    assert np.array_equal(result.model.projection.components, base.projection.components)
    assert np.array_equal(result.model.gaussians.means, base.gaussians.means)
    assert result.model.alpha == 1.0


def test_ward_and_given_tune_alpha_only(train: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = train
    ward = tune(
        x, y, fit=FitSettings(builder="ward"), settings=TuneSettings("map@r", thresholds=[0.1, 0.2], alphas=[0.5, 1.0])
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
    settings = TuneSettings(thresholds=[0.05, 0.5], alphas=[0.5, 2.0])
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
