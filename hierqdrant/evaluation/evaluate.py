"""Retrieval evaluation: the paper's methods, two protocols, NumPy brute force or a Qdrant collection.

Every method ranks the database for a query by a distance on the centred PCA vectors ``z``
(DESIGN.md §1.6–1.7), the leaves ``n`` being the Mahalanobis leaves of the class Gaussians (database
items: predicted, the paper's default, or their label):

* ``euclidean`` — ``‖z_q − z_x‖``;
* ``cosine`` — ``D_C = 1 − cos(z_q, z_x)``;
* ``hierarchy-only`` — ``h(LCA(n_q, n_x))/H`` alone on the overlap tree. Items at the same LCA height
  are ordered by ``D_C`` (the ranking is ``4·h + D_C``, i.e. D with α = 4H: one level always outweighs
  any cosine difference ≤ 2). The paper's code left these ties to ``np.argsort``'s arbitrary order;
  the cosine makes the ranking deterministic and the same through any engine.
* ``overlap`` (ours), ``ward``, ``given`` — ``D = D_C + α·h(LCA)/H`` on the tree of overlapping class
  Gaussians (threshold t), on the Ward linkage of the class means, or on a taxonomy file.

Protocols: **leave-one-out** (queries are database items; each query's own item is excluded by id,
and ``R`` counts one item fewer) and **queries vs database** (e.g. test images against the training
images). Metrics are those of :mod:`hierqdrant.evaluation.metrics` under the names of DESIGN.md §6.

Two ways to run the same rankings:

* :func:`evaluate_arrays` — NumPy brute force, vectorised over chunks of queries (one matrix product
  per chunk shared by all methods), top-n by ``argpartition``; ties are ordered by database position.
* :func:`evaluate_collection` — every query goes through the engine: ``cosine``, ``hierarchy-only``
  and the hierarchical methods through :class:`~hierqdrant.store.search.HierarchicalSearcher` (strategy
  ``exact`` with exhaustive search by default); ``euclidean`` through a plain cosine query on
  augmented vectors (see :func:`euclidean_vectors`). A method whose tree is not the collection's own
  runs on a temporary copy of the collection (same ids, vectors and leaves, the method's ancestor
  paths), deleted afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel, check_alpha
from hierqdrant.evaluation import metrics as M

if TYPE_CHECKING:
    from hierqdrant.evaluation.significance import PairedResult
    from hierqdrant.store.engines import Engine

__all__ = [
    "DEFAULT_KS",
    "METHODS",
    "EvalResult",
    "Items",
    "Method",
    "Scoring",
    "TuneSettings",
    "build_methods",
    "database_leaves",
    "euclidean_vectors",
    "evaluate_arrays",
    "evaluate_collection",
    "metric_names",
    "paired",
    "parse_metric",
    "parse_per_method",
    "prepare_methods",
    "rank",
    "read_collection_items",
    "split_metric_values",
    "stored_leaf_mode",
]

METHODS: tuple[str, ...] = ("euclidean", "cosine", "hierarchy-only", "overlap", "ward", "given")
HIERARCHICAL: tuple[str, ...] = ("overlap", "ward", "given")
DEFAULT_KS: tuple[int, ...] = M.DEFAULT_KS
LeafFrom = Literal["predicted", "label"]
LEAF_FROM: tuple[str, ...] = ("predicted", "label")
# hierarchy-only ranks by 4·h + D_C: a level step (≥ 1) always outweighs D_C ∈ [0, 2].
HIERARCHY_ONLY_WEIGHT = 4.0
# Elements of one (queries × database) block: bounds the memory of a chunk to a few hundred MB.
CHUNK_ELEMENTS = 1 << 22

_FORMULAS = {
    "euclidean": "‖z_q − z_x‖",
    "cosine": "1 − cos(z_q, z_x)",
    "hierarchy-only": "h(LCA)/H, ties by 1 − cos",
    "overlap": "1 − cos + α·h(LCA)/H",
    "ward": "1 − cos + α·h(LCA)/H",
    "given": "1 − cos + α·h(LCA)/H",
}


# ------------------------------------------------------------------------------------------ data


@dataclass
class Items:
    """A query set or a database: projected vectors ``z`` (N, d), class ``labels`` (N,) indexing the
    class list (−1 = unknown), item ``ids`` (N,) (point ids or file keys: a query is excluded from
    the database item with the same id) and, optionally, stored ``leaves`` (N,)."""

    z: np.ndarray
    labels: np.ndarray
    ids: list[str]
    leaves: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.z = np.atleast_2d(np.asarray(self.z, dtype=np.float64))
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.ids = [str(i) for i in self.ids]
        n = self.z.shape[0]
        if self.labels.shape[0] != n or len(self.ids) != n:
            raise InputError(f"{len(self.ids)} ids and {self.labels.shape[0]} labels for {n} vectors")
        if self.leaves is not None:
            self.leaves = np.asarray(self.leaves, dtype=np.int64).reshape(-1)
            if self.leaves.shape[0] != n:
                raise InputError(f"{self.leaves.shape[0]} leaves for {n} vectors")

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def subset(self, index: np.ndarray) -> Items:
        idx = np.asarray(index, dtype=np.int64)
        return Items(
            self.z[idx],
            self.labels[idx],
            [self.ids[i] for i in idx],
            None if self.leaves is None else self.leaves[idx],
        )


@dataclass(frozen=True)
class Method:
    """One ranking. ``model`` carries the tree and the class Gaussians (None for euclidean and
    cosine); ``alpha`` is α of ``D = D_C + α·h/H`` (overlap, ward, given)."""

    name: str
    model: HierarchyModel | None = None
    alpha: float = 0.0
    label: str | None = None  # the key of this method in results (default: its name)

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise InputError(f"unknown method {self.name!r}", f"use some of {', '.join(METHODS)}")
        if self.name not in ("euclidean", "cosine") and self.model is None:
            raise InputError(f"method {self.name!r} needs a fitted model with its tree")
        object.__setattr__(self, "alpha", check_alpha(self.alpha))

    @property
    def key(self) -> str:
        return self.label or self.name

    @property
    def hierarchical(self) -> bool:
        return self.model is not None and self.name != "euclidean" and self.name != "cosine"

    @property
    def effective_alpha(self) -> float:
        """α of the D that this method ranks by (hierarchy-only: 4H, so one level beats any cosine)."""
        if self.name == "hierarchy-only":
            assert self.model is not None
            return HIERARCHY_ONLY_WEIGHT * max(self.model.tree_height, 1)
        return self.alpha if self.name in HIERARCHICAL else 0.0

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"distance": _FORMULAS[self.name]}
        if self.name in HIERARCHICAL:
            out["alpha"] = self.alpha
        if self.model is not None and self.name not in ("euclidean", "cosine"):
            tree = self.model.hierarchy
            out["builder"] = self.model.builder
            if self.model.threshold is not None:
                out["threshold"] = self.model.threshold
            out["tree_height"] = tree.tree_height
            out["tree_nodes"] = tree.num_nodes
        return out


@dataclass(frozen=True)
class Scoring:
    """The hierarchy that scores mahp@k, hdist@k and severity, and how to name it in a report."""

    lca_height: np.ndarray
    tree_height: int
    name: str

    @classmethod
    def from_hierarchy(cls, tree: Hierarchy, name: str) -> Scoring:
        return cls(tree.lca_height_matrix(), max(int(tree.tree_height), 1), name)


@dataclass
class EvalResult:
    """Scores of every method: ``metrics[method][metric]`` (means over queries where defined) and
    ``per_query[method][metric]`` (Q,) arrays for paired tests."""

    protocol: str
    queries: int
    database: int
    metrics: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, np.ndarray]]
    settings: dict[str, dict[str, Any]]
    scored_by: str | None
    depth: int
    seconds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "queries": self.queries,
            "database": self.database,
            "depth": self.depth,
            "scored_by": self.scored_by,
            "methods": {m: {k: _finite(v) for k, v in row.items()} for m, row in self.metrics.items()},
            "settings": self.settings,
            "seconds": {m: round(s, 3) for m, s in self.seconds.items()},
            **self.info,
        }


def _finite(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


# ------------------------------------------------------------------------------------ parsing


def parse_metric(name: str) -> tuple[str, int | None]:
    """``map@10`` → ("map", 10); ``map@r`` → ("map@r", None); ``p@1``, ``severity``; ``mahp@250``,
    ``hdist@10``."""
    text = name.strip().lower()
    if text in ("map@r", "p@1", "severity"):
        return text, None
    kind, sep, value = text.partition("@")
    if sep and kind in ("map", "mahp", "hdist") and value.isdigit() and int(value) >= 1:
        if kind == "mahp" and int(value) < 2:
            raise InputError("mahp@k needs k ≥ 2", "e.g. mahp@250")
        return kind, int(value)
    raise InputError(f"unknown metric {name!r}", "use map@K, map@r, p@1, mahp@K, hdist@K or severity (e.g. map@10)")


def parse_per_method(
    text: str | None, what: str, default: float | None = None
) -> tuple[float | None, dict[str, float]]:
    """``"3"`` → (3, {}); ``"overlap=3,ward=1"`` → (default, {...}); ``"2,given=1"`` → (2, {given: 1})."""
    if text is None or not str(text).strip():
        return default, {}
    common = default
    per: dict[str, float] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        try:
            number = float(value if sep else key)
        except ValueError:
            raise InputError(
                f"--{what} {part!r} is not a number or method=number", f"e.g. --{what} overlap=3,ward=1"
            ) from None
        if sep:
            name = key.strip().lower()
            if name not in METHODS:
                raise InputError(f"--{what} names unknown method {name!r}", f"use {', '.join(METHODS)}")
            per[name] = number
        else:
            common = number
    return common, per


def metric_names(
    ks: Sequence[int],
    *,
    map_r: bool = True,
    mahp_ks: Sequence[int] = (),
    hdist_ks: Sequence[int] = (),
    severity: bool = False,
) -> list[str]:
    """The metric keys that :func:`evaluate_arrays` reports for these settings, in table order."""
    out = [f"map@{k}" for k in ks]
    if map_r:
        out.append("map@r")
    out.append("p@1")
    out += [f"mahp@{k}" for k in mahp_ks] + [f"hdist@{k}" for k in hdist_ks]
    if severity:
        out.append("severity")
    return out


def split_metric_values(values: Sequence[str]) -> tuple[list[int], bool, list[int], list[int], bool]:
    """Metric names → (map ks, map@r?, mahp ks, hdist ks, severity?)."""
    ks: list[int] = []
    mahp: list[int] = []
    hdist: list[int] = []
    map_r = severity = False
    for name in values:
        kind, k = parse_metric(name)
        if kind == "map" and k is not None:
            ks.append(k)
        elif kind == "mahp" and k is not None:
            mahp.append(k)
        elif kind == "hdist" and k is not None:
            hdist.append(k)
        elif kind == "map@r":
            map_r = True
        elif kind == "severity":
            severity = True
    return ks, map_r, mahp, hdist, severity


# ----------------------------------------------------------------------------------- methods


def build_methods(
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
) -> list[Method]:
    """The methods ``names`` on ``base``'s PCA and class Gaussians.

    ``overlap`` and ``hierarchy-only`` use the overlap tree at threshold t (``thresholds["overlap"]``,
    else ``threshold``, else ``base``'s own t); ``ward`` the Ward linkage of the class means; ``given``
    ``taxonomy``. α per method from ``alphas``, else ``alpha``, else ``base.alpha``. ``fit_z`` /
    ``fit_labels`` are the projected training points the overlap builder pools; they are needed only
    when the overlap tree has to be rebuilt (another t than ``base``'s).
    """
    wanted = _check_names(names)
    thresholds = dict(thresholds or {})
    alphas = dict(alphas or {})
    for key in thresholds:
        if key not in ("overlap", "hierarchy-only"):
            raise InputError(f"a threshold applies to the overlap tree, not to {key!r}", "e.g. --threshold 0.3")
    t = thresholds.get("overlap", thresholds.get("hierarchy-only", threshold))
    cache: dict[str, HierarchyModel] = {}

    def tree_model(builder: str) -> HierarchyModel:
        if builder in cache:
            return cache[builder]
        if builder == "overlap" and base.builder == "overlap" and (t is None or t == base.threshold):
            model = base
        elif builder == "given":
            if taxonomy is None:
                raise InputError("method 'given' needs a taxonomy", "pass --taxonomy FILE")
            model = base.refit_tree(_no_points(base), _NO_LABELS, builder="given", taxonomy=taxonomy)
        elif builder == "ward":
            model = base.refit_tree(_no_points(base), _NO_LABELS, builder="ward")
        else:
            if fit_z is None or fit_labels is None:
                raise InputError(
                    "rebuilding the overlap tree at another threshold needs the training points",
                    "pass the training features (--fit) or use the model's own threshold",
                )
            model = base.refit_tree(fit_z, fit_labels, builder="overlap", threshold=t if t is not None else 0.3)
        cache[builder] = model
        return model

    out: list[Method] = []
    for name in wanted:
        a = alphas.get(name, alpha if alpha is not None else base.alpha)
        if name in ("euclidean", "cosine"):
            out.append(Method(name))
        elif name == "hierarchy-only":
            out.append(Method(name, tree_model("overlap"), 0.0))
        else:
            out.append(Method(name, tree_model(name), a))
    return out


@dataclass(frozen=True)
class TuneSettings:
    """What :func:`prepare_methods` passes to :func:`hierqdrant.evaluation.tune.tune` (None: the default grids)."""

    metric: str = "map@r"
    thresholds: Sequence[float] | None = None
    alphas: Sequence[float] | None = None
    val_share: float = 0.2
    seed: int = 0
    max_queries: int | None = 2000


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
    protocol: str = "split",
    leaf_from: str = "predicted",
    scoring: Scoring | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[Method], dict[str, Any]]:
    """:func:`build_methods`, or with ``tuning`` the methods with t and α chosen by
    :func:`hierqdrant.evaluation.tune.tune` on a validation split of the *training* points ``fit_z`` /
    ``fit_labels`` (projected by ``base``, whose PCA is kept). A t or α given explicitly for a method
    is kept fixed (its grid is that one value). Returns the methods and ``{builder: TuneResult}``.
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
    from hierqdrant.evaluation.tune import DEFAULT_ALPHAS, DEFAULT_THRESHOLDS, tune

    if fit_z is None or fit_labels is None:
        raise InputError("tuning needs the labelled training points", "pass the training features")
    wanted = _check_names(names)
    thresholds = dict(thresholds or {})
    alphas = dict(alphas or {})
    tuned: dict[str, Any] = {}
    for builder in HIERARCHICAL:
        if builder not in wanted and not (builder == "overlap" and "hierarchy-only" in wanted):
            continue
        if builder == "given" and taxonomy is None:
            raise InputError("method 'given' needs a taxonomy", "pass --taxonomy FILE")
        t_fixed = thresholds.get("overlap", thresholds.get("hierarchy-only", threshold))
        a_fixed = alphas.get(builder, alpha)
        if log is not None:
            log(f"tuning {builder} on {fit_z.shape[0]} training points ({tuning.metric}, {protocol})")
        tuned[builder] = tune(
            fit_z,
            fit_labels,
            base.class_names,
            builder=builder,
            metric=tuning.metric,
            thresholds=[t_fixed] if t_fixed is not None else (tuning.thresholds or DEFAULT_THRESHOLDS),
            alphas=[a_fixed] if a_fixed is not None else (tuning.alphas or DEFAULT_ALPHAS),
            val_share=tuning.val_share,
            seed=tuning.seed,
            protocol=protocol,
            taxonomy=taxonomy,
            leaf_from=leaf_from,
            base_model=base,
            projected=True,
            max_queries=tuning.max_queries,
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


_NO_LABELS = np.zeros(0, dtype=np.int64)


def _no_points(model: HierarchyModel) -> np.ndarray:
    """Ward and given trees pool no points: refit_tree gets an empty (0, d) array."""
    return np.zeros((0, model.dims))


def _check_names(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for raw in names:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name in ("ours", "hierarchical"):
            name = "overlap"
        if name not in METHODS:
            raise InputError(f"unknown method {raw!r}", f"use some of {', '.join(METHODS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise InputError("no method to evaluate", f"pass --methods, e.g. {','.join(METHODS)}")
    return out


def database_leaves(model: HierarchyModel, database: Items, leaf_from: str = "predicted") -> np.ndarray:
    """Leaf of every database item: Mahalanobis (``predicted``, the paper) or its ``label``."""
    if leaf_from not in LEAF_FROM:
        raise InputError(f"unknown leaf source {leaf_from!r}", "use predicted or label")
    if leaf_from == "label":
        if (database.labels < 0).any():
            raise InputError(
                f"{int((database.labels < 0).sum())} database items have no label for --leaf-from label",
                "use --leaf-from predicted",
            )
        return database.labels.copy()
    return model.assign(database.z, projected=True)


# ------------------------------------------------------------------------------ NumPy ranking


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _top(dist: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n smallest entries of every row, ascending (ties: lower index first);
    ``inf`` entries (excluded items) come back as −1."""
    rows, cols = dist.shape
    if n < cols:
        part = np.argpartition(dist, n - 1, axis=1)[:, :n]
    else:
        part = np.broadcast_to(np.arange(cols), (rows, cols)).copy()
    vals = np.take_along_axis(dist, part, axis=1)
    order = np.lexsort((part, vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    idx[~np.isfinite(np.take_along_axis(vals, order, axis=1))] = -1
    return idx


def _self_index(queries: Items, database: Items) -> np.ndarray:
    """Position of each query's own item in the database (by id), −1 when it is not there."""
    where = {pid: i for i, pid in enumerate(database.ids)}
    return np.asarray([where.get(pid, -1) for pid in queries.ids], dtype=np.int64)


def _chunks(n_queries: int, n_db: int, chunk_elements: int) -> Iterator[slice]:
    size = max(1, chunk_elements // max(n_db, 1))
    for start in range(0, n_queries, size):
        yield slice(start, min(n_queries, start + size))


def _depth(
    counts: np.ndarray,
    q_labels: np.ndarray,
    has_self: np.ndarray,
    n_db: int,
    ks: Sequence[int],
    map_r: bool,
    mahp_ks: Sequence[int],
    hdist_ks: Sequence[int],
) -> int:
    """How many results each query needs: the largest k, and R_q for map@r."""
    need = max([1, *ks, *mahp_ks, *hdist_ks])
    if map_r and q_labels.size:
        r = counts[q_labels] - has_self.astype(np.int64)
        need = max(need, int(r.max()))
    return max(1, min(need, n_db))


def _check_query_labels(queries: Items, num_classes: int) -> None:
    if len(queries) == 0:
        raise InputError("no queries to evaluate", "pass labelled query images or features")
    if (queries.labels < 0).any():
        raise InputError(
            f"{int((queries.labels < 0).sum())} queries have no label", "evaluate with labelled queries only"
        )
    if int(queries.labels.max()) >= num_classes:
        raise InputError(f"query labels reach {int(queries.labels.max())}, the model has {num_classes} classes")


def _class_counts(database: Items, num_classes: int) -> np.ndarray:
    known = database.labels[database.labels >= 0]
    if known.size and int(known.max()) >= num_classes:
        raise InputError(f"database labels reach {int(known.max())}, the model has {num_classes} classes")
    return np.bincount(known, minlength=num_classes).astype(np.int64)


def _chunk_metrics(
    retrieved: np.ndarray,
    q_labels: np.ndarray,
    has_self: np.ndarray,
    counts: np.ndarray,
    ks: Sequence[int],
    map_r: bool,
    scoring: Scoring | None,
    mahp_ks: Sequence[int],
    hdist_ks: Sequence[int],
) -> dict[str, np.ndarray]:
    """Per-query metrics of one chunk; queries with and without their own item in the database are
    scored apart (``self_in_db`` decides R and the ideal ranking of mAHP)."""
    out: dict[str, np.ndarray] = {}
    groups = [(g, bool(flag)) for flag in (False, True) if (g := np.flatnonzero(has_self == flag)).size]
    for name in metric_names(
        ks,
        map_r=map_r,
        mahp_ks=mahp_ks if scoring else (),
        hdist_ks=hdist_ks if scoring else (),
        severity=scoring is not None,
    ):
        out[name] = np.full(q_labels.shape[0], np.nan)
    for rows, self_in in groups:
        ret, lab = retrieved[rows], q_labels[rows]
        for k in ks:
            out[f"map@{k}"][rows] = M.map_at_k_per_query(ret, lab, k)
        if map_r:
            out["map@r"][rows] = M.map_at_r_per_query(ret, lab, counts, self_in)
        out["p@1"][rows] = M.precision_at_1_per_query(ret, lab)
        if scoring is not None:
            for k in mahp_ks:
                out[f"mahp@{k}"][rows] = M.mahp_at_k_per_query(
                    ret, lab, scoring.lca_height, scoring.tree_height, counts, k, self_in
                )
            for k in hdist_ks:
                out[f"hdist@{k}"][rows] = M.hdist_at_k_per_query(ret, lab, scoring.lca_height, k)
            out["severity"][rows] = M.severity_per_query(ret, lab, scoring.lca_height)
    return out


def _aggregate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _means(rows: Mapping[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for key, values in rows.items():
        ok = ~np.isnan(values)
        out[key] = float(values[ok].mean()) if ok.any() else float("nan")
    return out


def _unique(methods: Sequence[Method]) -> list[Method]:
    out = list(methods)
    if not out:
        raise InputError("no method to evaluate")
    keys = [m.key for m in out]
    if len(set(keys)) != len(keys):
        raise InputError(f"methods must have distinct names, got {keys}", "give repeated methods a label")
    return out


def _settings(methods: Sequence[Method]) -> dict[str, dict[str, Any]]:
    return {m.key: m.describe() for m in methods}


def _protocol(has_self: np.ndarray, n_queries: int, n_db: int) -> str:
    if has_self.all() and n_queries > 0:
        return "leave-one-out"
    if not has_self.any():
        return "queries-vs-database"
    return "mixed (queries found in the database are excluded from their own ranking)"


class _Context:
    """What every chunk of queries shares: unit database vectors, squared norms, and per tree the
    query leaves, the database leaves and the (K, K) table of h(LCA)/H."""

    def __init__(self, queries: Items, database: Items, methods: Sequence[Method], leaf_from: str) -> None:
        self.queries = queries
        self.database = database
        self.db_unit = _unit(database.z)
        self.db_sq = np.einsum("ij,ij->i", database.z, database.z)
        self.needs_cos = any(m.name != "euclidean" for m in methods)
        self.q_leaves: dict[int, np.ndarray] = {}
        self.db_leaves: dict[int, np.ndarray] = {}
        self.tables: dict[int, np.ndarray] = {}
        for m in methods:
            if m.model is None or m.name in ("euclidean", "cosine"):
                continue
            g = id(m.model.gaussians)
            if g not in self.q_leaves:
                self.q_leaves[g] = m.model.assign(queries.z, projected=True)
                self.db_leaves[g] = (
                    database.leaves if database.leaves is not None else database_leaves(m.model, database, leaf_from)
                )
            if id(m.model) not in self.tables:
                self.tables[id(m.model)] = m.model.lca_height_matrix() / max(m.model.tree_height, 1)

    def cosine(self, sl: slice) -> np.ndarray | None:
        """(c, N) cosine distances 1 − ẑ_q·ẑ_x of a chunk of queries."""
        if not self.needs_cos:
            return None
        return 1.0 - _unit(self.queries.z[sl]) @ self.db_unit.T

    def distances(self, sl: slice, m: Method, cos_dist: np.ndarray | None, own: np.ndarray) -> np.ndarray:
        """(c, N) distances of ``m`` for a chunk; a query's own item (position ``own``) gets +inf."""
        if m.name == "euclidean":
            qz = self.queries.z[sl]
            sq = np.einsum("ij,ij->i", qz, qz)
            dist = sq[:, None] + self.db_sq[None, :] - 2.0 * (qz @ self.database.z.T)
        elif m.name == "cosine":
            assert cos_dist is not None
            dist = cos_dist.copy()
        else:
            assert cos_dist is not None and m.model is not None
            g = id(m.model.gaussians)
            # Gather h(LCA)/H rows of the chunk's query leaves, then the database leaves' columns.
            lev = np.take(self.tables[id(m.model)][self.q_leaves[g][sl]], self.db_leaves[g], axis=1)
            dist = cos_dist + m.effective_alpha * lev
        rows = np.flatnonzero(own >= 0)
        dist[rows, own[rows]] = np.inf
        return dist


def rank(
    queries: Items,
    database: Items,
    method: Method,
    n: int,
    *,
    leaf_from: str = "predicted",
    chunk_elements: int = CHUNK_ELEMENTS,
) -> np.ndarray:
    """(Q, n) database positions of every query's top n under ``method``, best first; the query's own
    item (same id) is never returned; −1 pads rows when fewer than n items are left. Ties are
    ordered by database position."""
    if int(n) < 1:
        raise InputError(f"n={n} must be at least 1")
    n = int(n)
    if queries.z.shape[1] != database.z.shape[1]:
        raise InputError(f"queries have {queries.z.shape[1]} dims, the database {database.z.shape[1]}")
    ctx = _Context(queries, database, [method], leaf_from)
    self_idx = _self_index(queries, database)
    out = np.full((len(queries), n), -1, dtype=np.int64)
    depth = min(n, len(database))
    for sl in _chunks(len(queries), len(database), chunk_elements):
        out[sl, :depth] = _top(ctx.distances(sl, method, ctx.cosine(sl), self_idx[sl]), depth)
    return out


def evaluate_arrays(
    queries: Items,
    database: Items,
    methods: Sequence[Method],
    *,
    num_classes: int,
    ks: Sequence[int] = DEFAULT_KS,
    map_r: bool = True,
    scoring: Scoring | None = None,
    mahp_ks: Sequence[int] = (250,),
    hdist_ks: Sequence[int] = (10,),
    leaf_from: str = "predicted",
    chunk_elements: int = CHUNK_ELEMENTS,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Rank ``database`` for every query by each method with NumPy and score the rankings.

    Per chunk of queries: ``C = ẑ_q ẑ_xᵀ`` (unit vectors) once for all cosine-based methods,
    ``E = ‖z_q‖² + ‖z_x‖² − 2 z_q z_xᵀ`` for euclidean; a hierarchical method adds
    ``α·h(LCA(n_q, n_x))/H`` from the (K, K) LCA-height table of its tree. The query's own item
    (same id) gets ``+inf`` and is never returned. Each query needs the top ``max(k, R_q)`` items;
    ``argpartition`` finds them in O(N) per query before they are sorted.
    """
    methods = _unique(methods)
    _check_query_labels(queries, num_classes)
    if len(database) == 0:
        raise InputError("the database is empty", "pass a database with items")
    if queries.z.shape[1] != database.z.shape[1]:
        raise InputError(f"queries have {queries.z.shape[1]} dims, the database {database.z.shape[1]}")
    ks = sorted({int(k) for k in ks})
    mahp_ks = sorted({int(k) for k in mahp_ks}) if scoring is not None else []
    hdist_ks = sorted({int(k) for k in hdist_ks}) if scoring is not None else []
    counts = _class_counts(database, num_classes)
    self_idx = _self_index(queries, database)
    has_self = self_idx >= 0
    n_db = len(database)
    depth = _depth(counts, queries.labels, has_self, n_db, ks, map_r, mahp_ks, hdist_ks)

    ctx = _Context(queries, database, methods, leaf_from)
    db_labels = database.labels
    parts: dict[str, list[dict[str, np.ndarray]]] = {m.key: [] for m in methods}
    seconds = dict.fromkeys(parts, 0.0)
    for sl in _chunks(len(queries), n_db, chunk_elements):
        t0 = time.perf_counter()
        cos_dist = ctx.cosine(sl)
        shared = (time.perf_counter() - t0) / len(methods)
        for m in methods:
            t1 = time.perf_counter()
            idx = _top(ctx.distances(sl, m, cos_dist, self_idx[sl]), depth)
            retrieved = np.where(idx >= 0, db_labels[np.maximum(idx, 0)], -1)
            parts[m.key].append(
                _chunk_metrics(
                    retrieved, queries.labels[sl], has_self[sl], counts, ks, map_r, scoring, mahp_ks, hdist_ks
                )
            )
            seconds[m.key] += time.perf_counter() - t1 + shared
        if progress is not None:
            progress(sl.stop - sl.start)
    per_query = {name: _aggregate(p) for name, p in parts.items()}
    return EvalResult(
        protocol=_protocol(has_self, len(queries), n_db),
        queries=len(queries),
        database=n_db,
        metrics={name: _means(rows) for name, rows in per_query.items()},
        per_query=per_query,
        settings=_settings(methods),
        scored_by=scoring.name if scoring is not None else None,
        depth=depth,
        seconds=seconds,
        info={"path": "numpy"},
    )


# -------------------------------------------------------------------------- through an engine


def euclidean_vectors(db_z: np.ndarray, query_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Augmented vectors whose cosine ranks by Euclidean distance (for a cosine-only engine).

    With s = max ‖x‖ and x̃ = x/s, q̃ = q/s (a scale changes no Euclidean ranking):
    ``x' = [x̃, −‖x̃‖²/2, √(M² − ‖x̃‖² − ‖x̃‖⁴/4)]`` (so ‖x'‖ = M for every x) and ``q' = [q̃, 1, 0]``.
    Then ``cos(q', x') = (q̃·x̃ − ‖x̃‖²/2) / (M‖q'‖)`` and, for one query, a larger cosine is a smaller
    ``‖q̃ − x̃‖² = ‖q̃‖² − 2(q̃·x̃ − ‖x̃‖²/2)``.
    """
    x = np.asarray(db_z, dtype=np.float64)
    q = np.asarray(query_z, dtype=np.float64)
    scale = float(np.linalg.norm(x, axis=1).max()) if x.size else 1.0
    scale = scale if scale > 0 else 1.0
    x = x / scale
    q = q / scale
    sq = np.einsum("ij,ij->i", x, x)
    used = sq + sq**2 / 4.0
    big = float(used.max()) if used.size else 1.0
    big = big if big > 0 else 1.0
    x_aug = np.concatenate([x, -sq[:, None] / 2.0, np.sqrt(np.maximum(big - used, 0.0))[:, None]], axis=1)
    q_aug = np.concatenate([q, np.ones((q.shape[0], 1)), np.zeros((q.shape[0], 1))], axis=1)
    return x_aug, q_aug


def _label_index(model: HierarchyModel) -> dict[str, int]:
    return {name: i for i, name in enumerate(model.class_names)}


def read_collection_items(
    engine: Engine, collection: str, *, split: str | None = None, batch_size: int = 2048
) -> tuple[HierarchyModel, dict[str, Any], Items, list[str | None]]:
    """The collection's model, info, and all its points (optionally of one ``split``) as :class:`Items`
    (``z`` scaled back to the projected vectors, ``labels`` from ``hq.label``, stored ``leaves``), plus
    each point's split."""
    from qdrant_client import models

    from hierqdrant.store.collection import DEFAULT_PAYLOAD_KEY, iter_points, read_collection_model

    model, info = read_collection_model(engine, collection)
    key = info.get("payload_key", DEFAULT_PAYLOAD_KEY)
    flt = None
    if split is not None:
        flt = models.Filter(must=[models.FieldCondition(key=f"{key}.split", match=models.MatchValue(value=split))])
    names = _label_index(model)
    ids: list[str] = []
    vecs: list[np.ndarray] = []
    labels: list[int] = []
    leaves: list[int] = []
    splits: list[str | None] = []
    for batch_ids, z, payloads in iter_points(
        engine, collection, with_vectors=True, batch_size=batch_size, payload_key=key, filter=flt
    ):
        assert z is not None
        ids.extend(batch_ids)
        vecs.append(z)
        for p in payloads:
            hq = p.get(key) or {}
            labels.append(names.get(str(hq.get("label")), -1) if hq.get("label") is not None else -1)
            leaves.append(int(hq.get("leaf", -1)))
            splits.append(hq.get("split"))
    z_all = np.concatenate(vecs) if vecs else np.zeros((0, model.dims))
    items = Items(z_all, np.asarray(labels, dtype=np.int64), ids, np.asarray(leaves, dtype=np.int64))
    return model, info, items, splits


def stored_leaf_mode(model: HierarchyModel, items: Items) -> str:
    """Whether the stored leaves are the predicted ones or the labels (whichever agrees more)."""
    assert items.leaves is not None
    if len(items) == 0:
        return "predicted"
    predicted = float(np.mean(model.assign(items.z, projected=True) == items.leaves))
    known = items.labels >= 0
    by_label = float(np.mean(items.labels[known] == items.leaves[known])) if known.any() else 0.0
    return "label" if by_label > predicted else "predicted"


def evaluate_collection(
    engine: Engine,
    collection: str,
    queries: Items | None,
    methods: Sequence[Method],
    *,
    database: Items | None = None,
    db_split: str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    map_r: bool = True,
    scoring: Scoring | None = None,
    mahp_ks: Sequence[int] = (250,),
    hdist_ks: Sequence[int] = (10,),
    leaf_from: str | None = None,
    strategy: str = "exact",
    exact: bool = True,
    hnsw_ef: int | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Rank a collection for every query through the engine and score the rankings.

    ``queries=None`` is leave-one-out over the collection (or its ``db_split``): every point is a
    query, its own point excluded by id. Otherwise ``queries.z`` are projected vectors of the
    collection's model (:meth:`HierarchyModel.transform`) and a query whose id is a point of the
    collection is excluded from its own ranking. ``database`` may pass the points already read with
    :func:`read_collection_items`. ``leaf_from``: how the collection's leaves were made (checked
    against the stored payloads; ``None`` accepts whatever is stored).
    """
    from qdrant_client import models

    from hierqdrant.store.collection import DEFAULT_PAYLOAD_KEY, read_collection_model
    from hierqdrant.store.search import HierarchicalSearcher

    methods = _unique(methods)
    stored, info = read_collection_model(engine, collection)
    key = info.get("payload_key", DEFAULT_PAYLOAD_KEY)
    if database is None:
        _, _, database, _ = read_collection_items(engine, collection, split=db_split)
    if len(database) == 0:
        raise InputError(
            f"collection {collection!r} has no points" + (f" of split {db_split!r}" if db_split else ""),
            "ingest images first or pick another --db-split",
        )
    if (database.labels < 0).any():
        raise InputError(
            f"{int((database.labels < 0).sum())} points of collection {collection!r} have no label",
            "evaluate on labelled points (e.g. --db-split train)",
        )
    mode = stored_leaf_mode(stored, database)
    if leaf_from is not None and leaf_from != mode:
        raise InputError(
            f"collection {collection!r} stores {mode} leaves, not {leaf_from} ones",
            f"pass --leaf-from {mode} or re-ingest with --leaf-from {leaf_from}",
        )
    if queries is None:
        queries = database
    num_classes = stored.num_classes
    _check_query_labels(queries, num_classes)
    ks = sorted({int(k) for k in ks})
    mahp_ks = sorted({int(k) for k in mahp_ks}) if scoring is not None else []
    hdist_ks = sorted({int(k) for k in hdist_ks}) if scoring is not None else []
    counts = _class_counts(database, num_classes)
    self_idx = _self_index(queries, database)
    has_self = self_idx >= 0
    depth = _depth(counts, queries.labels, has_self, len(database), ks, map_r, mahp_ks, hdist_ks)
    user_filter = None
    if db_split is not None:
        user_filter = models.Filter(
            must=[models.FieldCondition(key=f"{key}.split", match=models.MatchValue(value=db_split))]
        )
    db_label_of = dict(zip(database.ids, database.labels.tolist(), strict=True))

    scratch: list[str] = []
    per_query: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    paths: dict[str, str] = {}
    try:
        for m in methods:
            t0 = time.perf_counter()
            ranked: list[list[str]]
            if m.name == "euclidean":
                target = _scratch_name(collection, "euclidean")
                x_aug, q_aug = euclidean_vectors(database.z, queries.z)
                engine.create(target, x_aug.shape[1])
                scratch.append(target)
                engine.upsert(
                    target,
                    database.ids,
                    x_aug.astype(np.float32),
                    [{key: {"label": stored.class_names[y]}} for y in database.labels.tolist()],
                )
                engine.optimize(target)
                params = models.SearchParams(exact=exact, hnsw_ef=hnsw_ef) if (exact or hnsw_ef) else None
                ranked = []
                for start in range(0, len(queries), batch_size):
                    block = q_aug[start : start + batch_size]
                    requests = [
                        models.QueryRequest(
                            query=row.astype(np.float32).tolist(), limit=depth + 1, params=params, with_payload=True
                        )
                        for row in block
                    ]
                    for hits in engine.query_batch(target, requests):
                        ranked.append([h.id for h in hits])
                    if progress is not None:
                        progress(block.shape[0])
                paths[m.key] = "engine (augmented cosine, temporary collection)"
            else:
                model = stored if m.model is None else m.model
                target, searcher_model = collection, None
                if not _same_tree(model, stored):
                    target = _scratch_name(collection, m.name)
                    _copy_collection(engine, target, model, database, key)
                    scratch.append(target)
                    searcher_model = model
                    paths[m.key] = "engine (HierarchicalSearcher, temporary collection with this tree)"
                else:
                    paths[m.key] = "engine (HierarchicalSearcher)"
                searcher = HierarchicalSearcher(
                    engine,
                    target,
                    model=searcher_model,
                    strategy=strategy,  # type: ignore[arg-type]
                    exact=exact,
                    hnsw_ef=hnsw_ef,
                )
                flt = user_filter if target == collection else None
                use_strategy = "rerank" if m.name == "cosine" else strategy
                ranked = []
                for start in range(0, len(queries), batch_size):
                    block = queries.z[start : start + batch_size]
                    found = searcher.search_batch(
                        block,
                        depth + 1,
                        filter=flt,
                        strategy=use_strategy,  # type: ignore[arg-type]
                        alpha=m.effective_alpha,
                        oversample=1.0,
                        projected=True,
                    )
                    ranked.extend([[h.id for h in row] for row in found])
                    if progress is not None:
                        progress(block.shape[0])
            retrieved = np.full((len(queries), depth), -1, dtype=np.int64)
            for i, row in enumerate(ranked):
                own = queries.ids[i]
                labels = [db_label_of.get(pid, -1) for pid in row if pid != own][:depth]
                retrieved[i, : len(labels)] = labels
            per_query[m.key] = _chunk_metrics(
                retrieved, queries.labels, has_self, counts, ks, map_r, scoring, mahp_ks, hdist_ks
            )
            seconds[m.key] = time.perf_counter() - t0
    finally:
        for name in scratch:
            try:
                engine.delete(name)
            except Exception:  # a failed clean-up must not hide the evaluation's own error
                pass
    return EvalResult(
        protocol=_protocol(has_self, len(queries), len(database)),
        queries=len(queries),
        database=len(database),
        metrics={name: _means(rows) for name, rows in per_query.items()},
        per_query=per_query,
        settings={m.key: {**m.describe(), "path": paths.get(m.key)} for m in methods},
        scored_by=scoring.name if scoring is not None else None,
        depth=depth,
        seconds=seconds,
        info={"path": "engine", "collection": collection, "engine": getattr(engine, "kind", "?"), "leaves": mode},
    )


def _same_tree(a: HierarchyModel, b: HierarchyModel) -> bool:
    """Same PCA, Gaussians and tree (α may differ): the collection's payloads fit ``a``."""
    return (
        a.hierarchy.same_shape(b.hierarchy)
        and a.dims == b.dims
        and np.array_equal(a.projection.components, b.projection.components)
        and np.array_equal(a.gaussians.means, b.gaussians.means)
    )


def _scratch_name(collection: str, method: str) -> str:
    return f"{collection}-hqeval-{method}-{uuid.uuid4().hex[:8]}"


def _copy_collection(engine: Engine, target: str, model: HierarchyModel, database: Items, key: str) -> None:
    """A temporary collection with the same ids, vectors and leaves, and ``model``'s ancestor paths."""
    from hierqdrant.store.collection import create_collection, hq_payload

    assert database.leaves is not None
    create_collection(engine, target, model, payload_key=key)
    norms = np.linalg.norm(database.z, axis=1)
    payloads = []
    for y, leaf, norm in zip(database.labels.tolist(), database.leaves.tolist(), norms, strict=True):
        payloads.append({key: hq_payload(model, int(leaf), label=None if y < 0 else int(y), norm=float(norm))})
    engine.upsert(target, database.ids, database.z.astype(np.float32), payloads)
    engine.optimize(target)


# -------------------------------------------------------------------------------- comparison


def paired(
    result: EvalResult,
    a: str = "overlap",
    b: str = "cosine",
    metrics: Sequence[str] = ("map@10", "map@r"),
    *,
    n_resamples: int = 10000,
    seed: int = 0,
) -> dict[str, PairedResult]:
    """Paired randomisation + bootstrap test of method ``a`` against ``b`` on each metric, over the
    same queries (:func:`hierqdrant.evaluation.significance.paired_test`)."""
    from hierqdrant.evaluation.significance import paired_test

    if a not in result.per_query or b not in result.per_query:
        raise InputError(f"a paired test needs both {a!r} and {b!r} among the methods")
    out = {}
    for name in metrics:
        if name in result.per_query[a] and name in result.per_query[b]:
            out[name] = paired_test(
                result.per_query[a][name], result.per_query[b][name], n_resamples=n_resamples, seed=seed
            )
    return out
