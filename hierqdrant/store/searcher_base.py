"""What :class:`~hierqdrant.store.search.HierarchicalSearcher` and
:class:`~hierqdrant.store.async_search.AsyncHierarchicalSearcher` share: their options, preparing queries
(PCA, the query's leaf and its path, DESIGN.md §3.8), and turning one ``search_batch`` call into a plan
(:mod:`hierqdrant.store.plans`) plus what is done to its hits afterwards (``offset``, ``score_threshold``,
``explain``). The two searchers differ only in how they read the model and answer the plan's batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import models

from hierqdrant.core.errors import InputError, ModelMismatchError, NotFoundError
from hierqdrant.core.model import HierarchyModel, check_alpha, unit_rows
from hierqdrant.store.collection import DEFAULT_PAYLOAD_KEY
from hierqdrant.store.engines.base import Record, canonical_id, to_point_id
from hierqdrant.store.plans import Plan, SearchHit, Strategies
from hierqdrant.store.policy import AutoPolicy, SearchStats, Strategy
from hierqdrant.store.requests import Query, Requests, check_offset, check_threshold, cut, without_point

__all__ = ["STRATEGIES", "Call", "SearcherBase"]

STRATEGIES: tuple[str, ...] = ("auto", "exact", "rerank", "formula")
CERTIFIED: frozenset[str] = frozenset({"auto", "exact"})
"""Strategies whose answer rests on several requests agreeing on one point set (DESIGN.md §3.11)."""


@dataclass
class Call:
    """One ``search_batch`` call: its plan, and what to do with the plan's hits."""

    plan: Plan
    prepared: list[Query]
    strategy: str
    alpha: float
    skip: int
    threshold: float | None
    explain: bool
    consistency: models.ReadConsistencyType | None  # for every request of the plan (a certified one on replicas)

    def finish(self, strategies: Strategies, hits: list[list[SearchHit]]) -> list[list[SearchHit]]:
        """``offset`` / ``score_threshold`` applied to each hit list, then the explanations."""
        if self.skip or self.threshold is not None:
            hits = [cut(row, self.skip, self.threshold) for row in hits]
        if self.explain:
            a, s = self.alpha, self.strategy
            hits = [[strategies.explain(q, h, a, s) for h in row] for q, row in zip(self.prepared, hits, strict=True)]
        return hits


