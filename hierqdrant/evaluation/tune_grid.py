"""The grid of :func:`hierqdrant.evaluation.tuning.tune`: one PCA space at a time, scored in one pass.

A :class:`Space` is one kept-variance (or dims) value and one query classifier: PCA and the class
Gaussians fitted **once** on the fit part (another classifier's space shares them: :func:`derive_space`),
the validation queries and the database projected by it, their leaves, the overlap tree per threshold,
and the score of every (t, α) tried so far. :func:`score_space` scores the (t, α) pairs not scored yet
in one :func:`~hierqdrant.evaluation.ranking.evaluate_arrays` pass (the cosine block of a chunk of
queries is shared by every grid point); thresholds that give the same tree share their scores, so a
flat range of t costs one tree.

:func:`edges` finds the axes on which the best point sits on the edge of its grid (strictly better
than its inner neighbour, so a plateau is no edge), and :func:`widen` extends those axes once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hierqdrant.core import diagnostics
from hierqdrant.core.classifiers import QUERY_CLASSIFIERS, LinearClassifier, fit_tied
from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import Gaussians
from hierqdrant.core.model import ALPHA_MAX, HierarchyModel
from hierqdrant.core.settings import FitSettings
from hierqdrant.core.subclasses import SubclassSplit
from hierqdrant.evaluation.hooks import Hooks
from hierqdrant.evaluation.items import Items, database_leaves
from hierqdrant.evaluation.methods import Method
from hierqdrant.evaluation.ranking import evaluate_arrays
from hierqdrant.evaluation.scoring import Scoring

__all__ = [
    "DEFAULT_CLASSIFIERS",
    "DEFAULT_PCAS",
    "PcaValue",
    "Point",
    "Search",
    "Space",
    "TuneRow",
    "best_point",
    "check_pca_grid",
    "classifier_grid",
    "derive_space",
    "edges",
    "grid_rows",
    "make_space",
    "pca_json",
    "pca_label",
    "pinned_grid",
    "refit_classifier",
    "score_space",
    "search_score",
    "tune_warnings",
    "widen",
]

#: Kept variance share (float in (0, 1)), number of dims (int ≥ 1) or every dim (None).
PcaValue = int | float | None
#: Default PCA grid of tuning: 95 % of the variance (the paper), 99 %, every dimension.
DEFAULT_PCAS: tuple[PcaValue, ...] = (0.95, 0.99, None)
#: (pca, t, α): one grid point.
Point = tuple[PcaValue, float | None, float]
#: Query classifiers tuning tries unless one is pinned (and ``head`` where the network's layer is given):
#: the cheaper ``tied`` first, so it wins ties.
DEFAULT_CLASSIFIERS: tuple[str, ...] = ("tied", "mahalanobis")


def check_pca_grid(values: Sequence[PcaValue]) -> list[PcaValue]:
    """Validated, de-duplicated PCA values (a share ≥ 1 is every dimension, i.e. None)."""
    out: list[PcaValue] = []
    for v in values:
        if isinstance(v, bool):
            raise InputError(f"PCA value {v!r} is not a share, a count or 'all'")
        if isinstance(v, float) and v >= 1.0:
            v = None
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise InputError(f"PCA variance share {v} is not in (0, 1]", "e.g. --pcas 0.95,0.99,all")
        if isinstance(v, int) and v < 1:
            raise InputError(f"PCA dims {v} must be ≥ 1", "e.g. --pcas 16,32,all")
        if v not in out:
            out.append(v)
    if not out:
        raise InputError("the PCA grid is empty", "pass at least one value with --pcas, e.g. 0.95,0.99,all")
    return out


def pca_label(v: PcaValue) -> str:
    """``0.95``, ``32`` or ``all``."""
    return "all" if v is None else f"{v:g}"


def pca_json(v: PcaValue) -> float | int | str:
    """A PCA value in JSON: the share, the dims, or ``"all"``."""
    return "all" if v is None else v


@dataclass(frozen=True)
class TuneRow:
    """One grid point: t (None for ward / given), α, the validation score, the tree's shape, the
    PCA value with the dims it kept, and the query classifier."""

    threshold: float | None
    alpha: float
    score: float
    height: int
    nodes: int
    pca: PcaValue = None
    dims: int = 0
    classifier: str = ""


@dataclass
class Space:
    """One PCA value: the model fitted on the fit part (PCA + class Gaussians), the validation
    ``queries`` and the ``database`` in its space (database leaves set), the trees per threshold and
    the scores per (t, α). ``y_fit`` are the fit part's **leaf** labels (its sub-classes where the model
    has sub-class leaves, else its classes); the items' labels are classes (relevance is by class)."""

    pca: PcaValue
    model: HierarchyModel
    z_fit: np.ndarray
    y_fit: np.ndarray
    queries: Items
    database: Items
    val_accuracy: float
    validation: Items | None = None  # every validation item (its leaf accuracy is ``val_accuracy``)
    trees: dict[float | None, HierarchyModel] = field(default_factory=dict)
    scores: dict[tuple[float | None, float], float] = field(default_factory=dict)
    cosine: float = float("nan")
    cosine_done: bool = False

    @property
    def dims(self) -> int:
        return self.model.dims

    def tree(self, t: float | None, builder: str, taxonomy: Any) -> HierarchyModel:
        """The tree at ``t`` (ward and given: one tree, ``t`` None), built once."""
        if t not in self.trees:
            if builder == "overlap":
                self.trees[t] = self.model.refit_tree(self.z_fit, self.y_fit, builder="overlap", threshold=t)
            elif self.model.subclasses is not None:  # the class Gaussians above the sub-classes need the points
                self.trees[t] = self.model.refit_tree(self.z_fit, self.y_fit, builder=builder, taxonomy=taxonomy)
            else:
                empty = np.zeros((0, self.model.dims))
                self.trees[t] = self.model.refit_tree(empty, np.zeros(0, np.int64), builder=builder, taxonomy=taxonomy)
        return self.trees[t]


