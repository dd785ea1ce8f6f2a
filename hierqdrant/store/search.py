"""``HierarchicalSearcher``: top-k by ``D = (1 − cos) + α·h(LCA)/H`` through Qdrant (DESIGN.md §3).

Let the query's leaf have ancestors ``a_0`` (leaf) … ``a_L`` (root) with heights ``η_0 = 0 < … < η_L = H``.
A point's LCA with the query is the lowest ``a_i`` in its payload path ``hq.ancestors``.

Strategies (all rank by the same D; they differ in cost and exactness):

* ``rerank`` — the cosine top-(m·k), reordered client-side by D. Approximate.
* ``formula`` — the same inside Qdrant: a prefetch of the cosine top-(m·k) re-scored by the
  FormulaQuery ``$score − α + Σ_{i<L} (α/H)(η_{i+1} − η_i)·[hq.ancestors ∋ a_i]``, which equals 1 − D
  (the sum telescopes to ``α(H − η_j)/H`` for a point whose LCA is ``a_j``).
* ``exact`` — one ring prefetch per ancestor (``hq.ancestors ∋ a_i``, limit k) plus an unfiltered one,
  nested under one outer cosine prefetch (``$score`` refers to the first prefetch only), re-scored by
  the formula. Exact: a true top-k point x with LCA ``a_j`` is among ring ``a_j``'s cosine top-k,
  because every ring member with a higher cosine has LCA height ≤ η_j and so a smaller D.
* ``auto`` — the low rings ``a_0 … a_{j−1}`` (limit k; by default just the leaf ring, widened when
  the certificate keeps failing) and the unfiltered cosine top-(m·k), in one batched request.
  Any point not fetched either sits in a fetched ring behind k fetched members with smaller D, or
  has LCA height ≥ η_j and cosine distance ≥ c_max (the largest among the cosine candidates), so
  ``D ≥ c_max + α·η_j/H``. When the k-th best D found is ≤ that bound the answer is certified
  exact; otherwise the query is re-run with ``exact``. Two refinements keep it near one plain query:
  the cosine candidates come without payloads (a candidate the rings did not return has LCA height
  ≥ η_j unless dominated, so its own distance + α·η_j/H bounds it; payloads are read only when that
  is not enough), and while the rings alone keep proving answers (``D ≥ 0 + α·η_j/H`` for every
  point outside them, common at large α) the cosine query is skipped altogether; while the cosine
  candidates alone keep proving answers (small α over few, large classes) the rings are dropped instead
  and the candidates come with their payloads: one request.

Under HNSW the guarantees hold relative to the index (which can miss points): pass ``exact=True`` for
exhaustive search, or ``hnsw_ef`` — both are applied to every prefetch.

On an attached collection (an application's own, DESIGN.md §2.7) the query is the application's own vector:
every request names it (``using``), the cosine in D is the cosine of those vectors, and the PCA of the model
only finds the query's leaf. Points without the payload rank as if their LCA were the root.

The strategies themselves live in :mod:`hierqdrant.store.plans` as sans-IO plans (they yield request
batches and receive the answers), shared with :class:`~hierqdrant.store.async_search.AsyncHierarchicalSearcher`;
this searcher answers each batch with one blocking ``Engine.query_batch`` call.

A searcher may be shared by threads: what ``auto`` adapts (the ring count, whether to send the cosine
query) and the statistics live in one locked :class:`~hierqdrant.store.policy.AutoPolicy`; each call works
on its own plan and tally.

A searcher reads the collection's model once. When the collection is deleted, made again or given another
model afterwards (by this process or another: ``ingest --recreate``, ``attach --refit``), every later call
fails in one line (:class:`~hierqdrant.store.lifecycle.Revision`; on a server it looks at most every few
seconds) instead of pairing its model with other points: make a new searcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from hierqdrant.core.model import HierarchyModel
from hierqdrant.store.collection import check_model_matches, read_collection_model, require_collection
from hierqdrant.store.engines import Engine, QdrantEngine, as_engine
from hierqdrant.store.engines.base import canonical_id
from hierqdrant.store.engines.vectors import retrieve_vectors
from hierqdrant.store.lifecycle import Revision
from hierqdrant.store.plans import Batch, SearchHit, run
from hierqdrant.store.policy import SearchStats, Strategy
from hierqdrant.store.requests import is_point_id
from hierqdrant.store.searcher_base import STRATEGIES, SearcherBase

__all__ = ["STRATEGIES", "HierarchicalSearcher", "SearchHit", "SearchStats", "Strategy"]


class HierarchicalSearcher(SearcherBase):
    """Search a hierarchical collection by D inside an existing Qdrant application.

    Args:
        client: a hierqdrant engine (``hierqdrant.connect()``) or a plain ``QdrantClient``.
        collection: the collection name.
        model: the fitted model; by default the one stored with the collection. A model that does
            not match the collection (other id or vector size) is refused.
        alpha: weight of the hierarchy term (default: the model's α).
        strategy: ``auto`` (default), ``exact``, ``rerank`` or ``formula``.
        payload_key: namespace of the plugin's payload (default: the collection's, else ``hq``).
        oversample: m, the cosine candidates fetched are m·k (rerank, formula, auto).
        auto_rings: j, the rings ``a_0 … a_{j−1}`` fetched by auto (default adaptive: the leaf ring,
            one ring more whenever over a tenth of a batch's answers needed the ``exact`` fallback).
        auto_cosine: whether auto fetches the unfiltered cosine top-(m·k) with the rings (default
            adaptive: skipped while the rings alone proved ≥ 90 % of recent answers, which is common
            at large α; a query they do not prove is rerun with it).
        vector: the application's vector an attached collection searches (default: the one stored with
            its model, ``hierqdrant attach --vector``); another name is refused.
        quantization: quantization search params (``rescore``, ``oversampling``, ``ignore``) sent with
            every request, for collections with quantized vectors.
    """

    def __init__(
        self,
        client: Engine | QdrantClient,
        collection: str,
        model: HierarchyModel | None = None,
        alpha: float | None = None,
        strategy: Strategy = "auto",
        payload_key: str | None = None,
        *,
        oversample: float = 2.0,
        auto_rings: int | None = None,
        auto_cosine: bool | None = None,
        exact: bool = False,
        hnsw_ef: int | None = None,
        vector: str | None = None,
        quantization: models.QuantizationSearchParams | None = None,
    ) -> None:
        self.engine = as_engine(client)
        require_collection(self.engine, collection)
        if model is None:
            model, info = read_collection_model(self.engine, collection)
        else:
            info = check_model_matches(self.engine, collection, model)
        # a recreate or a new model since (by any process) makes every later call fail in one line
        self._revision = Revision(self.engine, collection, model.model_id)
        # replicas: the certified strategies read every replica (DESIGN.md §3.11); one read, here
        replicas = self.engine.replication_factor(collection) if isinstance(self.engine, QdrantEngine) else 1
        self._setup(
            collection,
            model,
            info,
            alpha=alpha,
            strategy=strategy,
            payload_key=payload_key,
            oversample=oversample,
            auto_rings=auto_rings,
            auto_cosine=auto_cosine,
            exact=exact,
            hnsw_ef=hnsw_ef,
            vector=vector,
            quantization=quantization,
            replication_factor=replicas,
        )

    @classmethod
    def from_collection(cls, client: Engine | QdrantClient, collection: str, **kwargs: Any) -> HierarchicalSearcher:
        """A searcher that knows only the store and the collection name: the model comes from the store."""
        return cls(client, collection, **kwargs)

    # -- public API ------------------------------------------------------------------------------

    def search(
        self,
        query: np.ndarray | Sequence[float] | str | int,
        k: int = 10,
        filter: models.Filter | None = None,
        strategy: Strategy | None = None,
        explain: bool = False,
        **options: Any,
    ) -> list[SearchHit]:
        """Top-k by D for one query: a raw feature vector (PCA and leaf applied here) or an already
        projected vector — on an attached collection, a vector of the application's own — or the id of a
        stored point ("more like this": its stored vector is the query, the point itself is left out).
        ``options``: ``alpha``, ``exact``, ``hnsw_ef``, ``oversample``, ``projected``, ``offset``,
        ``score_threshold``, ``leaf`` (override the query's leaf)."""
        leaf = options.pop("leaf", None)
        if is_point_id(query):
            found = retrieve_vectors(self.engine, self.collection, [canonical_id(query)], self.vector or "")  # type: ignore[arg-type]
            query, filter, options["projected"] = self._stored(query, found, filter)  # type: ignore[arg-type]
        batch, leaves = self._single(query, leaf)
        return self.search_batch(batch, k, filter, strategy, explain, leaves=leaves, **options)[0]

    def search_batch(
        self,
        queries: np.ndarray | Sequence[Sequence[float]],
        k: int = 10,
        filter: models.Filter | None = None,
        strategy: Strategy | None = None,
        explain: bool = False,
        *,
        alpha: float | None = None,
        exact: bool | None = None,
        hnsw_ef: int | None = None,
        oversample: float | None = None,
        projected: bool | None = None,
        leaves: Sequence[int] | None = None,
        offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[list[SearchHit]]:
        """Top-k by D for every row of ``queries``, with Qdrant's batch query calls. ``offset`` skips the
        first hits (pages: the top-(offset + k), less its first ``offset``); ``score_threshold`` keeps only
        hits whose score ``1 − D`` (the formula strategies' Qdrant score) is at least that."""
        call = self._call(
            queries, k, filter, strategy, explain, alpha=alpha, exact=exact, hnsw_ef=hnsw_ef,
            oversample=oversample, projected=projected, leaves=leaves, offset=offset, score_threshold=score_threshold,
        )  # fmt: skip
        if call is None:
            return []
        engine, name, consistency = self.engine, self.collection, call.consistency

        def send(batch: Batch) -> list[list[Any]]:
            if consistency is None:  # the Engine protocol's call; only a replicated server gets the option
                return engine.query_batch(name, batch)
            assert isinstance(engine, QdrantEngine)
            return engine.query_batch(name, batch, consistency=consistency)

        self._revision.check()  # the collection is still the one whose model this searcher holds …
        hits = run(call.plan, send)
        self._revision.check()  # … and was all the time the answers came from it
        return call.finish(self.strategies, hits)