class SearcherBase:
    """The engine-free part of a searcher; subclasses read the model and drive the plans."""

    collection: str
    model: HierarchyModel
    payload_key: str
    alpha: float
    strategy: str
    oversample: float
    policy: AutoPolicy
    exact: bool
    hnsw_ef: int | None
    quantization: models.QuantizationSearchParams | None
    vector: str | None
    requests: Requests
    strategies: Strategies
    consistency: models.ReadConsistencyType | None

    def _setup(
        self,
        collection: str,
        model: HierarchyModel,
        info: dict[str, Any],
        *,
        alpha: float | None,
        strategy: Strategy,
        payload_key: str | None,
        oversample: float,
        auto_rings: int | None,
        auto_cosine: bool | None,
        exact: bool,
        hnsw_ef: int | None,
        vector: str | None,
        quantization: models.QuantizationSearchParams | None,
        replication_factor: int,
    ) -> None:
        """Check and keep the options. With ``replication_factor > 1`` the certified strategies read with
        ``ReadConsistencyType.ALL`` (every replica of every shard answers each request, §3.11)."""
        self.collection = collection
        self.model = model
        self.payload_key = payload_key or info.get("payload_key") or DEFAULT_PAYLOAD_KEY
        self.alpha = model.alpha if alpha is None else check_alpha(alpha)
        self.strategy = check_strategy(strategy)
        self.oversample = check_oversample(oversample)
        self.policy = AutoPolicy(model.tree_height, rings=auto_rings, cosine=auto_cosine)
        self.exact = exact
        self.hnsw_ef = hnsw_ef
        self.quantization = quantization
        self.consistency = models.ReadConsistencyType.ALL if replication_factor > 1 else None
        stored = info.get("vector") or None
        if (vector or None) != stored and vector is not None:
            raise ModelMismatchError(
                f"collection {collection!r} is searched on "
                f"{'its vector ' + repr(stored) if stored else 'its one unnamed vector'}, not {vector!r}",
                "omit vector= (the model was fitted on that vector), or attach the collection on another vector",
            )
        self.vector = stored
        self.requests = Requests(self.payload_key, stored, model.tree_height)
        self.strategies = Strategies(model, self.requests, self.payload_key)
        # HierarchyModel.zero_rows's bound (1e-5 × the classes' typical spread, the root of their covariances'
        # mean trace), a constant of the model: computed once here instead of on every query (~0.1 ms each)
        self._zero_norm = 1e-5 * float(np.sqrt(np.mean(np.einsum("kii->k", model.gaussians.covariances))))

    @property
    def auto_rings(self) -> int | None:
        """The fixed ring count of ``auto``; ``None``: adaptive (see :class:`AutoPolicy`)."""
        return self.policy.rings

    @auto_rings.setter
    def auto_rings(self, value: int | None) -> None:
        self.policy.rings = value

    @property
    def auto_cosine(self) -> bool | None:
        """Whether ``auto`` always/never sends the cosine query with the rings; ``None``: adaptive."""
        return self.policy.cosine

    @auto_cosine.setter
    def auto_cosine(self, value: bool | None) -> None:
        self.policy.cosine = value

    @property
    def stats(self) -> SearchStats:
        """A consistent copy of the counters since the searcher was made (safe to read while others search)."""
        return self.policy.stats()

    # -- one call ----------------------------------------------------------------------------------------

    def _single(self, query: Any, leaf: Any) -> tuple[np.ndarray, list[int] | None]:
        """``search``'s one query as a one-row matrix, and its leaf override."""
        batch = query_matrix(query, self.model, "query")
        if batch.shape[0] != 1:
            raise InputError(f"search takes one query vector, got {batch.shape[0]}", "use search_batch for several")
        return batch, None if leaf is None else [int(leaf)]

    def _call(
        self,
        queries: np.ndarray | Sequence[Sequence[float]],
        k: int,
        filter: models.Filter | None,
        strategy: Strategy | None,
        explain: bool,
        *,
        alpha: float | None = None,
        exact: bool | None = None,
        hnsw_ef: int | None = None,
        oversample: float | None = None,
        projected: bool | None = None,
        leaves: Sequence[int] | None = None,
        offset: int = 0,
        score_threshold: float | None = None,
    ) -> Call | None:
        """The plan of one ``search_batch`` call (``None`` for no queries): every strategy finds the
        top-(offset + k); ``m·(offset + k)`` cosine candidates where it fetches them."""
        k = check_count(k, "k")
        skip = check_offset(offset)
        threshold = check_threshold(score_threshold)
        strat = check_strategy(strategy or self.strategy)
        a = self.alpha if alpha is None else check_alpha(alpha)
        m = self.oversample if oversample is None else check_oversample(oversample)
        params = search_params(
            self.exact if exact is None else exact, self.hnsw_ef if hnsw_ef is None else hnsw_ef, self.quantization
        )
        prepared = self._prepare(queries, projected, leaves)
        self.policy.count(strat, len(prepared))
        if not prepared:
            return None
        n = k + skip
        candidates = max(n, int(np.ceil(m * n)))
        s = self.strategies
        if strat == "rerank":
            plan = s.rerank(prepared, filter, n, candidates, params, a)
        elif strat == "formula":
            plan = s.formula(prepared, filter, n, candidates, params, a)
        elif strat == "exact":
            plan = s.exact(prepared, filter, n, params, a)
        else:
            strict = self.consistency is not None  # replicated: §3.11
            plan = s.auto_call(self.policy, prepared, filter, n, candidates, params, a, strict=strict)
        consistency = self.consistency if strat in CERTIFIED else None
        return Call(plan, prepared, strat, a, skip, threshold, explain, consistency)

    def _stored(
        self, pid: str | int, found: list[Record], user: models.Filter | None
    ) -> tuple[Any, models.Filter, bool]:
        """Point ``pid``'s stored vector (``found``: its record, if any) as a query — projected on a
        collection of our own, the application's vector on an attached one — and the caller's filter
        without the point."""
        if not found or found[0].vector is None:
            what = "no point" if not found else f"no {self.vector!r} vector for point"
            raise NotFoundError(f"{what} {pid!r} in collection {self.collection!r}", "pass the id of a stored point")
        rec = found[0]
        assert rec.vector is not None
        rest = without_point(user, to_point_id(canonical_id(pid)))
        if self.vector is not None:  # attached: the application's vector itself
            return rec.vector, rest, False
        # ours: the stored vector is z/‖z‖ and the payload keeps ‖z‖ (the leaf needs z itself)
        norm = float((rec.payload.get(self.payload_key) or {}).get("norm", 1.0))
        return rec.vector.astype(np.float64) * norm, rest, True

    # -- preparing queries -------------------------------------------------------------------------------

    def _prepare(
        self,
        queries: np.ndarray | Sequence[Sequence[float]],
        projected: bool | None,
        leaves: Sequence[int] | None,
    ) -> list[Query]:
        model = self.model
        x = query_matrix(queries, model, "queries")
        if x.size == 0:
            return []
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise InputError(f"query vectors contain NaN or inf (rows {bad[:5].tolist()})", "drop or repair them")
        sent = None  # the vectors sent to Qdrant when they are not z
        if self.vector is not None:  # attached (§2.7): the application's vector is the query; PCA finds its leaf
            if projected or x.shape[1] != model.input_dims:
                raise InputError(
                    f"collection {self.collection!r} is searched with vectors like its {self.vector!r} vectors "
                    f"({model.input_dims} floats), got {x.shape[1]}{' (projected)' if projected else ''}",
                    "pass the query's own vector for that name",
                )
            if not np.any(x, axis=1).all():
                raise InputError("a query vector is zero: its cosine to every point is undefined", "drop it")
            x = sent = unit_rows(x)
            projected = False
        if projected is None:
            projected = x.shape[1] == model.dims and x.shape[1] != model.input_dims
        if projected:
            if x.shape[1] != model.dims:
                raise InputError(f"projected queries must have {model.dims} dims, got {x.shape[1]}")
            z = x
        else:
            if x.shape[1] != model.input_dims:
                raise InputError(
                    f"query vectors have {x.shape[1]} dims; the collection's model takes raw features of "
                    f"{model.input_dims} dims (or projected vectors of {model.dims})",
                    "embed the query with the same extractor as the collection",
                )
            z = model.transform(x)
        zero = np.flatnonzero(np.linalg.norm(z, axis=1) <= self._zero_norm) if sent is None else np.empty(0, dtype=int)
        if zero.size:
            raise InputError(
                f"query rows {zero[:5].tolist()} project to the zero vector (the model's mean feature): their cosine"
                " to every point is undefined",
                "query with another image; if every image does this, check the extractor and its weights",
            )
        if leaves is None:
            leaf = model.assign(z, projected=True, raw=None if projected else x)  # `head` reads x
        else:
            leaf = np.asarray(leaves, dtype=np.int64)
            if leaf.shape != (z.shape[0],) or (leaf < 0).any() or (leaf >= model.num_classes).any():
                raise InputError(f"leaves must be {z.shape[0]} class indices in 0…{model.num_classes - 1}")
        heights = model.hierarchy.height
        rows = (z if sent is None else sent).astype(np.float32).tolist()
        out = []
        for row, lf in zip(rows, leaf.tolist(), strict=True):
            path = model.ancestors(lf)
            out.append(
                Query(
                    vector=row,
                    leaf=lf,
                    path=path,
                    heights=[int(heights[v]) for v in path],
                    rank={v: i for i, v in enumerate(path)},
                )
            )
        return out


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}", f"use one of {', '.join(STRATEGIES)}")
    return strategy


