"""Choose the PCA, the query classifier, the overlap threshold t and the weight α on a validation split
of the training images.

The labelled training items are split per class (stratified, seeded) into a *fit* part and a
*validation* part (``val_share``). PCA and the class Gaussians are fitted on the fit part only, so the
validation labels never shape the model that is scored — once per PCA value of the grid (kept
variance share, dims, or every dim; default 0.95, 0.99, all), and for each the query classifier that
gives the queries their leaf (default ``tied`` and ``mahalanobis``; ``head`` too where the network's
layer is given; a value the user pinned is not searched). For every t in ``thresholds`` the overlap
tree is rebuilt from the fit part's Gaussians (ward and given: one tree), and for every α in ``alphas``
the retrieval

    D(q, x) = (1 − cos(z_q, z_x)) + α · h(LCA(n_q, n_x)) / H

is scored on the validation images with one of two protocols:

* ``split`` — validation images are the queries, the fit part the database (new images searched in
  an ingested collection); the default of ``tune``, ``eval --tune`` and ``ingest --tune`` alike;
* ``loo`` — leave-one-out within the validation images (the paper's protocol on a test set).

The cosine similarities do not depend on t or α: :func:`hierqdrant.evaluation.ranking.evaluate_arrays`
computes them once per chunk of queries and scores a PCA value's whole grid from them
(:mod:`hierqdrant.evaluation.tune_grid`). The best (pca, t, α) maximises ``metric`` (ties: the first in
grid order, i.e. fewer dims, then the smaller t, then the smaller α). When it sits on the edge of a grid
(and beats its inner neighbour) that grid is widened once — t below its smallest or above its largest
value, α beyond its largest or below its smallest, fewer dims or all of them — and the search re-run on
the widened grid; still on the edge, a warning says so. The returned model is then fitted on *all* the
given items with the chosen values, and records the search in ``model.info["tuning"]``. Nothing here
reads the evaluation queries: the caller passes training data only.

:func:`prepare_methods` builds the methods of an evaluation on a model whose PCA is fixed, tuned this
way when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hierqdrant.core import build as builders
from hierqdrant.core.classifiers import LinearClassifier
from hierqdrant.core.errors import InputError
from hierqdrant.core.features import check_features, check_labels
from hierqdrant.core.model import HierarchyModel, check_alpha
from hierqdrant.core.settings import FitSettings
from hierqdrant.core.splits import stratified_split
from hierqdrant.core.subclasses import Splitter
from hierqdrant.evaluation.hooks import Hooks
from hierqdrant.evaluation.methods import (
    HIERARCHICAL,
    PLAIN,
    Method,
    MethodChoices,
    build_methods,
    check_method_names,
    overlap_threshold,
)
from hierqdrant.evaluation.scoring import Scoring, parse_metric
from hierqdrant.evaluation.tune_grid import (
    DEFAULT_CLASSIFIERS,
    DEFAULT_PCAS,
    PcaValue,
    Point,
    Search,
    Space,
    TuneRow,
    best_point,
    check_pca_grid,
    classifier_grid,
    derive_space,
    edges,
    grid_rows,
    make_space,
    pca_json,
    pca_label,
    pinned_grid,
    score_space,
    search_score,
    tune_warnings,
    widen,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_CLASSIFIERS",
    "DEFAULT_PCAS",
    "DEFAULT_THRESHOLDS",
    "PROTOCOLS",
    "Protocol",
    "TuneResult",
    "TuneRow",
    "TuneSettings",
    "check_grids",
    "check_tune_metric",
    "check_tune_settings",
    "prepare_methods",
    "tune",
    "tune_methods",
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
    """How the PCA, t and α are chosen: the metric, the grids (None: the default grids), the validation
    split (``val_share``, ``seed``), the protocol, the cap on validation queries, and whether a grid
    whose edge wins is widened once (``widen``). ``pcas``: kept variance shares (float), dims (int)
    or every dim (None); ignored when the PCA is fixed (a collection's). ``classifiers``: the query
    classifiers tried (None: :data:`DEFAULT_CLASSIFIERS`, plus ``head`` when the network's layer is
    given; one when the fit settings pin it)."""

    metric: str = "map@r"
    thresholds: Sequence[float] | None = None
    alphas: Sequence[float] | None = None
    val_share: float = 0.2
    seed: int = 0
    max_queries: int | None = 2000
    protocol: Protocol = "split"
    pcas: Sequence[PcaValue] | None = None
    widen: bool = True
    classifiers: Sequence[str] | None = None


@dataclass
class TuneResult:
    """The chosen ``best_pca`` / ``best_threshold`` / ``best_alpha``, every grid row, and ``model``:
    fitted on all the given items with them (``model.threshold``, ``model.alpha``, its PCA; the search
    in ``model.info["tuning"]``). ``widened``: the grid edges extended once; ``warnings``: what makes
    the result mean little; ``leaf_accuracy``: of the chosen PCA and query classifier on the validation
    split (``classifier_accuracy``: of each classifier tried, at its best PCA); ``best_classifier``: the
    one chosen."""

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
    best_pca: PcaValue = None
    best_dims: int = 0
    pcas: list[PcaValue] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    leaf_accuracy: float = float("nan")
    best_classifier: str = ""
    classifier_accuracy: dict[str, float] = field(default_factory=dict)
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
            "best_pca": pca_json(self.best_pca),
            "best_dims": self.best_dims,
            "pcas": [pca_json(p) for p in self.pcas],
            "widened": list(self.widened),
            "leaf_accuracy": _num(self.leaf_accuracy),
            "best_classifier": self.best_classifier,
            "classifier_accuracy": {c: _num(v) for c, v in self.classifier_accuracy.items()},
            "warnings": list(self.warnings),
            "grid": [
                {
                    "pca": pca_json(r.pca),
                    "dims": r.dims,
                    "threshold": r.threshold,
                    "alpha": r.alpha,
                    "score": _num(r.score),
                    "height": r.height,
                    "nodes": r.nodes,
                    "classifier": r.classifier,
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


def check_tune_settings(settings: TuneSettings, scored: bool) -> TuneSettings:
    """What can be checked of ``settings`` before any work, ``scored`` saying whether a scoring hierarchy
    is given up front (mahp needs one): the metric, the grids, the validation share. Returns the
    settings with the grids validated and de-duplicated (None: the default grid)."""
    check_tune_metric(settings.metric, True if scored else None)  # type: ignore[arg-type]
    t_grid, a_grid = check_grids(settings.thresholds or DEFAULT_THRESHOLDS, settings.alphas or DEFAULT_ALPHAS)
    p_grid = check_pca_grid(DEFAULT_PCAS if settings.pcas is None else settings.pcas)
    if not 0.0 < settings.val_share < 1.0:
        raise InputError(f"--val-share {settings.val_share} must be between 0 and 1", "e.g. --val-share 0.2")
    if settings.protocol not in PROTOCOLS:
        raise InputError(f"unknown tuning protocol {settings.protocol!r}", "use split or loo")
    return replace(settings, thresholds=t_grid, alphas=a_grid, pcas=p_grid)


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
    hooks: Hooks | None = None,
    head: LinearClassifier | None = None,
    splitter: Splitter | None = None,
) -> TuneResult:
    """Grid-search the PCA, t and α on a validation split of ``features`` / ``labels`` (training items only).

    ``fit``: the builder (overlap: t and α are tuned; ward, given: α), its taxonomy, the leaf source
    of database items and the covariance estimator (its pca, t and α are not used: the grids are).
    ``settings``: the metric (``map@K``, ``map@r``, ``p@1``, or ``mahp@K`` with a ``scoring``
    hierarchy), the grids (``pcas``, ``thresholds``, ``alphas``; None: the defaults), the split, the
    protocol, ``max_queries`` (a seeded subsample of the validation queries bounds the cost) and
    ``widen`` (extend a grid once when the best value sits on its edge).
    ``base_model``: keep its PCA (and class list) and refit only the class Gaussians and the tree —
    what a collection needs, whose stored vectors depend on the PCA (``features`` are then projected
    vectors when ``projected=True``); the PCA grid is then that one projection. Without it, PCA and the
    Gaussians are fitted once per PCA value on the fit part, and the final model on all items.
    ``hooks``: a log line and a progress counter per PCA value scored. The database's leaf source is
    ``fit.leaf_from``; the query classifier is searched over ``settings.classifiers`` (None: ``tied``,
    ``mahalanobis`` and, with ``head`` — the network's final layer —, ``head``; ``fit``'s when it is in
    ``fit.pinned``, as the PCA is), every classifier fitted on the fit part only; the best score wins,
    ties to the first classifier of the grid.
    ``splitter``: sub-class leaves (DESIGN.md §1.9) — it gives the fit part's sub-classes (so the
    validation items never shape them) and, for the final model, those of all the items; ``labels`` stay
    classes, relevance and the leaf accuracy are by class.
    """
    fit = fit if fit is not None else FitSettings()
    settings = settings if settings is not None else TuneSettings()
    hooks = hooks or Hooks()
    builder, metric, protocol = fit.builder, settings.metric, settings.protocol
    val_share, seed, max_queries, leaf_from = settings.val_share, settings.seed, settings.max_queries, fit.leaf_from
    if builder not in builders.BUILDERS:
        raise InputError(f"unknown builder {builder!r}", f"use one of {', '.join(builders.BUILDERS)}")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown tuning protocol {protocol!r}", "use split or loo")
    kind, k = check_tune_metric(metric, scoring)
    if builder == "given" and fit.taxonomy is None:
        raise InputError("the 'given' builder needs a taxonomy", "pass --taxonomy FILE")
    if base_model is not None and (splitter is not None or base_model.subclasses is not None):
        raise InputError(
            "a model with sub-class leaves is tuned where its sub-classes are found, not on a fixed PCA",
            "re-ingest with --tune and the same sub-classes "
            "(ingest SOURCE --collection NAME --recreate --tune, with --split-classes or the checkpoint)",
        )
    if max_queries is not None and int(max_queries) < 1:
        raise InputError(f"max_queries={max_queries} must be ≥ 1")
    a_grid = _check_grid(DEFAULT_ALPHAS if settings.alphas is None else settings.alphas, "alphas", check_alpha)
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
    p_grid: list[PcaValue] = (
        [base_model.dims]
        if base_model is not None
        else check_pca_grid(pinned_grid(settings.pcas, fit, "pca", DEFAULT_PCAS))
    )
    c_grid = classifier_grid(settings.classifiers, fit, head, has_raw=base_model is None or not projected)
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
    q_rows = _query_rows(val_idx.size, max_queries, np.random.default_rng([seed, 1]))
    fit_split = None if splitter is None else splitter(x[fit_idx], y[fit_idx])

    # One space per PCA value and query classifier: PCA and the Gaussians fitted once on the fit part
    # (shared by the classifiers), every (t, α) scored in one ranking pass over the validation queries.
    metric_options: dict[str, Any] = {
        "ks": [k] if kind == "map" and k is not None else [],
        "map_r": kind == "map@r",
        "mahp_ks": [k] if kind == "mahp" and k is not None else [],
    }
    key = "map@r" if kind == "map@r" else ("p@1" if kind == "p@1" else f"{kind}@{k}")
    by_classifier: dict[str, dict[PcaValue, Space]] = {c: {} for c in c_grid}

    def space_of(p: PcaValue, c: str) -> Space:
        spaces = by_classifier[c]
        if p in spaces:
            return spaces[p]
        fitted = next((other[p] for other in by_classifier.values() if p in other), None)
        if fitted is not None:
            space = derive_space(fitted, c, leaf_from, head)
        else:
            hooks.log(f"tuning {builder}: fitting PCA {pca_label(p)} and the class Gaussians on {fit_idx.size} items")
            space = make_space(
                p, x, y, fit_idx, val_idx, q_rows, protocol=protocol, leaf_from=leaf_from,
                covariance=fit.covariance, class_names=names, base_model=base_model, projected=projected,
                query_classifier=c, head=head, split=fit_split,
            )  # fmt: skip
        # Two values that keep the same dims are the same projection: score it once.
        return spaces.setdefault(p, next((s for s in spaces.values() if s.dims == space.dims), space))

    def run(c: str, pcas: list[PcaValue], ts: list[float | None], alphas: list[float]) -> Point:
        for p in pcas:
            score_space(
                space_of(p, c), ts, alphas, builder=builder, taxonomy=fit.taxonomy, key=key,
                metric_options=metric_options, scoring=scoring, hooks=hooks, label=f"tuning {builder} ({c})",
            )  # fmt: skip
        return best_point(grid_rows(by_classifier[c], pcas, ts, alphas), metric)

    searches: dict[str, Search] = {}
    for c in c_grid:
        ps, ts, alphas = list(p_grid), list(t_grid), list(a_grid)
        best = run(c, ps, ts, alphas)
        axes = edges(best, by_classifier[c], ps, ts, alphas)
        widened: list[str] = []
        if axes and settings.widen:
            max_dims = base_model.dims if base_model is not None else min(fit_idx.size, x.shape[1])
            ps, ts, alphas, widened = widen(axes, best, by_classifier[c][best[0]].dims, ps, ts, alphas, max_dims)
            if widened:
                edge = ", ".join(widened)
                hooks.log(f"tuning {builder} ({c}): the best point is on the grid's edge ({edge}); widening once")
                best = run(c, ps, ts, alphas)
                axes = edges(best, by_classifier[c], ps, ts, alphas)
        rows_c = grid_rows(by_classifier[c], ps, ts, alphas, classifier=c)
        searches[c] = Search(best, axes, widened, ps, ts, alphas, rows_c)
    # The best classifier: its best score, ties to the first in the grid (tied before mahalanobis).
    best_c = max(c_grid, key=lambda c: (search_score(searches[c]), -c_grid.index(c)))
    search = searches[best_c]
    p_grid, t_grid, a_grid = search.pcas, search.ts, search.alphas
    best, axes, widened = search.best, search.axes, search.widened
    rows = [r for c in c_grid for r in searches[c].rows]
    spaces = by_classifier[best_c]
    best_p, best_t, best_a = best
    chosen = spaces[best_p]
    warnings = tune_warnings(
        best, axes, widened, chosen, t_grid, a_grid, p_grid, spaces, y, num_classes, names, builder
    )

    # The final model: all the given items, the chosen PCA, classifier, t and α.
    no_labels = np.zeros(0, np.int64)
    if base_model is not None:
        z_all_final = x.astype(np.float64) if projected else base_model.transform(x)
        if builder == "overlap":
            final = base_model.refit_tree(z_all_final, y, builder="overlap", threshold=best_t, alpha=best_a)
        else:
            final = base_model.refit_tree(
                np.zeros((0, base_model.dims)), no_labels, builder=builder, taxonomy=fit.taxonomy, alpha=best_a
            )
        if best_c != final.query_classifier:
            final = final.with_leaf_sources(best_c, points=z_all_final, labels=y, head=head)
    else:
        hooks.log(f"tuning {builder}: fitting the chosen model on all {x.shape[0]} items")
        chosen_fit = replace(
            fit, threshold=best_t if best_t is not None else 0.3, alpha=best_a, pca=best_p,
            query_classifier=best_c,  # type: ignore[arg-type]
        )  # fmt: skip
        split = None if splitter is None else splitter(x, y)
        if split is not None and fit_split is not None and split.num_subclasses != fit_split.num_subclasses:
            warnings.append(
                f"the grid was scored with {fit_split.num_subclasses} sub-classes (the split of the fit part), "
                f"the model has {split.num_subclasses} (the split of all {x.shape[0]} items): t and α may not "
                "suit its tree; more images per class make the two splits agree"
            )
        final = chosen_fit.fit_model(
            x, y if split is None else split.labels, class_names=names, extractor=extractor, head=head,
            subclass_of=None if split is None else split.subclass_of,
        )  # fmt: skip
    best_row = next(r for r in search.rows if (r.pca, r.threshold, r.alpha) == best)
    result = TuneResult(
        best_threshold=best_t,
        best_alpha=best_a,
        best_score=best_row.score,
        metric=metric,
        builder=builder,
        protocol=protocol,
        rows=rows,
        model=final,
        cosine_score=chosen.cosine,
        fit_size=int(fit_idx.size),
        val_size=int(val_idx.size),
        queries=len(chosen.queries),
        val_share=float(val_share),
        seed=int(seed),
        best_pca=best_p,
        best_dims=chosen.dims,
        pcas=list(p_grid),
        widened=widened,
        warnings=warnings,
        leaf_accuracy=chosen.val_accuracy,
        best_classifier=best_c,
        classifier_accuracy={c: by_classifier[c][searches[c].best[0]].val_accuracy for c in c_grid},
    )
    record = {k: v for k, v in result.to_dict().items() if k not in ("grid", "model_id", "builder")}
    record.update(thresholds=list(t_grid), alphas=list(a_grid), leaf_from=leaf_from, classifiers=list(c_grid))
    result.model = replace(final, info={**final.info, "tuning": record})
    return result


def prepare_methods(
    names: Sequence[str],
    base: HierarchyModel,
    fit_z: np.ndarray | None,
    fit_labels: np.ndarray | None,
    *,
    tuning: TuneSettings | None = None,
    protocol: Protocol | None = None,
    leaf_from: str = "predicted",
    scoring: Scoring | None = None,
    log: Callable[[str], None] | None = None,
    hooks: Hooks | None = None,
    **choices: Unpack[MethodChoices],
) -> tuple[list[Method], dict[str, TuneResult]]:
    """:func:`~hierqdrant.evaluation.methods.build_methods` (``choices``: its threshold, thresholds,
    alpha, alphas and taxonomy), or with ``tuning`` the methods with t and α chosen by :func:`tune` on a
    validation split of the *training* points ``fit_z`` / ``fit_labels`` (projected by ``base``, whose
    PCA is kept). A t or α given explicitly for a method is kept fixed (its grid is that one value).
    ``protocol`` overrides ``tuning.protocol``. Returns the methods and ``{builder: TuneResult}``.
    """
    if tuning is None:
        return build_methods(names, base, fit_z, fit_labels, **choices), {}
    if fit_z is None or fit_labels is None:
        raise InputError("tuning needs the labelled training points", "pass the training features")
    if protocol is not None:
        tuning = replace(tuning, protocol=protocol)
    hooks = hooks or (Hooks(log=log) if log is not None else None)
    _, methods, tuned = tune_methods(
        names, fit_z, fit_labels, base.class_names, tuning=tuning, base=base, projected=True,
        leaf_from=leaf_from, scoring=scoring, hooks=hooks, **choices,
    )  # fmt: skip
    return methods, tuned


def tune_methods(
    names: Sequence[str],
    fit_x: np.ndarray,
    fit_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    tuning: TuneSettings,
    base: HierarchyModel | None = None,
    projected: bool = False,
    leaf_from: str | None = None,
    query_classifier: str | None = None,
    covariance: str = "ledoit-wolf",
    scoring: Scoring | None = None,
    hooks: Hooks | None = None,
    extractor: dict[str, Any] | None = None,
    **choices: Unpack[MethodChoices],
) -> tuple[HierarchyModel, list[Method], dict[str, TuneResult]]:
    """The methods ``names`` with the PCA, t and α chosen by :func:`tune` on the training items only.

    Without ``base`` (a features file or image folder: ``fit_x`` are raw features) the first
    hierarchical builder asked for (overlap, also for hierarchy-only; else ward; else given) chooses
    the PCA with its t and α — exactly what ``ingest --tune`` and ``tune`` run on the same items — and
    its tuned model is the returned base: every PCA-space method (euclidean, cosine, the other
    builders, tuned on α only with that PCA kept) ranks in its space. With ``base`` (a collection: its
    PCA is fixed; ``fit_x`` projected when ``projected``) every builder is tuned in ``base``'s space. A
    t or α given in ``choices`` is held fixed. ``leaf_from``: of the database (None: :class:`FitSettings`'s
    default, as ``ingest --tune`` uses it); ``query_classifier``: pinned (None: searched by the first
    builder with the PCA, kept by the others). Returns (base, methods, ``{builder: TuneResult}``).
    """
    hooks = hooks or Hooks()
    defaults = FitSettings()
    leaf_from = leaf_from or defaults.leaf_from
    pinned = frozenset({"query_classifier"}) if query_classifier is not None else frozenset()
    query_classifier = query_classifier or defaults.query_classifier
    wanted = check_method_names(names)
    taxonomy, alpha = choices.get("taxonomy"), choices.get("alpha")
    alphas = dict(choices.get("alphas") or {})
    t_fixed = overlap_threshold(dict(choices.get("thresholds") or {}), choices.get("threshold"))
    builders_wanted = [b for b in HIERARCHICAL if b in wanted or (b == "overlap" and "hierarchy-only" in wanted)]
    tuned: dict[str, TuneResult] = {}
    for builder in builders_wanted:
        if builder == "given" and taxonomy is None:
            raise InputError("method 'given' needs a taxonomy", "pass --taxonomy FILE")
        a_fixed = alphas.get(builder, alpha)
        settings = replace(
            tuning,
            thresholds=[t_fixed] if t_fixed is not None else (tuning.thresholds or DEFAULT_THRESHOLDS),
            alphas=[a_fixed] if a_fixed is not None else (tuning.alphas or DEFAULT_ALPHAS),
        )
        fit = FitSettings(
            builder=builder,  # type: ignore[arg-type]
            taxonomy=taxonomy,
            leaf_from=leaf_from,  # type: ignore[arg-type]
            covariance=covariance,  # type: ignore[arg-type]
            query_classifier=query_classifier,  # type: ignore[arg-type]
            pinned=pinned,
        )
        hooks.log(f"tuning {builder} on {fit_x.shape[0]} training items ({tuning.metric}, {settings.protocol})")
        if base is None:  # the first builder chooses the PCA; the others keep it
            tuned[builder] = tune(
                fit_x, fit_labels, class_names, fit=fit, settings=settings, scoring=scoring,
                extractor=extractor, hooks=hooks,
            )  # fmt: skip
            base, fit_x, projected = tuned[builder].model, tuned[builder].model.transform(fit_x), True
        else:
            tuned[builder] = tune(
                fit_x, fit_labels, base.class_names, fit=fit, settings=settings, base_model=base,
                projected=projected, scoring=scoring, hooks=hooks,
            )  # fmt: skip
        # The first builder chose the query classifier (as it chose the PCA): the others keep it.
        query_classifier, pinned = tuned[builder].best_classifier, frozenset({"query_classifier"})
    if base is None:  # nothing hierarchical to tune: the first PCA value of the grid
        pca = check_pca_grid(DEFAULT_PCAS if tuning.pcas is None else tuning.pcas)[0]
        base = FitSettings(
            pca=pca,
            covariance=covariance,  # type: ignore[arg-type]
            query_classifier=query_classifier,  # type: ignore[arg-type]
            leaf_from=leaf_from,  # type: ignore[arg-type]
        ).fit_model(fit_x, fit_labels, class_names=class_names, extractor=extractor)
    out: list[Method] = []
    for name in wanted:
        if name in PLAIN:
            out.append(Method(name))
        elif name == "hierarchy-only":
            out.append(Method(name, tuned["overlap"].model, 0.0))
        else:
            out.append(Method(name, tuned[name].model, tuned[name].best_alpha))
    return base, out, tuned
