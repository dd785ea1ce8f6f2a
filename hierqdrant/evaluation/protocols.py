"""Evaluation protocols without leakage: which one applies, cross-fitting folds, and joining fold results.

A query *leaks* when it is one of the items the model is fitted on (same source and key, or the same
collection point): its label then shaped the class Gaussians that give it its leaf, and the score is
optimistic (on 1,280-d features map@10 0.996 this way against 0.669 with held-out queries). The honest
protocols, named in every report (``protocol``):

* ``queries-vs-database`` — held-out queries (``--queries``) against a database the model is fitted on;
* ``leave-one-out`` — every query is a database item, excluded from its own ranking, and the model was
  fitted on other items (``--fit`` / ``--fit-on TRAIN``, or the source's train split): the paper's;
* ``cross-fitting`` — the default when queries leak: the training items are split into k stratified,
  seeded folds; the queries that are training items take their item's fold, the others a seeded
  random fold. For fold f a model is fitted on the training items *outside* fold f (PCA, Gaussians,
  leaf classifier, tree, and with ``--tune`` its tuning); the queries of fold f are ranked against the
  whole database, every database item getting its leaf (and its PCA vector) from that fold's model. So
  a query's label never reaches the model that ranks it, while the database is ranked as in the other
  protocols. The raw-feature baselines need no model and rank every query once.
* ``loo-leaky`` — only when asked (``--protocol loo-leaky``): one model fitted on everything, flagged.

The ``ranking`` key says how queries relate to the database whatever the protocol (leave-one-out,
queries-vs-database, or mixed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hierqdrant.core import diagnostics
from hierqdrant.core.errors import InputError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.evaluation.methods import Method
from hierqdrant.evaluation.scoring import EvalResult, TopLists, means
from hierqdrant.evaluation.tune_grid import pca_json
from hierqdrant.evaluation.tuning import TuneResult

if TYPE_CHECKING:
    from hierqdrant.evaluation.plan import EvalContext

__all__ = [
    "assign_folds",
    "check_fold_classes",
    "fit_index",
    "fold_record",
    "merge_results",
    "protocol_note",
    "query_folds",
    "with_folds",
]


def fit_index(query_keys: Sequence[str], fit_keys: Sequence[str], same_origin: bool = True) -> np.ndarray:
    """For every query, the position of the same item among the training items, or −1 (``same_origin``
    False: the two come from different files or folders, so no query is a training item)."""
    if not same_origin:
        return np.full(len(query_keys), -1, dtype=np.int64)
    where = {key: i for i, key in enumerate(fit_keys)}
    return np.asarray([where.get(key, -1) for key in query_keys], dtype=np.int64)


def assign_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold 0 … k−1 for every training item: stratified (each class dealt round the folds in a seeded
    random order, continuing where the previous class stopped, so folds differ in size by at most one)."""
    if k < 2:
        raise InputError(f"cross-fitting needs at least 2 folds, got {k}", "e.g. --folds 5")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    rng = np.random.default_rng([seed, 2])
    folds = np.empty(y.shape[0], dtype=np.int64)
    start = 0
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        folds[members] = (start + np.arange(members.size)) % k
        start += members.size
    return folds