def refit_classifier(model: HierarchyModel, z: np.ndarray, y: np.ndarray) -> HierarchyModel:
    """``model`` with its query classifier fitted on ``z`` / ``y`` only (its Gaussians refitted there
    already): a ``tied`` one is refitted; ``mahalanobis`` reads the Gaussians; ``head`` is the network's
    own layer and stays."""
    if model.query_classifier == "tied":
        return replace(model, classifier=fit_tied(z, y, model.num_classes, model.gaussians.estimator))  # type: ignore[arg-type]
    return model


def make_space(
    pca: PcaValue,
    x: np.ndarray,
    y: np.ndarray,
    fit_idx: np.ndarray,
    val_idx: np.ndarray,
    q_rows: np.ndarray,
    *,
    protocol: str,
    leaf_from: str,
    covariance: str,
    class_names: Sequence[str] | None,
    base_model: HierarchyModel | None = None,
    projected: bool = False,
    query_classifier: str = "mahalanobis",
    head: LinearClassifier | None = None,
    split: SubclassSplit | None = None,
) -> Space:
    """Fit PCA (unless ``base_model`` fixes it), the class Gaussians and the ``query_classifier`` on the
    fit part, once (with ``base_model``: its PCA, the Gaussians and the classifier refitted on the fit part).
    ``split``: the fit part's sub-classes (DESIGN.md §1.9) — one Gaussian per sub-class, sub-class leaves."""
    names = list(class_names) if class_names is not None else None
    y_fit, y_val = y[fit_idx], y[val_idx]
    leaf_fit = y_fit if split is None else split.labels
    if base_model is not None:
        assert split is None  # tune() refuses sub-classes on a fixed PCA
        z_all = np.asarray(x, dtype=np.float64) if projected else base_model.transform(x)
        if z_all.shape[1] != base_model.dims:
            raise InputError(f"projected features have {z_all.shape[1]} dims, the model {base_model.dims}")
        k = base_model.num_classes
        gauss = Gaussians.fit(z_all[fit_idx], y[fit_idx], k, estimator=base_model.gaussians.estimator)  # type: ignore[arg-type]
        model = replace(base_model, gaussians=gauss, builder="overlap", threshold=base_model.threshold or 0.3)
        model = refit_classifier(model, z_all[fit_idx], y[fit_idx])
        if query_classifier != model.query_classifier:
            model = model.with_leaf_sources(query_classifier, points=z_all[fit_idx], labels=y[fit_idx], head=head)
        z_fit, z_val = z_all[fit_idx], z_all[val_idx]
        raw_fit = raw_val = None
    else:
        model = HierarchyModel.fit(
            x[fit_idx],
            leaf_fit,
            class_names=names,
            subclass_of=None if split is None else split.subclass_of,
            builder="ward",  # the tree is rebuilt per grid point; ward is the cheapest to fit here
            n_components=pca,
            covariance=covariance,
            query_classifier=query_classifier,
            head=head,
        )
        raw_fit, raw_val = x[fit_idx], x[val_idx]
        z_fit, z_val = model.transform(raw_fit), model.transform(raw_val)
    if protocol == "split":
        database = Items(z_fit, y_fit, [f"f{i}" for i in range(z_fit.shape[0])], raw=raw_fit)
        queries = Items(z_val[q_rows], y_val[q_rows], [f"v{i}" for i in q_rows], raw=_rows_of(raw_val, q_rows))
    else:
        database = Items(z_val, y_val, [f"v{i}" for i in range(z_val.shape[0])], raw=raw_val)
        queries = database.subset(q_rows)
    # Database leaves: the same for every tree of this space (the Gaussians are shared).
    database.leaves = database_leaves(model, database, leaf_from)
    validation = Items(z_val, y_val, [f"v{i}" for i in range(z_val.shape[0])], raw=raw_val)
    dims = pca if base_model is None else base_model.dims
    return Space(dims, model, z_fit, leaf_fit, queries, database, _accuracy(model, validation), validation)


