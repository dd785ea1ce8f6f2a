"""AsyncHierarchicalSearcher congruence: on qdrant-client's async local mode it returns what the synchronous
searcher returns on the same stored collection (same ids, D within float tolerance) for every strategy and
option, and exact / auto equal the NumPy brute force of D.

The collection is written once by the synchronous engine into a local-mode folder; the synchronous answers
are computed there, the client closed, and the same folder opened by ``AsyncQdrantClient(path=…)`` (local
mode locks its folder to one client at a time). No pytest plugin: each test runs its coroutine with
``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient, models

import hierqdrant
from hierqdrant.core.errors import InputError, ModelMismatchError, NotFoundError
from hierqdrant.store.async_search import AsyncHierarchicalSearcher
from hierqdrant.store.collection import point_id
from hierqdrant.store.engines import QdrantEngine
from hierqdrant.store.search import HierarchicalSearcher
from tests.store.test_search import _fill, assert_same_ranking, brute_force, data  # noqa: F401 (fixture)

T = TypeVar("T")
STRATEGIES = ("auto", "exact", "rerank", "formula")
ALPHAS = (0.0, 0.5, 1.5, 4.0)
KS = (1, 5, 12)
RED = models.Filter(must=[models.FieldCondition(key="colour", match=models.MatchValue(value="red"))])
# (searcher options, call options): every option of both searchers, several α and k
CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"strategy": s, "exact": True}, {"alpha": a, "k": k}) for s in STRATEGIES for a in ALPHAS for k in KS
]
CASES += [
    ({"auto_rings": r, "auto_cosine": c, "exact": True}, {"alpha": a, "k": 10})
    for r in (0, 1, 2)
    for c in (None, True, False)
    for a in (0.3, 4.0)
]
CASES += [
    ({"strategy": s, "exact": True}, {"alpha": 1.5, "k": 7, "filter": RED, "offset": 2, "score_threshold": 0.2})
    for s in STRATEGIES
]
CASES += [({"oversample": 1, "auto_rings": 0, "exact": True}, {"alpha": 4.0, "k": 10})]  # the exact fallback


def arun(make: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(make())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stored(tmp_path_factory, data) -> dict[str, Any]:  # noqa: F811
    """The collection in a local-mode folder and the synchronous searcher's answers for every case."""
    path = tmp_path_factory.mktemp("local")
    engine = QdrantEngine(QdrantClient(path=str(path)))
    _fill(engine, "pts", data)
    answers = []
    for options, call in CASES:
        searcher = HierarchicalSearcher(engine, "pts", **options)
        answers.append(searcher.search_batch(data["queries"], **call))
    first = point_id("pts", data["keys"][0])
    by_id = HierarchicalSearcher(engine, "pts", exact=True).search(first, 6, explain=True, alpha=1.5)
    engine.close()
    return {"path": str(path), "answers": answers, "by_id": by_id, "first": first}


async def _open(path: str, **options: Any) -> AsyncHierarchicalSearcher:
    return await AsyncHierarchicalSearcher.open(AsyncQdrantClient(path=path), "pts", **options)


@pytest.mark.slow
def test_every_strategy_and_option_equals_the_sync_searcher(stored, data) -> None:  # noqa: F811
    async def go() -> list[list[list[hierqdrant.SearchHit]]]:
        out = []
        searcher = await _open(stored["path"])
        try:
            for options, call in CASES:
                # the same engine under differently configured searchers, as the sync side had
                s = AsyncHierarchicalSearcher(searcher.engine, "pts", searcher.model, {"payload_key": "hq"}, **options)
                out.append(await s.search_batch(data["queries"], **call))
        finally:
            await searcher.close()
        return out

    got = arun(go)
    for (options, call), want, have in zip(CASES, stored["answers"], got, strict=True):
        assert len(have) == len(want), (options, call)
        for w, h in zip(want, have, strict=True):
            assert_same_ranking(h, [x.id for x in w], np.asarray([x.distance for x in w]))
            assert [x.cosine for x in h] == pytest.approx([x.cosine for x in w], abs=2e-5)
            assert [x.lca for x in h] == [x.lca for x in w] or [x.id for x in h] != [x.id for x in w]


