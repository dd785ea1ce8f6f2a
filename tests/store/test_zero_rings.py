"""``auto`` without rings: when the cosine candidates alone (with their payloads, DESIGN.md §3.5.3 with
j = 0) keep proving the answers, the adaptive policy stops fetching rings — one request per query — and the
answers stay exact; when they stop proving, the rings come back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdrant_client import models

from hierqdrant.store.engines import EdgeEngine
from hierqdrant.store.policy import AutoPlan, AutoPolicy, AutoTally
from hierqdrant.store.search import HierarchicalSearcher
from tests.store.test_search import _fill, assert_same_ranking, brute_force, data  # noqa: F401 (fixture)


class SpyEdge(EdgeEngine):
    """The embedded engine, recording each batch it is sent (how many requests, how many ring filters)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[tuple[int, int]] = []

    def query_batch(self, name: str, requests: Any) -> Any:
        rings = sum(r.filter is not None for r in requests)
        self.batches.append((len(requests), rings))
        return super().query_batch(name, requests)


def test_the_policy_drops_the_rings_while_the_candidates_prove_alone() -> None:
    policy = AutoPolicy(3)
    policy.record(AutoTally(certified=30, proven_by_rings=[False] * 30, candidates_alone=[True] * 30), 30)
    assert policy.choose() == AutoPlan(rings=0, with_cosine=True)
    assert policy.state().candidates_alone >= 0.9
    # a ring-less call whose answers fell back: the candidates stop counting as enough, the ring count stays
    policy.record(AutoTally(fallbacks=5, candidates_alone=[False] * 5, without_rings=True), 5)
    assert policy.choose() == AutoPlan(rings=1, with_cosine=True) and policy.state().rings == 1
    for fixed in (AutoPolicy(3, rings=2), AutoPolicy(3, cosine=False)):  # a fixed choice is kept
        fixed.record(AutoTally(proven_by_rings=[False] * 30, candidates_alone=[True] * 30), 30)
        assert fixed.choose().rings != 0


def test_auto_answers_with_one_request_at_small_alpha_and_stays_exact(tmp_path: Path, data) -> None:  # noqa: F811
    engine = SpyEdge(tmp_path)
    _fill(engine, "pts", data)
    searcher = HierarchicalSearcher(engine, "pts", exact=True)
    queries = data["queries"]
    for _ in range(4):  # at α = 0 the rings never prove alone, the candidates (D = cosine distance) do
        for q, hits in zip(queries, searcher.search_batch(queries, 10, alpha=0.0), strict=True):
            assert_same_ranking(hits, *brute_force(data, q, 10, 0.0))
    assert searcher.policy.choose() == AutoPlan(rings=0, with_cosine=True)
    engine.batches.clear()
    results = searcher.search_batch(queries, 10, alpha=0.0)
    assert engine.batches == [(len(queries), 0)]  # one request per query, no ring filter, nothing read after
    for q, hits in zip(queries, results, strict=True):
        assert_same_ranking(hits, *brute_force(data, q, 10, 0.0))
        assert all("colour" in h.payload for h in hits)  # the payloads came with the candidates
    # at a large α the candidates alone prove little: answers stay exact, and the rings come back
    for _ in range(3):
        for q, hits in zip(queries, searcher.search_batch(queries, 10, alpha=4.0), strict=True):
            assert_same_ranking(hits, *brute_force(data, q, 10, 4.0))
    assert searcher.policy.choose().rings >= 1
    s = searcher.stats
    assert s.certified + s.fallbacks == s.by_strategy["auto"] == 8 * len(queries)


def test_a_caller_filter_still_applies_without_rings(tmp_path: Path, data) -> None:  # noqa: F811
    engine = EdgeEngine(tmp_path)
    _fill(engine, "pts", data)
    red = models.Filter(must=[models.FieldCondition(key="colour", match=models.MatchValue(value="red"))])
    searcher = HierarchicalSearcher(engine, "pts", auto_rings=0, auto_cosine=True, exact=True)
    for q, hits in zip(data["queries"], searcher.search_batch(data["queries"], 6, filter=red, alpha=0.5), strict=True):
        assert all(h.payload["colour"] == "red" for h in hits)
        assert_same_ranking(hits, *brute_force(data, q, 6, 0.5, mask=data["colour"] == "red"))
