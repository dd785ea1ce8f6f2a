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

The cosine similarities do not depend on t or α: :func:`hierqdrant.evaluation.evaluate.evaluate_arrays` computes
them once per chunk of queries and scores the whole grid from them. The best (t, α) maximises
``metric`` (ties: the first in grid order, i.e. the smaller t, then the smaller α). The returned model
is then fitted on *all* the given items with that t and α, and records the search in
``model.info["tuning"]``. Nothing here reads the evaluation queries: the caller passes training data only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hierqdrant.core import build as builders
from hierqdrant.core.errors import InputError
from hierqdrant.core.features import check_features, check_labels
from hierqdrant.core.gaussian import Gaussians
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel, check_alpha
from hierqdrant.evaluation.evaluate import Items, Method, Scoring, evaluate_arrays, parse_metric

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_THRESHOLDS",
    "PROTOCOLS",
    "TuneResult",
    "TuneRow",
    "check_grids",
    "check_tune_metric",
    "split_validation",
    "tune",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
DEFAULT_ALPHAS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
PROTOCOLS: tuple[str, ...] = ("split", "loo")
TUNABLE: tuple[str, ...] = ("map", "map@r", "p@1", "mahp")


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


def split_validation(labels: np.ndarray, val_share: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split → (fit indices, validation indices), both ascending.

    Each class gives ``round(val_share · n_c)`` items to validation, but always keeps at least two in
    the fit part (a Gaussian needs a spread) and gives none when it has fewer than three.
    """
    y = np.asarray(labels, dtype=np.int64)
    share = float(val_share)
    if not 0.0 < share < 1.0:
        raise InputError(f"val_share={val_share} must be between 0 and 1", "e.g. --val-share 0.2")
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = min(int(round(share * members.size)), members.size - 2)
        if take > 0:
            val.append(rng.choice(members, size=take, replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(y.shape[0], dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


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


def tune(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    builder: str = "overlap",
    metric: str = "map@r",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    val_share: float = 0.2,
    seed: int = 0,
    protocol: str = "split",
    taxonomy: str | Path | Hierarchy | None = None,
    leaf_from: str = "predicted",
    base_model: HierarchyModel | None = None,
    projected: bool = False,
    n_components: int | float | None = 0.95,
    covariance: str = "ledoit-wolf",
    max_queries: int | None = 2000,
    scoring: Scoring | None = None,
    extractor: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TuneResult:
    """Grid-search t and α on a validation split of ``features`` / ``labels`` (training items only).

    ``base_model``: keep its PCA (and class list) and refit only the class Gaussians and the tree —
    what a collection needs, whose stored vectors depend on the PCA (``features`` are then projected
    vectors when ``projected=True``). Without it, PCA (``n_components``) and the Gaussians
    (``covariance``) are fitted on the fit part, and the final model on all items.
    ``max_queries`` caps the validation queries (a seeded subsample) to bound the cost.
    ``metric``: ``map@K``, ``map@r``, ``p@1``, or ``mahp@K`` with a ``scoring`` hierarchy.
    """
    if builder not in builders.BUILDERS:
        raise InputError(f"unknown builder {builder!r}", f"use one of {', '.join(builders.BUILDERS)}")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown tuning protocol {protocol!r}", "use split or loo")
    kind, k = check_tune_metric(metric, scoring)
    if builder == "given" and taxonomy is None:
        raise InputError("the 'given' builder needs a taxonomy", "pass --taxonomy FILE")
    if max_queries is not None and int(max_queries) < 1:
        raise InputError(f"max_queries={max_queries} must be ≥ 1")
    alpha_grid = _check_grid(alphas, "alphas", check_alpha)
    t_grid: list[float | None] = (
        list(_check_grid(thresholds, "thresholds", builders.check_threshold)) if builder == "overlap" else [None]
    )
    x = check_features(features)
    names = list(class_names) if class_names is not None else None
    if base_model is not None:
        names = base_model.class_names
    y = check_labels(labels, x.shape[0], len(names) if names is not None else None)
    num_classes = len(names) if names is not None else int(y.max()) + 1
    fit_idx, val_idx = split_validation(y, val_share, seed)
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
            n_components=n_components,
            covariance=covariance,
        )
        z_fit, z_val = fit_model.transform(x[fit_idx]), fit_model.transform(x[val_idx])
    y_fit, y_val = y[fit_idx], y[val_idx]

    rng = np.random.default_rng([seed, 1])
    if protocol == "split":
        q_rows = np.arange(val_idx.size)
        if max_queries is not None and q_rows.size > max_queries:
            q_rows = np.sort(rng.choice(q_rows, size=int(max_queries), replace=False))
        database = Items(z_fit, y_fit, [f"f{i}" for i in range(z_fit.shape[0])])
        queries = Items(z_val[q_rows], y_val[q_rows], [f"v{i}" for i in q_rows])
    else:
        database = Items(z_val, y_val, [f"v{i}" for i in range(z_val.shape[0])])
        q_rows = np.arange(val_idx.size)
        if max_queries is not None and q_rows.size > max_queries:
            q_rows = np.sort(rng.choice(q_rows, size=int(max_queries), replace=False))
        queries = database.subset(q_rows)

    trees: list[tuple[float | None, HierarchyModel]] = []
    for t in t_grid:
        if builder == "overlap":
            trees.append((t, fit_model.refit_tree(z_fit, y_fit, builder="overlap", threshold=t)))
        elif builder == "ward":
            trees.append(
                (None, fit_model.refit_tree(np.zeros((0, fit_model.dims)), np.zeros(0, np.int64), builder="ward"))
            )
        else:
            trees.append(
                (
                    None,
                    fit_model.refit_tree(
                        np.zeros((0, fit_model.dims)), np.zeros(0, np.int64), builder="given", taxonomy=taxonomy
                    ),
                )
            )
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
                np.zeros((0, base_model.dims)), np.zeros(0, np.int64), builder=builder, taxonomy=taxonomy, alpha=best_a
            )
    else:
        final = HierarchyModel.fit(
            x,
            y,
            class_names=names,
            builder=builder,
            threshold=best_t if best_t is not None else 0.3,
            alpha=best_a,
            taxonomy=taxonomy,
            n_components=n_components,
            covariance=covariance,
            extractor=extractor,
        )
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