def query_folds(match: np.ndarray, fit_folds: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The fold of every query: its training item's fold, or a seeded random fold when it is none."""
    rng = np.random.default_rng([seed, 3])
    out: np.ndarray = np.asarray(rng.integers(0, k, size=match.shape[0]), dtype=np.int64)
    hit = match >= 0
    out[hit] = fit_folds[match[hit]]
    return out


def check_fold_classes(labels: np.ndarray, folds: np.ndarray, k: int, class_names: Sequence[str]) -> None:
    """Every fold's training part must hold every class (a class with one training item cannot be fitted
    without the query that is that item)."""
    y = np.asarray(labels, dtype=np.int64)
    num = len(class_names)
    for f in range(k):
        counts = np.bincount(y[folds != f], minlength=num)
        if (counts == 0).any():
            missing = [class_names[i] for i in np.flatnonzero(counts == 0)[:5]]
            raise InputError(
                f"cross-fitting: classes {missing} have no training items outside fold {f + 1} "
                "(a class needs at least 2 training items)",
                "evaluate held-out queries (--queries, --fit-on TRAIN) or add images",
            )


def merge_results(parts: Sequence[tuple[np.ndarray, EvalResult]], n_queries: int) -> EvalResult:
    """One result from results on parts of the queries (``(positions, result)``; every method's parts
    cover every query once): per-query scores put back in query order, means recomputed, seconds summed,
    each method's settings from its first part. Methods keep their order of first appearance."""
    order: list[str] = []
    for _, res in parts:
        order += [m for m in res.metrics if m not in order]
    per_query: dict[str, dict[str, np.ndarray]] = {}
    settings: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for name in order:
        rows: dict[str, np.ndarray] = {}
        for pos, res in parts:
            if name not in res.per_query:
                continue
            settings.setdefault(name, res.settings.get(name, {}))
            seconds[name] = seconds.get(name, 0.0) + res.seconds.get(name, 0.0)
            for key, values in res.per_query[name].items():
                rows.setdefault(key, np.full(n_queries, np.nan))[pos] = values
        per_query[name] = rows
    first = parts[0][1]
    return EvalResult(
        protocol=first.protocol,
        queries=n_queries,
        database=first.database,
        metrics={name: means(rows) for name, rows in per_query.items()},
        per_query=per_query,
        settings=settings,
        scored_by=first.scored_by,
        depth=max(res.depth for _, res in parts),
        seconds=seconds,
        info=dict(first.info),
        tops=merge_tops(parts, n_queries),
    )


def merge_tops(parts: Sequence[tuple[np.ndarray, EvalResult]], n_queries: int) -> TopLists | None:
    """The parts' ranking heads in query order (every part ranks the same database); None when a part
    has none. The tree is the first part's: cross-fitting scores every fold with one reference tree."""
    tops = [(pos, res.tops) for pos, res in parts if res.tops is not None]
    if not tops or len(tops) != len(parts):
        return None
    first = tops[0][1]
    ids = [""] * n_queries
    labels = np.full(n_queries, -1, dtype=np.int64)
    top: dict[str, np.ndarray] = {}
    for pos, t in tops:
        for j, p in enumerate(np.asarray(pos)):
            ids[int(p)] = t.query_ids[j]
        labels[pos] = t.query_labels
        for name, rows in t.top.items():
            top.setdefault(name, np.full((n_queries, rows.shape[1]), -1, dtype=np.int64))[pos] = rows
    tree = next((t.tree for _, t in tops if t.tree is not None), None)
    return TopLists(ids, labels, first.db_ids, first.db_labels, top, tree)


def protocol_note(
    protocol: str, *, folds: int = 0, fit: str = "", scored_by: str | None = None, leaf_from: str = "predicted"
) -> str:
    """One sentence that says what the protocol did, for the report's notes."""
    if protocol == "cross-fitting":
        leaves = "their labels" if leaf_from == "label" else "that fold's model"
        return (
            f"cross-fitting, {folds} folds: each query was ranked by a model (PCA, class Gaussians, leaf "
            f"classifier, tree) fitted without its fold on {fit}; database items took their leaves from {leaves}"
            + (f"; mahp/hdist/severity scored by the {scored_by}" if scored_by else "")
        )
    if protocol == "loo-leaky":
        return f"loo-leaky: the model was fitted on {fit}, queries included (optimistic, asked for explicitly)"
    if protocol == "leave-one-out":
        return f"leave-one-out over items the model was not fitted on (fitted on {fit}): the paper's protocol"
    if protocol == "queries-vs-database":
        return f"held-out queries against the database; the model was fitted on {fit}, none of the queries"
    return f"{protocol}; the model was fitted on {fit}, none of the queries"


def fold_record(
    f: int, queries: int, fit_items: int, base: HierarchyModel, methods: list[Method], tuned: dict[str, TuneResult]
) -> dict[str, Any]:
    """What fold ``f`` fitted and chose."""
    record: dict[str, Any] = {"fold": f + 1, "queries": int(queries), "fit_items": int(fit_items), "dims": base.dims}
    record["methods"] = {
        m.key: {k: v for k, v in m.describe().items() if k in ("threshold", "alpha", "tree_height")}
        for m in methods
        if m.hierarchical
    }
    if tuned:
        record["tuned"] = {b: {"pca": pca_json(r.best_pca), "best_score": r.best_score} for b, r in tuned.items()}
    return record


def with_folds(tuned: dict[str, TuneResult], fold_info: list[dict[str, Any]]) -> dict[str, TuneResult]:
    """The first fold's tuning per builder, with every fold's choice under ``folds``."""
    for builder, r in tuned.items():
        r.extra["folds"] = [
            {"fold": rec["fold"], **rec["methods"].get(builder, {}), **rec.get("tuned", {}).get(builder, {})}
            for rec in fold_info
        ]
    return tuned


def fold_splits(q_folds: np.ndarray, fit_folds: np.ndarray, k: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(fold, its query rows, the fitting rows outside it)`` of every fold that has queries."""
    for f in range(k):
        rows = np.flatnonzero(q_folds == f)
        if rows.size:
            yield f, rows, np.flatnonzero(fit_folds != f)


def finish_cross_fitting(
    ctx: EvalContext,
    parts: Sequence[tuple[np.ndarray, EvalResult]],
    fold_info: list[dict[str, Any]],
    n_queries: int,
    n_fit: int,
) -> EvalResult:
    """What both cross-fitting paths (arrays, engine) do after their folds: the flat-tree and leaf-accuracy
    warnings, the ``cross_fitting`` record of the JSON, and the per-fold results merged in query order. The
    leaf accuracy is what the folds counted with :meth:`EvalContext.count_leaves` (nan where no fold had a
    model, or its leaves were not measured)."""
    overlap = [rec["methods"]["overlap"] for rec in fold_info if "overlap" in rec["methods"]]
    if overlap and ctx.plan.tuning is None:  # tuning looks at every threshold it tries itself
        ctx.warn(*diagnostics.flat_tree([(o.get("threshold"), o["tree_height"]) for o in overlap]))
    accuracy = ctx.leaf_accuracy("query")
    ctx.warn(*diagnostics.low_leaf_accuracy(accuracy, f"on the {n_queries} cross-fitted queries"))
    ctx.extra["cross_fitting"] = {
        "folds": ctx.plan.folds,
        "seed": ctx.plan.seed,
        "fit_items": n_fit,
        "leaf_accuracy": accuracy,
        "per_fold": fold_info,
    }
    result = merge_results(parts, n_queries)
    result.metrics = {n: result.metrics[n] for n in ctx.names if n in result.metrics}
    return result