@pytest.mark.parametrize("strategy", ["exact", "auto"])
def test_exact_and_auto_equal_brute_force(stored, data, strategy: str) -> None:  # noqa: F811
    mask = data["colour"] == "red"

    async def go() -> list[tuple[float, Any, list[list[hierqdrant.SearchHit]]]]:
        searcher = await _open(stored["path"], strategy=strategy, exact=True)
        try:
            out = [(a, None, await searcher.search_batch(data["queries"], 10, alpha=a)) for a in ALPHAS]
            out.append((1.5, RED, await searcher.search_batch(data["queries"], 10, filter=RED, alpha=1.5)))
            assert searcher.stats.queries == 5 * len(data["queries"])
            return out
        finally:
            await searcher.close()

    for alpha, where, results in arun(go):
        for q, hits in zip(data["queries"], results, strict=True):
            assert_same_ranking(hits, *brute_force(data, q, 10, alpha, mask=None if where is None else mask))


def test_one_query_a_point_id_and_explain_match_the_sync_searcher(stored, data) -> None:  # noqa: F811
    async def go() -> tuple[list[hierqdrant.SearchHit], list[hierqdrant.SearchHit]]:
        searcher = await _open(stored["path"], exact=True)
        try:
            one = await searcher.search(data["queries"][3], 5, alpha=0.5)
            return one, await searcher.search(stored["first"], 6, explain=True, alpha=1.5)
        finally:
            await searcher.close()

    one, by_id = arun(go)
    assert_same_ranking(one, *brute_force(data, data["queries"][3], 5, 0.5))
    want = stored["by_id"]
    assert stored["first"] not in [h.id for h in by_id]  # the query point itself is left out
    assert [h.id for h in by_id] == [h.id for h in want]
    for got, exp in zip(by_id, want, strict=True):
        assert got.explanation is not None and exp.explanation is not None
        assert got.explanation.pop("cosine_distance") == pytest.approx(exp.explanation.pop("cosine_distance"), abs=2e-5)
        assert got.explanation == exp.explanation  # names, classes, heights, α, the strategy


def test_concurrent_searches_share_one_searcher(stored, data) -> None:  # noqa: F811
    # Many coroutines on one searcher: every answer exact, no auto count lost (the shared AutoPolicy).
    async def go() -> tuple[list[list[hierqdrant.SearchHit]], Any]:
        searcher = await _open(stored["path"], exact=True)
        try:
            hits = await asyncio.gather(*(searcher.search(q, 8, alpha=1.5) for q in data["queries"]))
            return list(hits), searcher.stats
        finally:
            await searcher.close()

    results, stats = arun(go)
    for q, hits in zip(data["queries"], results, strict=True):
        assert_same_ranking(hits, *brute_force(data, q, 8, 1.5))
    assert stats.by_strategy == {"auto": len(data["queries"])}
    assert stats.certified + stats.fallbacks == len(data["queries"])


def test_opening_refuses_what_the_sync_searcher_refuses(stored, data, tmp_path: Path) -> None:  # noqa: F811
    other = data["model"].with_alpha(0.25)  # another model id

    async def go() -> list[str]:
        out = []
        client = AsyncQdrantClient(path=stored["path"])
        try:
            for make in (
                lambda: AsyncHierarchicalSearcher.open(client, "nope"),
                lambda: AsyncHierarchicalSearcher.open(client, "pts", model=other),
                lambda: AsyncHierarchicalSearcher.open(client, "pts", strategy="fast"),  # type: ignore[arg-type]
            ):
                try:
                    await make()
                except (NotFoundError, ModelMismatchError, InputError) as e:
                    out.append(f"{type(e).__name__}: {e}")
            ok = await AsyncHierarchicalSearcher.open(client, "pts", model=data["model"])  # its own model: fine
            out.append(ok.model.model_id)
        finally:
            await client.close()
        return out

    missing, mismatch, strategy, own = arun(go)
    assert missing.startswith("NotFoundError") and "'nope'" in missing and "pts" in missing
    assert mismatch.startswith("ModelMismatchError") and other.model_id in mismatch
    assert strategy.startswith("InputError") and "unknown strategy 'fast'" in strategy
    assert own == data["model"].model_id
    with pytest.raises(InputError, match="expected an AsyncQdrantClient"):
        arun(lambda: AsyncHierarchicalSearcher.open(QdrantClient(":memory:"), "pts"))  # type: ignore[arg-type]


def test_async_searcher_is_a_public_name() -> None:
    assert hierqdrant.AsyncHierarchicalSearcher is AsyncHierarchicalSearcher