def _accuracy(model: HierarchyModel, items: Items | None) -> float:
    """Share of ``items`` whose leaf under ``model``'s query classifier is their class, a sub-class counting
    as its class (nan: none)."""
    if items is None or len(items) == 0:
        return float("nan")
    leaves = model.assign(items.z, projected=True, raw=items.raw)
    return float(np.mean(model.class_of_leaf(leaves) == items.labels))


def _rows_of(raw: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if raw is None else raw[rows]


def derive_space(space: Space, classifier: str, leaf_from: str, head: LinearClassifier | None = None) -> Space:
    """``space`` with another query classifier: the same PCA, Gaussians and items (no refit of either),
    the classifier fitted on the fit part, the database leaves and the validation accuracy redone.
    Its trees are rebuilt on demand (they carry the classifier that gives the queries their leaves)."""
    model = space.model.with_leaf_sources(classifier, points=space.z_fit, labels=space.y_fit, head=head)
    database = Items(space.database.z, space.database.labels, space.database.ids, raw=space.database.raw)
    database.leaves = database_leaves(model, database, leaf_from)
    # The queries keep no leaves: the ranking gives them the leaf of each method's model.
    return replace(
        space, model=model, database=database, val_accuracy=_accuracy(model, space.validation),
        trees={}, scores={}, cosine=space.cosine, cosine_done=space.cosine_done,
    )  # fmt: skip


def score_space(
    space: Space,
    thresholds: Sequence[float | None],
    alphas: Sequence[float],
    *,
    builder: str,
    taxonomy: Any,
    key: str,
    metric_options: dict[str, Any],
    scoring: Scoring | None,
    hooks: Hooks,
    label: str,
) -> None:
    """Score every (t, α) of the grid not scored yet in ``space``, in one ranking pass."""
    missing = [(t, a) for t in thresholds for a in alphas if (t, a) not in space.scores]
    if not missing and space.cosine_done:
        return
    # Thresholds that give the same tree rank the same: score each tree once.
    first_of_shape: dict[bytes, float | None] = {}
    for t in [*space.trees, *thresholds]:
        tree = space.tree(t, builder, taxonomy)
        first_of_shape.setdefault(tree.hierarchy.parent.tobytes(), t)
    canon = {t: first_of_shape[space.tree(t, builder, taxonomy).hierarchy.parent.tobytes()] for t in thresholds}
    todo: list[tuple[float | None, float]] = []
    for t, a in missing:
        pair = (canon[t], a)
        if pair not in space.scores and pair not in todo:
            todo.append(pair)
    methods = [Method("cosine")] + [
        Method(builder, space.trees[t], a, label=f"grid{i}") for i, (t, a) in enumerate(todo)
    ]
    hooks.log(
        f"{label}: PCA {pca_label(space.pca)} ({space.dims} dims), {len(todo)} new grid points "
        f"({len({t for t, _ in todo})} distinct trees) on {len(space.queries)} validation queries"
    )
    with hooks.progress(len(space.queries), f"{label}: PCA {pca_label(space.pca)}") as advance:
        res = evaluate_arrays(
            space.queries,
            space.database,
            methods,
            num_classes=len(space.model.class_names),
            scoring=scoring,
            hdist_ks=(),
            progress=advance,
            **metric_options,
        )
    space.cosine, space.cosine_done = res.metrics["cosine"][key], True
    for i, pair in enumerate(todo):
        space.scores[pair] = res.metrics[f"grid{i}"][key]
    for t, a in missing:
        space.scores[(t, a)] = space.scores[(canon[t], a)]


def distinct(pcas: Sequence[PcaValue], spaces: dict[PcaValue, Space]) -> list[PcaValue]:
    """The PCA values of distinct spaces (a value that kept the same dims as an earlier one is that
    space), ordered by dims, then grid order; each named by the first value that made it."""
    out: list[PcaValue] = []
    seen: set[int] = set()
    for p in sorted(pcas, key=lambda v: (spaces[v].dims, list(pcas).index(v))):
        if id(spaces[p]) not in seen:
            seen.add(id(spaces[p]))
            out.append(spaces[p].pca)
    return out


def _neighbour(values: Sequence[Any], value: Any, order: Callable[[Any], Any]) -> tuple[str | None, Any]:
    """("low" | "high" | None, the inner neighbour) of ``value`` in ``values`` sorted by ``order``."""
    ranked = sorted(set(values), key=order)
    if len(ranked) < 2:
        return None, None
    if value == ranked[0]:
        return "low", ranked[1]
    if value == ranked[-1]:
        return "high", ranked[-2]
    return None, None


def edges(
    best: Point,
    spaces: dict[PcaValue, Space],
    pcas: Sequence[PcaValue],
    thresholds: Sequence[float | None],
    alphas: Sequence[float],
) -> list[str]:
    """The axes on which ``best`` sits on its grid's edge *and* beats its inner neighbour:
    ``t-low``, ``t-high``, ``alpha-low``, ``alpha-high``, ``pca-low`` (fewest dims), ``pca-high``."""
    pca, t, a = best
    space = spaces[pca]
    score = space.scores[(t, a)]
    out: list[str] = []
    if t is not None:
        side, other = _neighbour([v for v in thresholds if v is not None], t, lambda v: v)
        if side and score > space.scores.get((other, a), -np.inf):
            out.append(f"t-{side}")
    side, other = _neighbour(alphas, a, lambda v: v)
    if side and score > space.scores.get((t, other), -np.inf):
        out.append(f"alpha-{side}")
    side, other = _neighbour(distinct(pcas, spaces), pca, lambda v: spaces[v].dims)
    if side and score > spaces[other].scores.get((t, a), -np.inf):
        out.append(f"pca-{side}")
    return out


def widen(
    axes: Sequence[str],
    best: Point,
    best_dims: int,
    pcas: Sequence[PcaValue],
    thresholds: Sequence[float | None],
    alphas: Sequence[float],
    max_dims: int,
) -> tuple[list[PcaValue], list[float | None], list[float], list[str]]:
    """The grids extended once beyond the edges in ``axes`` (t down to a fifth of its smallest value or
    up to 1; α up to 4× its largest, at most ``ALPHA_MAX``, or down to 0; PCA to a half and a quarter of the
    dims left out, or to every dim), and the axes that could grow (t = 1, α = 0, α = ``ALPHA_MAX`` and every
    dim are limits)."""
    pca, t, a = best
    new_p, new_t, new_a = list(pcas), list(thresholds), list(alphas)
    grown: list[str] = []
    if "t-low" in axes and t is not None:
        new_t += [round(t / 2, 6), round(t / 5, 6)]
        grown.append("t-low")
    if "t-high" in axes and t is not None and t < 1.0:
        new_t += [round((t + 1.0) / 2, 6), 1.0]
        grown.append("t-high")
    if "alpha-high" in axes and 0 < a < ALPHA_MAX:
        new_a += [min(a * 2, ALPHA_MAX), min(a * 4, ALPHA_MAX)]
        grown.append("alpha-high")
    if "alpha-low" in axes and a > 0:
        new_a += [a / 2, 0.0]
        grown.append("alpha-low")
    if "pca-low" in axes:
        if isinstance(pca, float):
            new_p += [round(v, 6) for v in (1 - 2 * (1 - pca), 1 - 4 * (1 - pca)) if v > 0.05]
        elif isinstance(pca, int):
            new_p += [v for v in (pca // 2, pca // 4) if v >= 1]
        grown.append("pca-low")
    if "pca-high" in axes and pca is not None and best_dims < max_dims:
        new_p.append(None)
        grown.append("pca-high")
    dedup_p: list[PcaValue] = []
    for v in new_p:
        if v not in dedup_p:
            dedup_p.append(v)
    t_sorted = sorted({v for v in new_t if v is not None})
    return (
        dedup_p,
        [None] if thresholds == [None] else list(t_sorted),
        sorted(set(new_a)),
        grown,
    )


def grid_rows(
    spaces: dict[PcaValue, Space],
    pcas: list[PcaValue],
    ts: list[float | None],
    alphas: list[float],
    classifier: str = "",
) -> list[TuneRow]:
    """Every grid point of one query classifier, in grid order: fewer dims first, then smaller t, then
    smaller α."""
    out = []
    for p in distinct(pcas, spaces):
        space = spaces[p]
        for t in sorted(ts, key=lambda v: -1.0 if v is None else v):
            tree = space.trees[t]
            for a in sorted(alphas):
                out.append(
                    TuneRow(
                        t,
                        a,
                        space.scores[(t, a)],
                        tree.tree_height,
                        tree.hierarchy.num_nodes,
                        p,
                        space.dims,
                        classifier,
                    )  # fmt: skip
                )
    return out


def best_point(rows: list[TuneRow], metric: str) -> Point:
    """The best grid point (ties: the first in grid order)."""
    finite = [i for i, r in enumerate(rows) if np.isfinite(r.score)]
    if not finite:
        raise InputError(f"{metric} is undefined on every validation query", "raise --val-share or pick another metric")
    r = rows[max(finite, key=lambda i: (rows[i].score, -i))]
    return r.pca, r.threshold, r.alpha


def tune_warnings(
    best: Point,
    axes: list[str],
    widened: list[str],
    chosen: Space,
    t_grid: list[float | None],
    a_grid: list[float],
    p_grid: list[PcaValue],
    spaces: dict[PcaValue, Space],
    y: np.ndarray,
    num_classes: int,
    names: list[str] | None,
    builder: str,
) -> list[str]:
    """What makes the tuned result mean little (see :mod:`hierqdrant.core.diagnostics`)."""
    best_p, best_t, best_a = best
    out: list[str] = []
    if "t-low" in axes or "t-high" in axes:
        out += diagnostics.grid_edge(
            "t", best_t, t_grid, widened="t-low" in widened or "t-high" in widened, bound=best_t == 1.0
        )
    if best_a == 0.0 and len(set(a_grid)) > 1:
        out.append("tuned α = 0: the hierarchy term does not help on the validation split (the ranking is cosine)")
    elif "alpha-low" in axes or "alpha-high" in axes:
        out += diagnostics.grid_edge(
            "α", best_a, a_grid, widened="alpha-low" in widened or "alpha-high" in widened, bound=best_a == ALPHA_MAX
        )
    if "pca-low" in axes:
        dims = [spaces[p].dims for p in distinct(p_grid, spaces)]
        out += diagnostics.grid_edge("PCA dims", chosen.dims, dims, widened="pca-low" in widened)
    if builder == "overlap":
        out += diagnostics.flat_tree([(t, chosen.trees[t].tree_height) for t in t_grid])
    out += diagnostics.narrow_pca(chosen.dims, num_classes, chosen.model.input_dims)
    out += diagnostics.few_per_class(y, num_classes, names)
    out += diagnostics.low_leaf_accuracy(chosen.val_accuracy, "on the validation split")
    return out


@dataclass
class Search:
    """One query classifier's search: its best point, the edges it sits on, what was widened, its final
    grids and their rows."""

    best: Point
    axes: list[str]
    widened: list[str]
    pcas: list[PcaValue]
    ts: list[float | None]
    alphas: list[float]
    rows: list[TuneRow]


def search_score(search: Search) -> float:
    """The score of a search's best point (−∞ where undefined)."""
    row = next(r for r in search.rows if (r.pca, r.threshold, r.alpha) == search.best)
    return row.score if np.isfinite(row.score) else -np.inf


def pinned_grid(grid: Sequence[Any] | None, fit: FitSettings, name: str, default: Sequence[Any]) -> list[Any]:
    """The grid as given; else the fit settings' value when the user pinned it; else the default grid."""
    if grid is not None:
        return list(grid)
    return [getattr(fit, name)] if name in fit.pinned else list(default)


def classifier_grid(
    classifiers: Sequence[str] | None, fit: FitSettings, head: LinearClassifier | None, *, has_raw: bool
) -> list[str]:
    """The query classifiers to try: as given, pinned, or the defaults (``head`` too where the network's
    layer is given and the raw features are there to feed it)."""
    default = [*DEFAULT_CLASSIFIERS, *(["head"] if head is not None and has_raw else [])]
    grid = pinned_grid(classifiers, fit, "query_classifier", default)
    out: list[str] = []
    for c in grid:
        if c not in QUERY_CLASSIFIERS:
            raise InputError(f"unknown query classifier {c!r}", f"use {', '.join(QUERY_CLASSIFIERS)}")
        if c == "head" and (head is None or not has_raw):
            raise InputError(
                "the head query classifier needs the network's final layer and the raw features",
                "tune from images or a features file with a checkpoint that has a head, or pick tied / mahalanobis",
            )
        if c not in out:
            out.append(c)
    if not out:
        raise InputError("the query classifier grid is empty", "pass tied, mahalanobis or head")
    return out
