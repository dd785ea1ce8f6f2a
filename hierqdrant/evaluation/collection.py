"""The methods' rankings through a Qdrant engine (:func:`evaluate_collection`), and reading a
collection's points for an evaluation (:func:`read_collection_items`).

Every query goes through the engine: ``cosine``, ``hierarchy-only`` and the hierarchical methods
through :class:`~hierqdrant.store.search.HierarchicalSearcher` (strategy ``exact`` with exhaustive
search by default); ``euclidean`` through a plain cosine query on augmented vectors (see
:func:`euclidean_vectors`). A method whose tree is not the collection's own runs on a temporary copy
of the collection (same ids, vectors and leaves, the method's ancestor paths), deleted afterwards.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.evaluation.items import Items, self_index, stored_leaf_mode
from hierqdrant.evaluation.methods import Method, unique_methods
from hierqdrant.evaluation.scoring import (
    DEFAULT_KS,
    EvalResult,
    Scoring,
    TopLists,
    check_query_labels,
    class_counts,
    means,
    needed_depth,
    protocol_name,
    score_rankings,
    top_positions,
)

if TYPE_CHECKING:
    from qdrant_client import models

    from hierqdrant.store.engines import Engine

__all__ = ["euclidean_vectors", "evaluate_collection", "read_collection_items", "training_rows"]


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


def _split_filter(key: str, split: str | None) -> models.Filter | None:
    """Points of one split (``hq.split``), or None for all of them."""
    if split is None:
        return None
    from qdrant_client import models

    return models.Filter(must=[models.FieldCondition(key=f"{key}.split", match=models.MatchValue(value=split))])


def read_collection_items(
    engine: Engine, collection: str, *, split: str | None = None, batch_size: int = 2048
) -> tuple[HierarchyModel, dict[str, Any], Items, list[str | None]]:
    """The collection's model, info, and all its points (optionally of one ``split``) as :class:`Items`
    (``z`` scaled back to the projected vectors, ``labels`` from ``hq.label``, stored ``leaves``), plus
    each point's split."""
    from hierqdrant.store.collection import DEFAULT_PAYLOAD_KEY, iter_points, read_collection_model

    model, info = read_collection_model(engine, collection)
    key = info.get("payload_key", DEFAULT_PAYLOAD_KEY)
    flt = _split_filter(key, split)
    names = {name: i for i, name in enumerate(model.class_names)}
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


