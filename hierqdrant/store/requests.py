"""The Query API requests of :class:`~hierqdrant.store.search.HierarchicalSearcher`'s strategies (DESIGN.md §3).

One :class:`Requests` per searcher builds them: the ring filters ``hq.ancestors ∋ a_i`` combined with the
caller's filter (§3.7), the formula whose score is ``1 − D`` (§3.1), and the requests of ``rerank``,
``formula``, ``exact`` and ``auto``. Every request and every prefetch names the vector it searches
(``using``): ``None`` on a collection of our own (one unnamed vector), the application's vector name on an
attached collection (§2.7) — a top-level ``using`` does not reach prefetches, so each one carries it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import models

from hierqdrant.core.errors import InputError
from hierqdrant.store.engines.base import to_point_id

__all__ = ["Query", "Requests", "check_offset", "check_threshold", "cut", "is_point_id", "without_point"]


@dataclass
class Query:
    """One prepared query: the vector sent to Qdrant, its leaf and the leaf's path up to the root."""

    vector: list[float]
    leaf: int
    path: list[int]  # a_0 … a_L
    heights: list[int]  # η_0 … η_L
    rank: dict[int, int]  # node → i


class Requests:
    """Request builders for one collection: its payload key, the vector searched and the tree height H."""

    def __init__(self, payload_key: str, using: str | None, tree_height: int) -> None:
        self.payload_key = payload_key
        self.using = using or None
        self.height = max(int(tree_height), 1)
        # Built once per node and reused (pydantic validation is ~13 µs a filter; nothing mutates them)
        self._conditions: dict[int, models.FieldCondition] = {}
        self._rings: dict[int, models.Filter] = {}

    def ancestor_is(self, node: int) -> models.FieldCondition:
        """The point's path holds ``node``: its leaf lies under ``node``."""
        cond = self._conditions.get(node)
        if cond is None:
            key = f"{self.payload_key}.ancestors"
            cond = self._conditions[node] = models.FieldCondition(key=key, match=models.MatchValue(value=int(node)))
        return cond

    def ring_filter(self, node: int, user: models.Filter | None) -> models.Filter:
        """The caller's filter ∧ ``hq.ancestors ∋ node`` (§3.7)."""
        if user is not None:
            return models.Filter(must=[user, self.ancestor_is(node)])
        ring = self._rings.get(node)
        if ring is None:
            ring = self._rings[node] = models.Filter(must=[self.ancestor_is(node)])
        return ring

    def prefetch(
        self, q: Query, user: models.Filter | None, limit: int, params: models.SearchParams | None
    ) -> models.Prefetch:
        return models.Prefetch(query=q.vector, using=self.using, filter=user, limit=limit, params=params)

    def plain(
        self,
        q: Query,
        user: models.Filter | None,
        limit: int,
        params: models.SearchParams | None,
        with_payload: bool = True,
    ) -> models.QueryRequest:
        """The cosine top-``limit`` of the filtered set."""
        return models.QueryRequest(
            query=q.vector, using=self.using, filter=user, limit=limit, params=params, with_payload=with_payload
        )

    def ring(
        self, q: Query, i: int, user: models.Filter | None, k: int, params: models.SearchParams | None
    ) -> models.QueryRequest:
        """The cosine top-k of ring ``R_i`` (points under the query's ancestor ``a_i``)."""
        return models.QueryRequest(
            query=q.vector,
            using=self.using,
            filter=self.ring_filter(q.path[i], user),
            limit=k,
            params=params,
            with_payload=True,
        )

    def formula(self, q: Query, alpha: float) -> models.FormulaQuery:
        """``$score − α + Σ_{i<L} (α/H)(η_{i+1} − η_i)·[ancestors ∋ a_i]`` = 1 − D.

        A point without the payload key (an application's point not annotated yet) matches no condition:
        its score is ``cos − α``, i.e. D with its LCA taken as the root (§2.7).
        """
        terms: list[Any] = ["$score"]
        if alpha > 0:
            terms.append(-alpha)
            for i in range(len(q.path) - 1):
                weight = alpha / self.height * (q.heights[i + 1] - q.heights[i])
                terms.append(models.MultExpression(mult=[weight, self.ancestor_is(q.path[i])]))
        return models.FormulaQuery(formula=models.SumExpression(sum=terms))

    def formula_request(
        self,
        q: Query,
        user: models.Filter | None,
        candidates: int,
        k: int,
        params: models.SearchParams | None,
        alpha: float,
    ) -> models.QueryRequest:
        """``formula``: the cosine top-(m·k) re-scored by D inside Qdrant."""
        pre = self.prefetch(q, user, candidates, params)
        return models.QueryRequest(prefetch=[pre], query=self.formula(q, alpha), limit=k, with_payload=True)

    def exact_request(
        self, q: Query, user: models.Filter | None, k: int, params: models.SearchParams | None, alpha: float
    ) -> models.QueryRequest:
        """``exact``: a prefetch per ring and one unfiltered, under one outer cosine prefetch, re-scored."""
        rings = [self.prefetch(q, self.ring_filter(q.path[i], user), k, params) for i in range(len(q.path) - 1)]
        rings.append(self.prefetch(q, user, k, params))
        # One outer cosine prefetch over the union, so $score is the cosine of every ring member.
        outer = models.Prefetch(prefetch=rings, query=q.vector, using=self.using, limit=k * len(rings), params=params)
        return models.QueryRequest(prefetch=[outer], query=self.formula(q, alpha), limit=k, with_payload=True)

    def by_ids(self, q: Query, ids: Sequence[str]) -> models.QueryRequest:
        """The payloads (and cosines) of given points: a filter on their ids, scored exhaustively."""
        return models.QueryRequest(
            query=q.vector,
            using=self.using,
            filter=models.Filter(must=[models.HasIdCondition(has_id=[to_point_id(i) for i in ids])]),
            limit=len(ids),
            params=models.SearchParams(exact=True),
            with_payload=True,
        )


