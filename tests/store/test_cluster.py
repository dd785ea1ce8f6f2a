"""Sharded and replicated collections (DESIGN.md §3.11): the shard count and replication factor reach the
server's create (ingest included), the embedded engine refuses them in one line, and a searcher on a
replicated collection reads every request of a certified strategy with ``ReadConsistencyType.ALL``.

The plumbing is checked on qdrant-client's local mode through thin spy subclasses of the real clients:
they record what reaches ``create_collection`` / ``query_batch_points`` and answer as local mode does,
reporting a replication factor (local mode keeps none). A real server, where one is available
(``HIERQDRANT_TEST_QDRANT_URL`` or Docker), gets a two-shard collection searched against the brute force.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from hierqdrant.core.errors import InputError
from hierqdrant.core.features import FeatureSet
from hierqdrant.pipelines.ingest import IngestOptions, ingest
from hierqdrant.store.async_search import AsyncHierarchicalSearcher
from hierqdrant.store.collection import create_collection, point_id, upsert_points
from hierqdrant.store.engines import EdgeEngine, QdrantEngine, connect
from hierqdrant.store.engines.cluster import check_layout
from hierqdrant.store.search import HierarchicalSearcher
from tests.store.test_search import _fill, assert_same_ranking, brute_force, data  # noqa: F401 (fixture)

ALL = models.ReadConsistencyType.ALL


class SpyClient(QdrantClient):
    """Local mode that records creates and read consistencies, and reports ``replicas`` as the replication factor."""

    def __init__(self, replicas: int = 1, **kwargs: Any) -> None:
        super().__init__(**(kwargs or {"location": ":memory:"}))
        self.replicas = replicas
        self.creates: list[tuple[str, int | None, int | None]] = []
        self.consistency: list[Any] = []

    def create_collection(self, collection_name: str, *args: Any, **kwargs: Any) -> bool:
        self.creates.append((collection_name, kwargs.get("shard_number"), kwargs.get("replication_factor")))
        return super().create_collection(collection_name, *args, **kwargs)

    def get_collection(self, collection_name: str) -> models.CollectionInfo:
        info = super().get_collection(collection_name)
        info.config.params.replication_factor = self.replicas
        return info

    def query_batch_points(self, collection_name: str, requests: Any, consistency: Any = None, **kw: Any) -> Any:
        self.consistency.append(consistency)
        return super().query_batch_points(collection_name, requests, consistency=consistency, **kw)


class SpyAsyncClient(AsyncQdrantClient):
    """The same spy around the async local mode."""

    def __init__(self, replicas: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.replicas = replicas
        self.consistency: list[Any] = []

    async def get_collection(self, collection_name: str) -> models.CollectionInfo:
        info = await super().get_collection(collection_name)
        info.config.params.replication_factor = self.replicas
        return info

    async def query_batch_points(self, collection_name: str, requests: Any, consistency: Any = None, **kw: Any) -> Any:
        self.consistency.append(consistency)
        return await super().query_batch_points(collection_name, requests, consistency=consistency, **kw)


def test_create_passes_shards_and_replicas_to_the_server(data) -> None:  # noqa: F811
    client = SpyClient()
    engine = QdrantEngine(client)
    create_collection(engine, "pts", data["model"], shards=3, replicas=2)
    # the collection and its model sidecar (as many copies as the points, never sharded: a few points)
    assert client.creates == [("pts", 3, 2), ("pts--hq-model", None, 2)]
    create_collection(engine, "later", data["model"])  # nothing asked: the server's defaults
    engine.create("direct", 4, shard_number=2)  # the Python equivalent on the engine itself
    assert client.creates[2:] == [("later", None, None), ("later--hq-model", None, None), ("direct", 2, None)]
    upsert_points(engine, "pts", data["model"], data["x"], data["keys"], labels=data["labels"])
    hits = HierarchicalSearcher(engine, "pts", strategy="exact").search(data["queries"][0], 5)
    assert_same_ranking(hits, *brute_force(data, data["queries"][0], 5))


def test_the_embedded_engine_refuses_shards_and_replicas_in_one_line(tmp_path: Path, data) -> None:  # noqa: F811
    engine = EdgeEngine(tmp_path)
    for kwargs in ({"shard_number": 2}, {"replication_factor": 3}):
        with pytest.raises(InputError) as err:
            engine.create("a", 4, **kwargs)
        assert "\n" not in str(err.value) and "one shard without replicas" in str(err.value)
    with pytest.raises(InputError, match="replication_factor=2 asked"):
        create_collection(engine, "b", data["model"], replicas=2)  # refused before any write
    assert engine.collections() == []
    engine.create("a", 4, shard_number=1, replication_factor=1)  # one shard, one copy: what it has
    assert engine.collections() == ["a"]
    for bad in (0, True, 2.5, "2"):
        with pytest.raises(InputError, match="whole number ≥ 1"):
            check_layout(engine, shard_number=bad)


def test_ingest_takes_shards_and_replicas(tmp_path: Path, data) -> None:  # noqa: F811
    source = tmp_path / "feats.npz"
    classes = [f"c{i}" for i in range(int(data["labels"].max()) + 1)]
    FeatureSet(data["x"], data["labels"], classes=classes, paths=data["keys"]).save(source)
    options = IngestOptions(shards=2, replicas=3, progress=False, cache_dir=tmp_path / "cache")
    client = SpyClient()
    result = ingest(source, QdrantEngine(client), "pts", options)
    assert result.ingested == len(data["keys"])
    assert client.creates == [("pts", 2, 3), ("pts--hq-model", None, 3)]
    edge = EdgeEngine(tmp_path / "edge")
    with pytest.raises(InputError, match="one shard without replicas"):
        ingest(source, edge, "pts", options)
    assert edge.collections() == []  # refused before anything was written


@pytest.mark.parametrize("replicas", [1, 2])
def test_certified_strategies_read_every_replica(data, replicas: int) -> None:  # noqa: F811
    client = SpyClient(replicas)
    engine = QdrantEngine(client)
    _fill(engine, "pts", data)
    # auto: (rings, m, α) that go through its payload read (one ring, small α) and its exact fallback (no rings)
    runs = [("exact", 1, 2.0, 4.0), ("auto", 1, 2.0, 0.3), ("auto", 0, 1.0, 4.0), ("rerank", 1, 2.0, 4.0)]
    runs.append(("formula", 1, 2.0, 4.0))
    for strategy, rings, m, alpha in runs:
        searcher = HierarchicalSearcher(
            engine,
            "pts",
            strategy=strategy,
            oversample=m,
            auto_rings=rings,
            auto_cosine=True,  # type: ignore[arg-type]
        )
        client.consistency.clear()
        results = searcher.search_batch(data["queries"], 10, alpha=alpha)
        want = ALL if replicas > 1 and strategy in ("exact", "auto") else None
        assert client.consistency and set(client.consistency) == {want}, (strategy, client.consistency)
        if strategy == "auto":  # every round: the candidates, their payloads / the exact fallback
            assert len(client.consistency) >= 2
            assert (searcher.stats.reads if rings else searcher.stats.fallbacks) > 0
        if strategy in ("exact", "auto"):
            for q, hits in zip(data["queries"], results, strict=True):
                assert_same_ranking(hits, *brute_force(data, q, 10, alpha))


def test_the_async_searcher_reads_every_replica(tmp_path: Path, data) -> None:  # noqa: F811
    engine = QdrantEngine(QdrantClient(path=str(tmp_path)))
    _fill(engine, "pts", data)
    engine.close()

    async def go(strategy: str) -> tuple[list[Any], list[list[Any]]]:
        client = SpyAsyncClient(2, path=str(tmp_path))
        try:
            searcher = await AsyncHierarchicalSearcher.open(client, "pts", strategy=strategy)  # type: ignore[arg-type]
            return client.consistency, await searcher.search_batch(data["queries"][:4], 6, alpha=1.5)
        finally:
            await client.close()

    for strategy, want in (("auto", ALL), ("exact", ALL), ("rerank", None)):
        seen, results = asyncio.run(go(strategy))
        assert seen and set(seen) == {want}, (strategy, seen)
        if want is not None:
            for q, hits in zip(data["queries"][:4], results, strict=True):
                assert_same_ranking(hits, *brute_force(data, q, 6, 1.5))


def test_two_shards_on_a_server_search_exactly(engine_qdrant_url: str, data) -> None:  # noqa: F811
    engine = connect(engine_qdrant_url)
    name = "hq-test-shards"
    engine.delete(name)
    try:
        create_collection(engine, name, data["model"], shards=2)
        assert engine.client.get_collection(name).config.params.shard_number == 2
        upsert_points(engine, name, data["model"], data["x"], data["keys"], labels=data["labels"])
        engine.optimize(name)
        indexes = engine.client.get_collection(name).payload_schema
        assert "hq.ancestors" in indexes and engine.read_info(name)["model_id"] == data["model"].model_id
        for strategy in ("exact", "auto"):
            searcher = HierarchicalSearcher(engine, name, strategy=strategy, exact=True)
            for alpha in (0.5, 4.0):
                results = searcher.search_batch(data["queries"], 10, alpha=alpha)
                for q, hits in zip(data["queries"], results, strict=True):
                    _, dists = brute_force(data, q, 10, alpha)  # (its ids are those of a collection "pts")
                    assert [h.distance for h in hits] == pytest.approx(list(dists), abs=2e-5)
    finally:
        engine.delete(name)
        engine.close()


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_short_answer_proves_nothing_on_replicas(data, replicas: int) -> None:  # noqa: F811
    # With ReadConsistencyType.ALL an answer keeps only points every replica returned, so fewer than the
    # limit is no proof that the whole filtered set came back: on replicas such a query goes to `exact`.
    client = SpyClient(replicas)
    engine = QdrantEngine(client)
    _fill(engine, "pts", data)
    few = [point_id("pts", key) for key in data["keys"][::60]]  # 8 points, fewer than m·k = 10
    only = models.Filter(must=[models.HasIdCondition(has_id=few)])
    searcher = HierarchicalSearcher(engine, "pts", auto_cosine=True)
    results = searcher.search_batch(data["queries"], 5, filter=only, alpha=1.5)
    mask = np.isin([point_id("pts", key) for key in data["keys"]], few)
    for q, hits in zip(data["queries"], results, strict=True):
        assert_same_ranking(hits, *brute_force(data, q, 5, 1.5, mask=mask))
    s = searcher.stats
    assert (s.fallbacks, s.certified) == ((len(data["queries"]), 0) if replicas > 1 else (0, len(data["queries"])))