def training_rows(items: Items, splits: Sequence[str | None]) -> np.ndarray:
    """Rows of the labelled points that are not of the test split: what ingest fitted the model on."""
    return np.flatnonzero((items.labels >= 0) & np.asarray([s != "test" for s in splits], dtype=bool))


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
    from hierqdrant.store.collection import DEFAULT_PAYLOAD_KEY, read_collection_model

    methods = unique_methods(methods)
    if any(m.raw for m in methods):
        raise InputError(
            f"collection {collection!r} stores PCA vectors, not the raw features that cosine-raw and "
            "euclidean-raw rank by",
            "leave them out, or evaluate the features file (--db FEATURES.npz)",
        )
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
    num_classes = len(stored.class_names)  # relevance is by class (not by sub-class leaf)
    check_query_labels(queries, num_classes)
    ks = sorted({int(k) for k in ks})
    mahp_ks = sorted({int(k) for k in mahp_ks}) if scoring is not None else []
    hdist_ks = sorted({int(k) for k in hdist_ks}) if scoring is not None else []
    counts = class_counts(database, num_classes)
    has_self = self_index(queries, database) >= 0
    depth = needed_depth(counts, queries.labels, has_self, len(database), ks, map_r, mahp_ks, hdist_ks)
    user_filter = _split_filter(key, db_split)
    db_label_of = dict(zip(database.ids, database.labels.tolist(), strict=True))
    db_position = {pid: i for i, pid in enumerate(database.ids)}
    heads: dict[str, np.ndarray] = {}  # the top of each ranking as database positions, for reports

    scratch: list[str] = []
    copies: dict[int, str] = {}  # one temporary copy per tree (hierarchy-only and overlap share one)
    per_query: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    paths: dict[str, str] = {}
    try:
        for m in methods:
            t0 = time.perf_counter()
            if m.name == "euclidean":
                target = _scratch_name(collection, "euclidean")
                scratch.append(target)
                ranked = _rank_euclidean(
                    engine, target, stored, database, queries, key, depth, exact, hnsw_ef, batch_size, progress
                )
                paths[m.key] = "engine (augmented cosine, temporary collection)"
            else:
                model = stored if m.model is None else m.model
                target, searcher_model = collection, None
                if not _same_tree(model, stored):
                    if id(model) not in copies:
                        copies[id(model)] = _scratch_name(collection, m.name)
                        _copy_collection(engine, copies[id(model)], model, database, key)
                        scratch.append(copies[id(model)])
                    target = copies[id(model)]
                    searcher_model = model
                    paths[m.key] = "engine (HierarchicalSearcher, temporary collection with this tree)"
                else:
                    paths[m.key] = "engine (HierarchicalSearcher)"
                ranked = _rank_searcher(
                    engine,
                    target,
                    searcher_model,
                    m,
                    queries,
                    depth,
                    user_filter if target == collection else None,
                    strategy,
                    exact,
                    hnsw_ef,
                    batch_size,
                    progress,
                )
            retrieved = np.full((len(queries), depth), -1, dtype=np.int64)
            for i, row in enumerate(ranked):
                own = queries.ids[i]
                labels = [db_label_of.get(pid, -1) for pid in row if pid != own][:depth]
                retrieved[i, : len(labels)] = labels
            heads[m.key] = top_positions(
                [[db_position.get(pid, -1) for pid in row if pid != queries.ids[i]] for i, row in enumerate(ranked)]
            )
            per_query[m.key] = score_rankings(
                retrieved, queries.labels, has_self, counts, ks, map_r, scoring, mahp_ks, hdist_ks
            )
            seconds[m.key] = time.perf_counter() - t0
    finally:
        for name in scratch:
            # a failed clean-up must not hide the evaluation's own error
            with contextlib.suppress(Exception):
                engine.delete(name)
    return EvalResult(
        protocol=protocol_name(has_self, len(queries), len(database)),
        queries=len(queries),
        database=len(database),
        metrics={name: means(rows) for name, rows in per_query.items()},
        per_query=per_query,
        settings={m.key: {**m.describe(), "path": paths.get(m.key)} for m in methods},
        scored_by=scoring.name if scoring is not None else None,
        depth=depth,
        seconds=seconds,
        info={"path": "engine", "collection": collection, "engine": getattr(engine, "kind", "?"), "leaves": mode},
        tops=TopLists(
            queries.ids, queries.labels, database.ids, database.labels, heads, scoring.tree if scoring else None
        ),
    )


def _rank_euclidean(
    engine: Engine,
    target: str,
    stored: HierarchyModel,
    database: Items,
    queries: Items,
    key: str,
    depth: int,
    exact: bool,
    hnsw_ef: int | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> list[list[str]]:
    """Point ids ranked by Euclidean distance: a plain cosine query on augmented vectors in ``target``
    (created here; the caller deletes it)."""
    from qdrant_client import models

    x_aug, q_aug = euclidean_vectors(database.z, queries.z)
    engine.create(target, x_aug.shape[1])
    engine.upsert(
        target,
        database.ids,
        x_aug.astype(np.float32),
        [{key: {"label": stored.class_names[y]}} for y in database.labels.tolist()],
    )
    engine.optimize(target)
    params = models.SearchParams(exact=exact, hnsw_ef=hnsw_ef) if (exact or hnsw_ef) else None
    ranked: list[list[str]] = []
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
    return ranked


def _rank_searcher(
    engine: Engine,
    target: str,
    model: HierarchyModel | None,
    m: Method,
    queries: Items,
    depth: int,
    flt: models.Filter | None,
    strategy: str,
    exact: bool,
    hnsw_ef: int | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> list[list[str]]:
    """Point ids ranked by ``m``'s D through :class:`HierarchicalSearcher` (cosine: rerank with α = 0)."""
    from hierqdrant.store.search import HierarchicalSearcher

    searcher = HierarchicalSearcher(
        engine,
        target,
        model=model,
        strategy=strategy,  # type: ignore[arg-type]
        exact=exact,
        hnsw_ef=hnsw_ef,
    )
    use_strategy = "rerank" if m.name == "cosine" else strategy
    ranked: list[list[str]] = []
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
    return ranked


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