def check_oversample(m: float) -> float:
    value = float(m)
    if not np.isfinite(value) or value < 1:
        raise InputError(f"oversampling {m} must be ≥ 1", "e.g. oversample=3")
    return value


def search_params(
    exact: bool, hnsw_ef: int | None, quantization: models.QuantizationSearchParams | None = None
) -> models.SearchParams | None:
    """The ``SearchParams`` every request and prefetch carries (§3.6), or ``None`` for the engine's defaults."""
    if not exact and hnsw_ef is None and quantization is None:
        return None
    ef = None if hnsw_ef is None else check_count(hnsw_ef, "hnsw_ef")
    return models.SearchParams(exact=bool(exact), hnsw_ef=ef, quantization=quantization)


def check_count(value: Any, name: str) -> int:
    """A whole number ≥ 1 (not a bool, not a float that would be truncated)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a whole number ≥ 1, got {value!r}", f"e.g. {name}=10")
    return int(value)


def query_matrix(queries: Any, model: HierarchyModel, what: str) -> np.ndarray:
    """``queries`` as float rows (a vector is one row), or an InputError saying what a query must be."""
    got: str | None = type(queries).__name__
    if queries is not None and not isinstance(queries, (str, bytes, dict)):
        try:
            x = np.atleast_2d(np.asarray(queries, dtype=np.float64))
            got = None if x.ndim == 2 else f"an array of shape {np.shape(queries)}"
        except (TypeError, ValueError):
            pass
    if got is not None:
        one = "a vector" if what == "query" else "rows"
        raise InputError(
            f"{what} must be {one} of {model.input_dims} floats (the raw features) or {model.dims} (the projected"
            f" vector), got {got}"
        )
    return x