# ---------------------------------------------------------------------------------------------------------
# the Query API options people use: a point id as the query, offset, score_threshold


def is_point_id(query: Any) -> bool:
    """Whether ``query`` is a point id — a UUID (or its string), a whole number ≥ 0 (or its string) — rather
    than a vector."""
    if isinstance(query, (bool, np.bool_)):
        return False
    if isinstance(query, (uuid.UUID, int, np.integer)):
        return True
    if isinstance(query, str):
        if query.isdigit():
            return True
        try:
            uuid.UUID(query)
        except ValueError:
            return False
        return True
    return False


def without_point(user: models.Filter | None, pid: str | int) -> models.Filter:
    """The caller's filter, minus one point (the "more like this" query point itself)."""
    return models.Filter(must=[user] if user is not None else None, must_not=[models.HasIdCondition(has_id=[pid])])


def check_offset(offset: Any) -> int:
    """A whole number ≥ 0."""
    if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise InputError(f"offset must be a whole number ≥ 0, got {offset!r}", "e.g. offset=10 for the second page")
    return int(offset)


def check_threshold(threshold: Any) -> float | None:
    """``None`` or a finite number: the smallest score ``1 − D`` a hit may have."""
    if threshold is None:
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(threshold, (bool, np.bool_)) or not np.isfinite(value):
        raise InputError(f"score_threshold must be a finite number, got {threshold!r}", "e.g. score_threshold=0.2")
    return value


def cut(hits: list[Any], offset: int, threshold: float | None) -> list[Any]:
    """Hits sorted by D: those with score ``1 − D ≥ threshold`` (a prefix), then all but the first ``offset``."""
    if threshold is not None:
        hits = [h for h in hits if 1.0 - h.distance >= threshold]
    return hits[offset:]
