"""Choose the overlap threshold t and the weight α on a validation split of the training images.

The labelled training items are split per class (stratified, seeded) into a *fit* part and a
*validation* part (``val_share``). PCA and the class Gaussians are fitted on the fit part only, so the
validation labels never shape the model that is scored. For every t in ``thresholds`` the overlap tree
is rebuilt from the fit part's Gaussians (ward and given: one tree), and for every α in ``alphas`` the
retrieval

    D(q, x) = (1 − cos(z_q, z_x)) + α · h(LCA(n_q, n_x)) / H

is scored on the validation images with one of two protocols:

* ``split`` — validation images are the queries, the fit part the database (new images searched in
  an ingested collection);
* ``loo`` — leave-one-out within the validation images (the paper's protocol on a test set).

The cosine similarities do not depend on t or α: :func:`hierqdrant.evaluation.ranking.evaluate_arrays`
computes them once per chunk of queries and scores the whole grid from them. The best (t, α) maximises
``metric`` (ties: the first in grid order, i.e. the smaller t, then the smaller α). The returned model
is then fitted on *all* the given items with that t and α, and records the search in
``model.info["tuning"]``. Nothing here reads the evaluation queries: the caller passes training data only.

:func:`prepare_methods` builds the methods of an evaluation, tuned this way when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hierqdrant.core import build as builders
from hierqdrant.core.errors import InputError
from hierqdrant.core.features import check_features, check_labels
from hierqdrant.core.gaussian import Gaussians
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel, check_alpha
from hierqdrant.core.settings import FitSettings
from hierqdrant.core.splits import stratified_split
from hierqdrant.evaluation.items import Items
from hierqdrant.evaluation.methods import HIERARCHICAL, Method, build_methods, check_method_names, overlap_threshold
from hierqdrant.evaluation.ranking import evaluate_arrays
from hierqdrant.evaluation.scoring import Scoring, parse_metric

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_THRESHOLDS",
    "PROTOCOLS",
    "Protocol",
    "TuneResult",
    "TuneRow",
    "TuneSettings",
    "check_grids",
    "check_tune_metric",
    "prepare_methods",
    "tune",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
DEFAULT_ALPHAS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
#: ``split``: validation queries against the fit part; ``loo``: leave-one-out within the validation items.
Protocol = Literal["split", "loo"]
PROTOCOLS: tuple[str, ...] = ("split", "loo")
TUNABLE: tuple[str, ...] = ("map", "map@r", "p@1", "mahp")
#: The validation split keeps two items of every class in the fit part: a Gaussian needs a spread.
MIN_FIT_PER_CLASS = 2


@dataclass(frozen=True)
class TuneSettings:
    """How t and α are chosen: the metric, the grids (None: the default grids), the validation split
    (``val_share``, ``seed``), the protocol and the cap on validation queries."""

    metric: str = "map@r"
    thresholds: Sequence[float] | None = None
    alphas: Sequence[float] | None = None
    val_share: float = 0.2
    seed: int = 0
    max_queries: int | None = 2000
    protocol: Protocol = "split"


@dataclass(frozen=True)
class TuneRow:
    """One grid point: t (None for ward / given), α, the validation score and the tree's shape."""

    threshold: float | None
    alpha: float
    score: float
    height: int
    nodes: int


@dataclass
class TuneResult:
    """The chosen ``best_threshold`` / ``best_alpha``, every grid row, and ``model``: fitted on all the
    given items with them (``model.threshold``, ``model.alpha``; the search in ``model.info["tuning"]``)."""

    best_threshold: float | None
    best_alpha: float
    best_score: float
    metric: str
    builder: str
    protocol: str
    rows: list[TuneRow]
    model: HierarchyModel
    cosine_score: float
    fit_size: int
    val_size: int
    queries: int
    val_share: float
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "builder": self.builder,
            "protocol": self.protocol,
            "best_threshold": self.best_threshold,
            "best_alpha": self.best_alpha,
            "best_score": _num(self.best_score),
            "cosine_score": _num(self.cosine_score),
            "fit_size": self.fit_size,
            "val_size": self.val_size,
            "queries": self.queries,
            "val_share": self.val_share,
            "seed": self.seed,
            "grid": [
                {
                    "threshold": r.threshold,
                    "alpha": r.alpha,
                    "score": _num(r.score),
                    "height": r.height,
                    "nodes": r.nodes,
                }
                for r in self.rows
            ],
            "model_id": self.model.model_id,
            **self.extra,
        }


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def check_tune_metric(metric: str, scoring: Scoring | None = None) -> tuple[str, int | None]:
    """The (kind, k) of a metric that tuning can maximise, or an InputError naming the choices."""
    kind, k = parse_metric(metric)
    if kind not in TUNABLE:
        raise InputError(f"cannot tune on {metric!r}", "tune on map@K, map@r, p@1 or mahp@K")
    if kind == "mahp" and scoring is None:
        raise InputError(f"tuning on {metric} needs a hierarchy to score it", "pass --score-taxonomy FILE")
    return kind, k


