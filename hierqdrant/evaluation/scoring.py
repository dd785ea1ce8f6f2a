"""From rankings to scores: metric names, the hierarchy that scores them, per-query metrics, results.

Protocols: **leave-one-out** (queries are database items; each query's own item is excluded by id,
and ``R`` counts one item fewer) and **queries vs database** (e.g. test images against the training
images). Metrics are those of :mod:`hierqdrant.evaluation.metrics` under the names of DESIGN.md §6.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hierqdrant.core.build import build_given, collapse_subclasses
from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel
from hierqdrant.evaluation import metrics as M
from hierqdrant.evaluation.items import Items
from hierqdrant.evaluation.methods import Method

if TYPE_CHECKING:
    from hierqdrant.evaluation.significance import PairedResult

__all__ = [
    "DEFAULT_KS",
    "EvalResult",
    "Scoring",
    "choose_scoring",
    "metric_names",
    "paired",
    "parse_metric",
    "split_metric_values",
    "taxonomy_scoring",
]

DEFAULT_KS: tuple[int, ...] = M.DEFAULT_KS


# ------------------------------------------------------------------------------------ metric names


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


def metric_names(
    ks: Sequence[int],
    *,
    map_r: bool = True,
    mahp_ks: Sequence[int] = (),
    hdist_ks: Sequence[int] = (),
    severity: bool = False,
) -> list[str]:
    """The metric keys that an evaluation reports for these settings, in table order."""
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


# ------------------------------------------------------------------------- the scoring hierarchy


@dataclass(frozen=True)
class Scoring:
    """The hierarchy that scores mahp@k, hdist@k and severity, and how to name it in a report."""

    lca_height: np.ndarray
    tree_height: int
    name: str
    tree: Hierarchy | None = None  # the tree itself, for reports that draw it (eval --html)

    @classmethod
    def from_hierarchy(cls, tree: Hierarchy, name: str) -> Scoring:
        return cls(tree.lca_height_matrix(), max(int(tree.tree_height), 1), name, tree)


def taxonomy_scoring(score_taxonomy: Path, class_names: Sequence[str]) -> Scoring:
    """mahp / hdist / severity scored against a taxonomy file."""
    tree = build_given(score_taxonomy, list(class_names), len(class_names))
    return Scoring.from_hierarchy(tree, f"taxonomy {score_taxonomy.name} (height {tree.tree_height})")


def choose_scoring(
    score_taxonomy: Path | None, methods: Sequence[Method], base: HierarchyModel, fallback_name: str
) -> Scoring:
    """A taxonomy file when given; else the learned overlap tree of the methods; else ``base``'s tree."""
    if score_taxonomy is not None:
        return taxonomy_scoring(score_taxonomy, base.class_names)
    for m in methods:
        if m.name in ("overlap", "hierarchy-only") and m.model is not None:
            t = m.model.threshold
            return Scoring.from_hierarchy(
                class_tree(m.model),
                f"learned overlap tree (t={t:g}, height {m.model.tree_height})"
                if t is not None
                else f"learned {m.model.builder} tree",
            )
    return Scoring.from_hierarchy(class_tree(base), fallback_name)


def class_tree(model: HierarchyModel) -> Hierarchy:
    """The model's tree over its classes: the tree itself, or with sub-class leaves (DESIGN.md §1.9) the
    class tree under them — relevance and the hierarchical metrics are by class."""
    if model.subclasses is None:
        return model.hierarchy
    return collapse_subclasses(model.hierarchy, model.subclasses.subclass_of, model.subclasses.classes)


# ---------------------------------------------------------------------------------- the results


#: How many items of each query's ranking a result keeps for reports (``hierqdrant eval --html``).
TOP_KEPT = 10


@dataclass
class TopLists:
    """The first :data:`TOP_KEPT` items of every query's ranking per method, for reports that show
    example queries: ``top[method]`` is (Q, TOP_KEPT) positions into ``db_ids`` / ``db_labels`` (−1 pads),
    beside the queries' ids and labels and the tree that scored them. Not part of the JSON output."""

    query_ids: list[str]
    query_labels: np.ndarray
    db_ids: list[str]
    db_labels: np.ndarray
    top: dict[str, np.ndarray]
    tree: Hierarchy | None = None


def top_positions(rows: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Rows of database positions (an array, or ragged lists) → a (Q, TOP_KEPT) array padded with −1."""
    if isinstance(rows, np.ndarray):
        out = np.full((rows.shape[0], TOP_KEPT), -1, dtype=np.int64)
        width = min(TOP_KEPT, rows.shape[1])
        out[:, :width] = rows[:, :width]
        return out
    out = np.full((len(rows), TOP_KEPT), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        kept = list(row)[:TOP_KEPT]
        out[i, : len(kept)] = kept
    return out


@dataclass
class EvalResult:
    """Scores of every method: ``metrics[method][metric]`` (means over queries where defined) and
    ``per_query[method][metric]`` (Q,) arrays for paired tests; ``tops`` the head of every ranking."""

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
    tops: TopLists | None = None

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


# ----------------------------------------------------------------------- scoring the rankings


def check_query_labels(queries: Items, num_classes: int) -> None:
    if len(queries) == 0:
        raise InputError("no queries to evaluate", "pass labelled query images or features")
    if (queries.labels < 0).any():
        raise InputError(
            f"{int((queries.labels < 0).sum())} queries have no label", "evaluate with labelled queries only"
        )
    if int(queries.labels.max()) >= num_classes:
        raise InputError(f"query labels reach {int(queries.labels.max())}, the model has {num_classes} classes")


def class_counts(database: Items, num_classes: int) -> np.ndarray:
    known = database.labels[database.labels >= 0]
    if known.size and int(known.max()) >= num_classes:
        raise InputError(f"database labels reach {int(known.max())}, the model has {num_classes} classes")
    return np.bincount(known, minlength=num_classes).astype(np.int64)


def needed_depth(
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


def score_rankings(
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
    """Per-query metrics of ranked labels ``retrieved`` (Q, depth); queries with and without their own
    item in the database are scored apart (``self_in_db`` decides R and the ideal ranking of mAHP)."""
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


def concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-query metrics of consecutive chunks of queries, joined."""
    if not parts:
        return {}
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def means(rows: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean of every metric over the queries where it is defined (NaN when it is nowhere)."""
    out = {}
    for key, values in rows.items():
        ok = ~np.isnan(values)
        out[key] = float(values[ok].mean()) if ok.any() else float("nan")
    return out


def protocol_name(has_self: np.ndarray, n_queries: int, n_db: int) -> str:
    if has_self.all() and n_queries > 0:
        return "leave-one-out"
    if not has_self.any():
        return "queries-vs-database"
    return "mixed (queries found in the database are excluded from their own ranking)"
