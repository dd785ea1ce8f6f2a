"""The methods' rankings with NumPy brute force, and their scores (:func:`evaluate_arrays`).

Vectorised over chunks of queries: one matrix product per chunk shared by all cosine-based methods,
top-n by ``argpartition``; ties are ordered by database position. The same rankings run through a
Qdrant engine in :mod:`hierqdrant.evaluation.collection`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.core.model import HierarchyModel, unit_rows
from hierqdrant.evaluation.items import Items, database_leaves, self_index
from hierqdrant.evaluation.methods import Method, unique_methods
from hierqdrant.evaluation.scoring import (
    DEFAULT_KS,
    TOP_KEPT,
    EvalResult,
    Scoring,
    TopLists,
    check_query_labels,
    class_counts,
    concatenate,
    means,
    needed_depth,
    protocol_name,
    score_rankings,
    top_positions,
)

__all__ = ["CHUNK_ELEMENTS", "evaluate_arrays", "rank"]

# Elements of one (queries × database) block: bounds the memory of a chunk to a few hundred MB.
CHUNK_ELEMENTS = 1 << 22


def _top(dist: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n smallest entries of every row, ascending (ties: lower index first);
    ``inf`` entries (excluded items) come back as −1.

    ``argpartition`` finds the n smallest in O(N); sorting their indices first and then their values
    with a stable sort orders ties by index (cheaper than a two-key ``lexsort``)."""
    rows, cols = dist.shape
    if n < cols:
        part = np.argpartition(dist, n - 1, axis=1)[:, :n]
        part.sort(axis=1)
    else:
        part = np.broadcast_to(np.arange(cols), (rows, cols)).copy()
    vals = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    idx[~np.isfinite(np.take_along_axis(vals, order, axis=1))] = -1
    return idx


