"""``AsyncHierarchicalSearcher``: :class:`~hierqdrant.store.search.HierarchicalSearcher` for asyncio
applications, over qdrant-client's ``AsyncQdrantClient`` (a server, cluster, cloud, or the async local mode).

The same strategies (``auto``, ``exact``, ``rerank``, ``formula``), options and :class:`SearchHit` s: both
searchers build the same plans (:mod:`hierqdrant.store.plans`, sans-IO generators that yield request
batches and receive the answers) from the same options and prepared queries
(:class:`~hierqdrant.store.searcher_base.SearcherBase`); this one answers each batch with an awaited
``query_batch_points``, so an ``auto`` search is a few awaited calls and never blocks the event loop on
I/O (the query's PCA and leaf, microseconds of NumPy, run inline). ``auto``'s adaptive state and
statistics live in the same thread-safe :class:`~hierqdrant.store.policy.AutoPolicy`, so one searcher
serves concurrent requests.

Opening reads the model stored with the collection (its sidecar, DESIGN.md §2.5), so it is a coroutine::

    searcher = await AsyncHierarchicalSearcher.open(AsyncQdrantClient(url), "birds")
    hits = await searcher.search(feature, k=10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient, models

from hierqdrant.core.model import HierarchyModel
from hierqdrant.store.collection import check_model_matches, missing_collection, model_of
from hierqdrant.store.engines.async_client import AsyncQdrantEngine
from hierqdrant.store.engines.base import canonical_id
from hierqdrant.store.engines.client import QdrantEngine
from hierqdrant.store.plans import Answers, Batch, SearchHit, run_async
from hierqdrant.store.policy import Strategy
from hierqdrant.store.requests import is_point_id
from hierqdrant.store.searcher_base import SearcherBase

__all__ = ["AsyncHierarchicalSearcher"]


class AsyncHierarchicalSearcher(SearcherBase):
    """Search a hierarchical collection by D from asyncio code; made by :meth:`open`.

    Every option is :class:`~hierqdrant.store.search.HierarchicalSearcher`'s, with the same meaning and
    defaults; ``search`` and ``search_batch`` are coroutines returning the same hits the synchronous
    searcher returns on the same data.
    """

    def __init__(self, engine: AsyncQdrantEngine, collection: str, model: HierarchyModel, info: dict[str, Any],
                 replication_factor: int = 1, **options: Any) -> None:  # fmt: skip
        """Use :meth:`open`; this takes what it has read (the model, the info dict, the replication factor)."""
        self.engine = engine
        defaults: dict[str, Any] = {
            "alpha": None, "strategy": "auto", "payload_key": None, "oversample": 2.0, "auto_rings": None,
            "auto_cosine": None, "exact": False, "hnsw_ef": None, "vector": None, "quantization": None,
        }  # fmt: skip
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"unexpected options {sorted(unknown)}")
        self._setup(collection, model, info, **{**defaults, **options}, replication_factor=replication_factor)

    @classmethod
    async def open(
        cls,
        client: AsyncQdrantClient | AsyncQdrantEngine,
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
    ) -> AsyncHierarchicalSearcher:
        """Read the collection's model (or check ``model`` against it) and make the searcher."""
        engine = client if isinstance(client, AsyncQdrantEngine) else AsyncQdrantEngine(client)
        if not await engine.exists(collection):
            raise missing_collection(collection, engine.location, await engine.collections())
        config = await engine.collection_info(collection)
        if model is None:
            model, info = model_of(collection, await engine.read_model(collection))
        else:  # the synchronous check, on what was read (the sizes of the vectors, the stored model id)
            info = check_model_matches(_Read(engine, collection, config, await engine.read_info(collection, config)),
                                       collection, model)  # fmt: skip
        options = {
            "alpha": alpha, "strategy": strategy, "payload_key": payload_key, "oversample": oversample,
            "auto_rings": auto_rings, "auto_cosine": auto_cosine, "exact": exact, "hnsw_ef": hnsw_ef,
            "vector": vector, "quantization": quantization,
        }  # fmt: skip
        replicas = int(config.config.params.replication_factor or 1)
        return cls(engine, collection, model, info, replicas, **options)

    async def search(
        self,
        query: np.ndarray | Sequence[float] | str | int,
        k: int = 10,
        filter: models.Filter | None = None,
        strategy: Strategy | None = None,
        explain: bool = False,
        **options: Any,
    ) -> list[SearchHit]:
        """Top-k by D for one query (a feature vector, a projected vector, or a stored point's id), as
        :meth:`HierarchicalSearcher.search`."""
        leaf = options.pop("leaf", None)
        if is_point_id(query):
            found = await self.engine.retrieve_vectors(self.collection, [canonical_id(query)], self.vector or "")  # type: ignore[arg-type]
            query, filter, options["projected"] = self._stored(query, found, filter)  # type: ignore[arg-type]
        batch, leaves = self._single(query, leaf)
        return (await self.search_batch(batch, k, filter, strategy, explain, leaves=leaves, **options))[0]

    async def search_batch(
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
        """Top-k by D for every row of ``queries``, as :meth:`HierarchicalSearcher.search_batch` (the same
        options, meaning and defaults)."""
        call = self._call(
            queries, k, filter, strategy, explain, alpha=alpha, exact=exact, hnsw_ef=hnsw_ef,
            oversample=oversample, projected=projected, leaves=leaves, offset=offset, score_threshold=score_threshold,
        )  # fmt: skip
        if call is None:
            return []
        engine, name, consistency = self.engine, self.collection, call.consistency

        async def send(batch: Batch) -> Answers:
            return await engine.query_batch(name, batch, consistency=consistency)

        return call.finish(self.strategies, await run_async(call.plan, send))

    async def close(self) -> None:
        """Close the client."""
        await self.engine.close()


class _Read(QdrantEngine):
    """What :func:`check_model_matches` asks of an engine, answered from what the async engine has read."""

    def __init__(self, engine: AsyncQdrantEngine, name: str, config: models.CollectionInfo,
                 info: dict[str, Any] | None) -> None:  # fmt: skip
        self.location, self.local = engine.location, engine.local
        self._name, self._config, self._info = name, config, info

    def _collection(self, name: str) -> models.CollectionInfo:
        return self._config

    def read_info(self, name: str) -> dict[str, Any] | None:
        return self._info

    def exists(self, name: str) -> bool:
        return name == self._name