def check_grids(thresholds: Sequence[float], alphas: Sequence[float]) -> tuple[list[float], list[float]]:
    """Validated, de-duplicated t and α grids."""
    return _check_grid(thresholds, "thresholds", builders.check_threshold), _check_grid(alphas, "alphas", check_alpha)


def _check_grid(values: Sequence[float], what: str, check: Callable[[float], float]) -> list[float]:
    out: list[float] = []
    for v in values:
        c = check(float(v))
        if c not in out:
            out.append(c)
    if not out:
        raise InputError(f"the {what} grid is empty", f"pass at least one value with --{what}")
    return out


def _query_rows(n: int, max_queries: int | None, rng: np.random.Generator) -> np.ndarray:
    """All ``n`` validation rows, or a seeded sample of ``max_queries`` of them (ascending)."""
    rows = np.arange(n)
    if max_queries is not None and rows.size > max_queries:
        rows = np.sort(rng.choice(rows, size=int(max_queries), replace=False))
    return rows


def tune(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    fit: FitSettings | None = None,
    settings: TuneSettings | None = None,
    base_model: HierarchyModel | None = None,
    projected: bool = False,
    scoring: Scoring | None = None,
    extractor: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TuneResult:
    """Grid-search t and α on a validation split of ``features`` / ``labels`` (training items only).

    ``fit``: the builder (overlap: t and α are tuned; ward, given: α), its taxonomy, the leaf source
    of database items, and PCA / covariance of a model fitted here (its t and α are not used).
    ``settings``: the metric (``map@K``, ``map@r``, ``p@1``, or ``mahp@K`` with a ``scoring``
    hierarchy), the grids, the split, the protocol; ``max_queries`` caps the validation queries (a
    seeded subsample) to bound the cost.
    ``base_model``: keep its PCA (and class list) and refit only the class Gaussians and the tree —
    what a collection needs, whose stored vectors depend on the PCA (``features`` are then projected
    vectors when ``projected=True``). Without it, PCA and the Gaussians are fitted on the fit part, and
    the final model on all items.
    """
    fit = fit if fit is not None else FitSettings()
    settings = settings if settings is not None else TuneSettings()
    builder, metric, protocol = fit.builder, settings.metric, settings.protocol
    val_share, seed, max_queries, leaf_from = settings.val_share, settings.seed, settings.max_queries, fit.leaf_from
    if builder not in builders.BUILDERS:
        raise InputError(f"unknown builder {builder!r}", f"use one of {', '.join(builders.BUILDERS)}")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown tuning protocol {protocol!r}", "use split or loo")
    kind, k = check_tune_metric(metric, scoring)
    if builder == "given" and fit.taxonomy is None:
        raise InputError("the 'given' builder needs a taxonomy", "pass --taxonomy FILE")
    if max_queries is not None and int(max_queries) < 1:
        raise InputError(f"max_queries={max_queries} must be ≥ 1")
    alpha_grid = _check_grid(DEFAULT_ALPHAS if settings.alphas is None else settings.alphas, "alphas", check_alpha)
    t_grid: list[float | None] = (
        list(
            _check_grid(
                DEFAULT_THRESHOLDS if settings.thresholds is None else settings.thresholds,
                "thresholds",
                builders.check_threshold,
            )
        )
        if builder == "overlap"
        else [None]
    )
    x = check_features(features)
    names = list(class_names) if class_names is not None else None
    if base_model is not None:
        names = base_model.class_names
    y = check_labels(labels, x.shape[0], len(names) if names is not None else None)
    num_classes = len(names) if names is not None else int(y.max()) + 1
    fit_idx, val_idx = stratified_split(y, val_share, seed, min_per_class=MIN_FIT_PER_CLASS)
    if val_idx.size == 0:
        raise InputError(
            "the validation split is empty (every class has fewer than 3 items)", "add images or raise --val-share"
        )
    missing = np.setdiff1d(np.arange(num_classes), y[fit_idx])
    if missing.size:
        raise InputError(f"classes {missing[:5].tolist()} have no training items", "give every class images")

    # The model that is scored: fitted on the fit part only.
    if base_model is not None:
        z_all = x.astype(np.float64) if projected else base_model.transform(x)
        if z_all.shape[1] != base_model.dims:
            raise InputError(f"projected features have {z_all.shape[1]} dims, the model {base_model.dims}")
        gauss = Gaussians.fit(z_all[fit_idx], y[fit_idx], num_classes, estimator=base_model.gaussians.estimator)  # type: ignore[arg-type]
        fit_model = replace(base_model, gaussians=gauss, builder="overlap", threshold=base_model.threshold or 0.3)
        z_fit, z_val = z_all[fit_idx], z_all[val_idx]
    else:
        fit_model = HierarchyModel.fit(
            x[fit_idx],
            y[fit_idx],
            class_names=names,
            builder="ward",  # the tree is rebuilt per grid point below; ward is the cheapest to fit here
            n_components=fit.pca,
            covariance=fit.covariance,
        )
        z_fit, z_val = fit_model.transform(x[fit_idx]), fit_model.transform(x[val_idx])
    y_fit, y_val = y[fit_idx], y[val_idx]

    rng = np.random.default_rng([seed, 1])
    q_rows = _query_rows(val_idx.size, max_queries, rng)
    if protocol == "split":
        database = Items(z_fit, y_fit, [f"f{i}" for i in range(z_fit.shape[0])])
        queries = Items(z_val[q_rows], y_val[q_rows], [f"v{i}" for i in q_rows])
    else:
        database = Items(z_val, y_val, [f"v{i}" for i in range(z_val.shape[0])])
        queries = database.subset(q_rows)

    no_points, no_labels = np.zeros((0, fit_model.dims)), np.zeros(0, np.int64)
    trees: list[tuple[float | None, HierarchyModel]] = []
    for t in t_grid:
        if builder == "overlap":
            trees.append((t, fit_model.refit_tree(z_fit, y_fit, builder="overlap", threshold=t)))
        else:
            trees.append((None, fit_model.refit_tree(no_points, no_labels, builder=builder, taxonomy=fit.taxonomy)))
    # Database leaves: the same for every tree (the Gaussians are shared).
    if leaf_from == "label":
        database.leaves = database.labels.copy()
    elif leaf_from == "predicted":
        database.leaves = fit_model.assign(database.z, projected=True)
    else:
        raise InputError(f"unknown leaf source {leaf_from!r}", "use predicted or label")

    # One evaluation pass scores the whole grid (and cosine, for reference): the cosine block of a
    # chunk of queries is computed once and every (t, α) adds its own hierarchy term to it.
    ks = [k] if kind == "map" and k is not None else []
    map_r = kind == "map@r"
    mahp_ks = [k] if kind == "mahp" and k is not None else []
    key = "map@r" if map_r else ("p@1" if kind == "p@1" else f"{kind}@{k}")
    grid: list[tuple[float | None, float, HierarchyModel]] = [(t, a, model) for t, model in trees for a in alpha_grid]
    methods = [Method("cosine")] + [
        Method(builder, model, a, label=f"grid{i}") for i, (_t, a, model) in enumerate(grid)
    ]
    res = evaluate_arrays(
        queries,
        database,
        methods,
        num_classes=num_classes,
        ks=ks,
        map_r=map_r,
        scoring=scoring,
        mahp_ks=mahp_ks,
        hdist_ks=(),
        progress=progress,
    )
    cosine_score = res.metrics["cosine"][key]
    scores = [res.metrics[f"grid{i}"][key] for i in range(len(grid))]
    rows = [
        TuneRow(t, a, s, model.tree_height, model.hierarchy.num_nodes)
        for (t, a, model), s in zip(grid, scores, strict=True)
    ]
    finite = [i for i, r in enumerate(rows) if np.isfinite(r.score)]
    if not finite:
        raise InputError(f"{metric} is undefined on every validation query", "raise --val-share or pick another metric")
    best = max(finite, key=lambda i: (rows[i].score, -i))
    best_t, best_a = rows[best].threshold, rows[best].alpha

    # The final model: all the given items, the chosen t and α.
    if base_model is not None:
        z_all_final = x.astype(np.float64) if projected else base_model.transform(x)
        if builder == "overlap":
            final = base_model.refit_tree(z_all_final, y, builder="overlap", threshold=best_t, alpha=best_a)
        else:
            final = base_model.refit_tree(
                np.zeros((0, base_model.dims)), no_labels, builder=builder, taxonomy=fit.taxonomy, alpha=best_a
            )
    else:
        chosen = replace(fit, threshold=best_t if best_t is not None else 0.3, alpha=best_a)
        final = chosen.fit_model(x, y, class_names=names, extractor=extractor)
    record = {
        "metric": metric,
        "protocol": protocol,
        "best_threshold": best_t,
        "best_alpha": best_a,
        "best_score": _num(rows[best].score),
        "cosine_score": _num(cosine_score),
        "thresholds": [t for t in t_grid],
        "alphas": alpha_grid,
        "val_share": float(val_share),
        "seed": int(seed),
        "fit_size": int(fit_idx.size),
        "val_size": int(val_idx.size),
        "queries": len(queries),
        "leaf_from": leaf_from,
    }
    final = replace(final, info={**final.info, "tuning": record})
    return TuneResult(
        best_threshold=best_t,
        best_alpha=best_a,
        best_score=rows[best].score,
        metric=metric,
        builder=builder,
        protocol=protocol,
        rows=rows,
        model=final,
        cosine_score=cosine_score,
        fit_size=int(fit_idx.size),
        val_size=int(val_idx.size),
        queries=len(queries),
        val_share=float(val_share),
        seed=int(seed),
    )


def prepare_methods(
    names: Sequence[str],
    base: HierarchyModel,
    fit_z: np.ndarray | None,
    fit_labels: np.ndarray | None,
    *,
    threshold: float | None = None,
    thresholds: Mapping[str, float] | None = None,
    alpha: float | None = None,
    alphas: Mapping[str, float] | None = None,
    taxonomy: str | Path | Hierarchy | None = None,
    tuning: TuneSettings | None = None,
    protocol: Protocol | None = None,
    leaf_from: str = "predicted",
    scoring: Scoring | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[Method], dict[str, TuneResult]]:
    """:func:`~hierqdrant.evaluation.methods.build_methods`, or with ``tuning`` the methods with t and α
    chosen by :func:`tune` on a validation split of the *training* points ``fit_z`` / ``fit_labels``
    (projected by ``base``, whose PCA is kept). A t or α given explicitly for a method is kept fixed
    (its grid is that one value). ``protocol`` overrides ``tuning.protocol``. Returns the methods and
    ``{builder: TuneResult}``.
    """
    if tuning is None:
        methods = build_methods(
            names,
            base,
            fit_z,
            fit_labels,
            threshold=threshold,
            thresholds=thresholds,
            alpha=alpha,
            alphas=alphas,
            taxonomy=taxonomy,
        )
        return methods, {}
    if fit_z is None or fit_labels is None:
        raise InputError("tuning needs the labelled training points", "pass the training features")
    wanted = check_method_names(names)
    alphas = dict(alphas or {})
    t_fixed = overlap_threshold(dict(thresholds or {}), threshold)
    tuned: dict[str, TuneResult] = {}
    for builder in HIERARCHICAL:
        if builder not in wanted and not (builder == "overlap" and "hierarchy-only" in wanted):
            continue
        if builder == "given" and taxonomy is None:
            raise InputError("method 'given' needs a taxonomy", "pass --taxonomy FILE")
        a_fixed = alphas.get(builder, alpha)
        settings = replace(
            tuning,
            thresholds=[t_fixed] if t_fixed is not None else (tuning.thresholds or DEFAULT_THRESHOLDS),
            alphas=[a_fixed] if a_fixed is not None else (tuning.alphas or DEFAULT_ALPHAS),
            protocol=protocol if protocol is not None else tuning.protocol,
        )
        if log is not None:
            log(f"tuning {builder} on {fit_z.shape[0]} training points ({tuning.metric}, {settings.protocol})")
        tuned[builder] = tune(
            fit_z,
            fit_labels,
            base.class_names,
            fit=FitSettings(builder=builder, taxonomy=taxonomy, leaf_from=leaf_from),  # type: ignore[arg-type]
            settings=settings,
            base_model=base,
            projected=True,
            scoring=scoring,
        )
    out: list[Method] = []
    for name in wanted:
        if name in ("euclidean", "cosine"):
            out.append(Method(name))
        elif name == "hierarchy-only":
            out.append(Method(name, tuned["overlap"].model, 0.0))
        else:
            out.append(Method(name, tuned[name].model, tuned[name].best_alpha))
    return out, tuned