def _chunks(n_queries: int, n_db: int, chunk_elements: int) -> Iterator[slice]:
    size = max(1, chunk_elements // max(n_db, 1))
    for start in range(0, n_queries, size):
        yield slice(start, min(n_queries, start + size))


class _Context:
    """What every chunk of queries shares: unit database vectors, squared norms (of the PCA vectors
    and, for the raw methods, of the raw features), and per tree the query leaves, the database
    leaves and the (K, K) table of h(LCA)/H."""

    def __init__(self, queries: Items, database: Items, methods: Sequence[Method], leaf_from: str) -> None:
        self.queries = queries
        self.database = database
        self.needs_cos = any(m.name not in ("euclidean", "cosine-raw", "euclidean-raw") for m in methods)
        self.needs_raw = any(m.raw for m in methods)
        if self.needs_raw and (queries.raw is None or database.raw is None):
            raise InputError(
                "cosine-raw and euclidean-raw need the raw features of the queries and the database",
                "evaluate a features file or an image folder, or leave these methods out",
            )
        if self.needs_raw:
            assert queries.raw is not None and database.raw is not None
            if queries.raw.shape[1] != database.raw.shape[1]:
                raise InputError(f"raw queries have {queries.raw.shape[1]} dims, the database {database.raw.shape[1]}")
            self.raw_db = np.asarray(database.raw, dtype=np.float64)
            names = {m.name for m in methods}
            self.raw_unit = unit_rows(self.raw_db) if "cosine-raw" in names else self.raw_db
            self.raw_sq = np.einsum("ij,ij->i", self.raw_db, self.raw_db)
        self.db_unit = unit_rows(database.z) if self.needs_cos else database.z
        self.db_sq = np.einsum("ij,ij->i", database.z, database.z)
        self.q_leaves: dict[tuple[int, int], np.ndarray] = {}
        self.db_leaves: dict[tuple[int, int], np.ndarray] = {}
        self.tables: dict[int, np.ndarray] = {}
        for m in methods:
            if m.model is None or not m.hierarchical:
                continue
            g = _leaf_key(m.model)
            if g not in self.q_leaves:
                self.q_leaves[g] = m.model.assign(queries.z, projected=True, raw=queries.raw)
                self.db_leaves[g] = (
                    database.leaves if database.leaves is not None else database_leaves(m.model, database, leaf_from)
                )
            if id(m.model) not in self.tables:
                self.tables[id(m.model)] = m.model.lca_height_matrix() / max(m.model.tree_height, 1)

    def cosine(self, sl: slice) -> np.ndarray | None:
        """(c, N) cosine distances 1 − ẑ_q·ẑ_x of a chunk of queries."""
        if not self.needs_cos:
            return None
        return 1.0 - unit_rows(self.queries.z[sl]) @ self.db_unit.T

    def distances(self, sl: slice, m: Method, cos_dist: np.ndarray | None, own: np.ndarray) -> np.ndarray:
        """(c, N) distances of ``m`` for a chunk; a query's own item (position ``own``) gets +inf."""
        if m.name in ("euclidean", "euclidean-raw"):
            raw = m.name == "euclidean-raw"
            qz = np.asarray(self.queries.raw[sl], dtype=np.float64) if raw else self.queries.z[sl]  # type: ignore[index]
            sq = np.einsum("ij,ij->i", qz, qz)
            dist = (
                sq[:, None]
                + (self.raw_sq if raw else self.db_sq)[None, :]
                - 2.0 * (qz @ (self.raw_db if raw else self.database.z).T)
            )
        elif m.name == "cosine-raw":
            assert self.queries.raw is not None
            dist = 1.0 - unit_rows(np.asarray(self.queries.raw[sl], dtype=np.float64)) @ self.raw_unit.T
        elif m.name == "cosine":
            assert cos_dist is not None
            dist = cos_dist.copy()
        else:
            assert cos_dist is not None and m.model is not None
            g = _leaf_key(m.model)
            # Gather h(LCA)/H rows of the chunk's query leaves, then the database leaves' columns.
            lev = np.take(self.tables[id(m.model)][self.q_leaves[g][sl]], self.db_leaves[g], axis=1)
            dist = cos_dist + m.effective_alpha * lev
        rows = np.flatnonzero(own >= 0)
        dist[rows, own[rows]] = np.inf
        return dist


def _leaf_key(model: HierarchyModel) -> tuple[int, int]:
    """Models with the same Gaussians and query classifier (trees refitted from one model) give every
    item the same leaf: their leaves are computed once."""
    return id(model.gaussians), id(model.classifier)


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
    own = self_index(queries, database)
    out = np.full((len(queries), n), -1, dtype=np.int64)
    depth = min(n, len(database))
    for sl in _chunks(len(queries), len(database), chunk_elements):
        out[sl, :depth] = _top(ctx.distances(sl, method, ctx.cosine(sl), own[sl]), depth)
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
    ``E = ‖z_q‖² + ‖z_x‖² − 2 z_q z_xᵀ`` for euclidean (the same on the raw features ``x`` for
    cosine-raw and euclidean-raw, which need ``Items.raw``); a hierarchical method adds
    ``α·h(LCA(n_q, n_x))/H`` from the (K, K) LCA-height table of its tree. The query's own item
    (same id) gets ``+inf`` and is never returned. Each query needs the top ``max(k, R_q)`` items;
    ``argpartition`` finds them in O(N) per query before they are sorted.
    """
    methods = unique_methods(methods)
    check_query_labels(queries, num_classes)
    if len(database) == 0:
        raise InputError("the database is empty", "pass a database with items")
    if queries.z.shape[1] != database.z.shape[1]:
        raise InputError(f"queries have {queries.z.shape[1]} dims, the database {database.z.shape[1]}")
    ks = sorted({int(k) for k in ks})
    mahp_ks = sorted({int(k) for k in mahp_ks}) if scoring is not None else []
    hdist_ks = sorted({int(k) for k in hdist_ks}) if scoring is not None else []
    counts = class_counts(database, num_classes)
    own = self_index(queries, database)
    has_self = own >= 0
    n_db = len(database)
    depth = needed_depth(counts, queries.labels, has_self, n_db, ks, map_r, mahp_ks, hdist_ks)

    ctx = _Context(queries, database, methods, leaf_from)
    db_labels = database.labels
    parts: dict[str, list[dict[str, np.ndarray]]] = {m.key: [] for m in methods}
    heads: dict[str, list[np.ndarray]] = {m.key: [] for m in methods}  # the top of each ranking, for reports
    seconds = dict.fromkeys(parts, 0.0)
    for sl in _chunks(len(queries), n_db, chunk_elements):
        t0 = time.perf_counter()
        cos_dist = ctx.cosine(sl)
        shared = (time.perf_counter() - t0) / len(methods)
        for m in methods:
            t1 = time.perf_counter()
            idx = _top(ctx.distances(sl, m, cos_dist, own[sl]), depth)
            retrieved = np.where(idx >= 0, db_labels[np.maximum(idx, 0)], -1)
            heads[m.key].append(top_positions(idx))
            parts[m.key].append(
                score_rankings(
                    retrieved, queries.labels[sl], has_self[sl], counts, ks, map_r, scoring, mahp_ks, hdist_ks
                )
            )
            seconds[m.key] += time.perf_counter() - t1 + shared
        if progress is not None:
            progress(sl.stop - sl.start)
    per_query = {name: concatenate(p) for name, p in parts.items()}
    return EvalResult(
        protocol=protocol_name(has_self, len(queries), n_db),
        queries=len(queries),
        database=n_db,
        metrics={name: means(rows) for name, rows in per_query.items()},
        per_query=per_query,
        settings={m.key: m.describe() for m in methods},
        scored_by=scoring.name if scoring is not None else None,
        depth=depth,
        seconds=seconds,
        info={"path": "numpy"},
        tops=TopLists(
            queries.ids,
            queries.labels,
            database.ids,
            db_labels,
            {name: np.concatenate(h) if h else np.zeros((0, TOP_KEPT), np.int64) for name, h in heads.items()},
            scoring.tree if scoring is not None else None,
        ),
    )
