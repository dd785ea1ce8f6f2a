"""HierarchicalSearcher congruence: every strategy against a NumPy brute force of D, on every engine."""

from __future__ import annotations

import json
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from hierqdrant.core.errors import InputError, ModelMismatchError, NotFoundError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import HierarchyModel
from hierqdrant.store.collection import create_collection, point_id, upsert_points
from hierqdrant.store.engines import EdgeEngine, QdrantEngine
from hierqdrant.store.search import HierarchicalSearcher, SearchHit

K = 12  # leaves; tree: root → 2 groups → 2 families each → 3 leaves each (heights 0, 1, 2, 3)


def four_level_tree() -> Hierarchy:
    parent = np.full(K + 4 + 2 + 1, -1)
    families = [K + f for f in range(4)]
    groups = [K + 4, K + 5]
    root = K + 6
    for leaf in range(K):
        parent[leaf] = families[leaf // 3]
    for f, node in enumerate(families):
        parent[node] = groups[f // 2]
    parent[groups] = root
    return Hierarchy(parent, K, class_names=[f"c{i}" for i in range(K)])


@pytest.fixture(scope="module")
def data() -> dict:
    rng = np.random.default_rng(7)
    d = 8
    group = rng.standard_normal((2, d)) * 3
    family = group[np.arange(4) // 2] + rng.standard_normal((4, d)) * 1.5
    centre = family[np.arange(K) // 3] + rng.standard_normal((K, d)) * 0.8
    labels = np.repeat(np.arange(K), 40)
    x = centre[labels] + rng.standard_normal((labels.size, d)) * 0.9
    model = HierarchyModel.fit(
        x,
        labels,
        class_names=[f"c{i}" for i in range(K)],
        builder="given",
        taxonomy=four_level_tree(),
        n_components=None,
        alpha=1.5,
    )
    keys = [f"img/{i:04d}.jpg" for i in range(labels.size)]
    colour = np.where(np.arange(labels.size) % 3 == 0, "red", "blue")
    queries = centre[rng.integers(0, K, 12)] + rng.standard_normal((12, d)) * 1.2
    return {"x": x, "labels": labels, "model": model, "keys": keys, "colour": colour, "queries": queries}


def _fill(engine, name: str, data: dict) -> None:
    create_collection(engine, name, data["model"])
    upsert_points(
        engine,
        name,
        data["model"],
        data["x"],
        data["keys"],
        labels=data["labels"],
        payloads=[{"colour": c} for c in data["colour"]],
        batch_size=128,
    )
    engine.optimize(name)


@pytest.fixture(params=["edge", "local", "server"], scope="module")
def engine(request, tmp_path_factory, data):
    """The embedded engine, qdrant-client's local mode, and a real Qdrant server (testcontainers; skipped
    with the reason when no Docker engine answers)."""
    if request.param == "edge":
        eng = EdgeEngine(tmp_path_factory.mktemp("edge"))
    elif request.param == "local":
        eng = QdrantEngine(QdrantClient(":memory:"))
    else:
        from hierqdrant.store.engines import connect

        eng = connect(request.getfixturevalue("engine_qdrant_url"))
        if eng.exists("pts"):
            eng.delete("pts")
    _fill(eng, "pts", data)
    yield eng
    if request.param == "server":
        eng.delete("pts")
    eng.close()


def brute_force(data: dict, query: np.ndarray, k: int, alpha: float | None = None, mask: np.ndarray | None = None):
    model: HierarchyModel = data["model"]
    # The stored leaves follow the model's leaf_from: the labels (upsert_points was given them).
    d = model.distance(query, data["x"], alpha=alpha, leaves=model.database_leaves(data["x"], data["labels"]))
    ids = np.asarray([point_id("pts", key) for key in data["keys"]])
    if mask is not None:
        d = np.where(mask, d, np.inf)
    order = np.lexsort((ids, d))[:k]
    return ids[order].tolist(), d[order]


def assert_same_ranking(hits, ids: list[str], dists: np.ndarray, tol: float = 2e-5) -> None:
    assert len(hits) == len(ids)
    for hit, want_id, want_d in zip(hits, ids, dists, strict=True):
        # Same point, or a float32 near-tie with the same D.
        assert hit.id == want_id or abs(hit.distance - want_d) < tol, (hit.id, want_id, hit.distance, want_d)
        assert hit.distance == pytest.approx(want_d, abs=tol)


@pytest.mark.parametrize("strategy", ["exact", "auto"])
def test_exact_and_auto_equal_brute_force(engine, data, strategy: str) -> None:
    searcher = HierarchicalSearcher(engine, "pts", strategy=strategy, exact=True)
    for alpha in (0.0, 0.5, 1.5, 4.0):
        results = searcher.search_batch(data["queries"], 10, alpha=alpha)
        for q, hits in zip(data["queries"], results, strict=True):
            ids, dists = brute_force(data, q, 10, alpha)
            assert_same_ranking(hits, ids, dists)


def test_auto_certifies_or_falls_back_correctly_with_few_candidates(engine, data) -> None:
    # Oversampling 1 and no rings certifies rarely; the fallback must still be exact.
    searcher = HierarchicalSearcher(engine, "pts", oversample=1, auto_rings=0, exact=True)
    results = searcher.search_batch(data["queries"], 10, alpha=4.0)
    for q, hits in zip(data["queries"], results, strict=True):
        assert_same_ranking(hits, *brute_force(data, q, 10, 4.0))
    assert searcher.stats.fallbacks > 0


@pytest.mark.parametrize("auto_cosine", [None, True, False])
def test_every_step_of_auto_equals_brute_force(engine, data, auto_cosine) -> None:
    # Rings alone, the cosine candidates' payloads read, the exact fallback: every path must be exact.
    queries = data["queries"]
    for rings in (0, 1, 2):
        searcher = HierarchicalSearcher(engine, "pts", auto_rings=rings, auto_cosine=auto_cosine, exact=True)
        alphas = (0.0, 0.3, 1.5, 4.0)
        for alpha in alphas:
            for q, hits in zip(queries, searcher.search_batch(queries, 10, alpha=alpha), strict=True):
                assert_same_ranking(hits, *brute_force(data, q, 10, alpha))
        s = searcher.stats
        assert s.certified + s.fallbacks == len(queries) * len(alphas)
        if auto_cosine or rings == 0:
            assert s.rings_alone == 0  # nothing to prove it with (no rings) or not tried


def test_auto_at_zero_alpha_with_every_candidate_in_the_rings(engine, data) -> None:
    # At α = 0 with m = 1 the cosine candidates often all lie in the rings: nothing is left to read, and
    # the engines that refuse a read of zero ids (limit 0) must not be sent one; the answer stays exact.
    searcher = HierarchicalSearcher(engine, "pts", oversample=1, auto_rings=2, auto_cosine=True, exact=True)
    results = searcher.search_batch(data["queries"], 5, alpha=0.0)
    for q, hits in zip(data["queries"], results, strict=True):
        assert_same_ranking(hits, *brute_force(data, q, 5, 0.0))
    s = searcher.stats
    assert s.certified + s.fallbacks == len(data["queries"])


def test_auto_proves_large_alpha_with_the_rings_alone(engine, data) -> None:
    searcher = HierarchicalSearcher(engine, "pts", auto_rings=1, auto_cosine=False, exact=True)
    searcher.search_batch(data["queries"], 5, alpha=4.0)
    assert searcher.stats.rings_alone == len(data["queries"])
    assert searcher.stats.fallbacks == 0


def test_auto_reads_candidate_payloads_at_small_alpha(engine, data) -> None:
    searcher = HierarchicalSearcher(engine, "pts", auto_rings=1, auto_cosine=True, exact=True)
    results = searcher.search_batch(data["queries"], 10, alpha=0.3)
    assert searcher.stats.reads > 0
    for q, hits in zip(data["queries"], results, strict=True):
        assert_same_ranking(hits, *brute_force(data, q, 10, 0.3))
        assert all(hit.payload.get("colour") in ("red", "blue") for hit in hits)  # payloads were read


def test_auto_stops_trying_the_rings_alone_when_they_do_not_prove(engine, data) -> None:
    searcher = HierarchicalSearcher(engine, "pts", auto_rings=1, exact=True)
    for q in data["queries"][:4]:
        searcher.search(q, 10, alpha=0.0)  # at α = 0 the rings never prove an answer alone
    assert searcher.policy.state().rings_alone < 0.9
    before = searcher.stats.rings_alone
    for q in np.concatenate([data["queries"]] * 3):
        searcher.search(q, 5, alpha=4.0)  # the rings would have proved these: it goes back to them
    assert searcher.stats.rings_alone > before


def test_caller_filter_is_combined_with_every_strategy(engine, data) -> None:
    red = models.Filter(must=[models.FieldCondition(key="colour", match=models.MatchValue(value="red"))])
    mask = data["colour"] == "red"
    searcher = HierarchicalSearcher(engine, "pts", exact=True)
    for strategy in ("exact", "auto"):
        results = searcher.search_batch(data["queries"], 7, filter=red, strategy=strategy)
        for q, hits in zip(data["queries"], results, strict=True):
            assert all(h.payload["colour"] == "red" for h in hits)
            assert_same_ranking(hits, *brute_force(data, q, 7, mask=mask))
    for auto_cosine in (True, False):  # each step of auto keeps the caller's filter
        searcher_ = HierarchicalSearcher(engine, "pts", exact=True, auto_cosine=auto_cosine)
        for alpha in (0.3, 4.0):
            results = searcher_.search_batch(data["queries"], 7, filter=red, alpha=alpha)
            for q, hits in zip(data["queries"], results, strict=True):
                assert all(h.payload["colour"] == "red" for h in hits)
                assert_same_ranking(hits, *brute_force(data, q, 7, alpha, mask=mask))
    for strategy in ("rerank", "formula"):
        for hits in searcher.search_batch(data["queries"], 7, filter=red, strategy=strategy):
            assert all(h.payload["colour"] == "red" for h in hits)


def test_formula_equals_rerank_on_the_same_candidates(engine, data) -> None:
    searcher = HierarchicalSearcher(engine, "pts", exact=True, oversample=2)
    rerank = searcher.search_batch(data["queries"], 10, strategy="rerank")
    formula = searcher.search_batch(data["queries"], 10, strategy="formula")
    for a, b in zip(rerank, formula, strict=True):
        assert [h.id for h in a] == [h.id for h in b] or np.allclose(
            [h.distance for h in a], [h.distance for h in b], atol=2e-5
        )
        np.testing.assert_allclose([h.distance for h in a], [h.distance for h in b], atol=2e-5)
        np.testing.assert_allclose([h.cosine for h in a], [h.cosine for h in b], atol=2e-5)


def test_hit_fields_and_explanation(engine, data) -> None:
    searcher = HierarchicalSearcher(engine, "pts", exact=True)
    q = data["queries"][0]
    hits = searcher.search(q, 5, explain=True)
    model: HierarchyModel = data["model"]
    leaf_q = int(model.assign(q)[0])
    for h in hits:
        assert h.leaf is not None
        assert h.lca == model.hierarchy.lca(leaf_q, h.leaf)
        assert h.lca_height == model.hierarchy.height[h.lca]
        assert h.distance == pytest.approx(1 - h.cosine + 1.5 * h.lca_height / 3, abs=1e-6)
        assert h.payload["hq"]["model"] == model.model_id
        assert h.explanation is not None and h.explanation["query_leaf"] == leaf_q
    # A projected query gives the same answer as the raw one.
    z = model.transform(q)
    again = searcher.search(z[0], 5, projected=True)
    assert [h.id for h in again] == [h.id for h in hits]


def test_from_collection_needs_only_the_store_and_the_name(engine, data) -> None:
    searcher = HierarchicalSearcher.from_collection(engine, "pts")
    assert searcher.model.model_id == data["model"].model_id
    assert searcher.alpha == 1.5


def test_plain_qdrant_client_is_accepted(data) -> None:
    client = QdrantClient(":memory:")
    _fill(QdrantEngine(client), "pts", data)
    searcher = HierarchicalSearcher(client, "pts", strategy="exact")
    q = data["queries"][1]
    assert_same_ranking(searcher.search(q, 5), *brute_force(data, q, 5))


def test_mismatched_model_and_missing_collection_are_refused(engine, data) -> None:
    other = HierarchyModel.fit(data["x"][:, :6], data["labels"], n_components=None)
    with pytest.raises(ModelMismatchError):
        HierarchicalSearcher(engine, "pts", model=other)
    same_dims = data["model"].with_alpha(0.1)
    with pytest.raises(ModelMismatchError, match="built with model"):
        HierarchicalSearcher(engine, "pts", model=same_dims)
    with pytest.raises(NotFoundError, match="does not exist"):
        HierarchicalSearcher(engine, "nope")
    searcher = HierarchicalSearcher(engine, "pts")
    with pytest.raises(InputError, match="dims"):
        searcher.search(np.ones(5), 3)
    with pytest.raises(InputError, match="strategy"):
        searcher.search(data["queries"][0], 3, strategy="magic")  # type: ignore[arg-type]


def test_hit_to_dict(engine, data) -> None:
    searcher = HierarchicalSearcher(engine, "pts", exact=True)
    hit = searcher.search(data["queries"][0], 1, explain=True)[0]
    d = hit.to_dict()
    assert list(d) == ["id", "distance", "cosine", "lca", "lca_height", "leaf", "payload", "explanation"]
    assert d["explanation"] == hit.explanation and d["payload"] == hit.payload and d["id"] == hit.id
    assert "explanation" not in hit.to_dict(explanation=False)
    plain = SearchHit(id="a", distance=0.5, cosine=0.5, lca=3, lca_height=1, leaf=None, payload={})
    assert "explanation" not in plain.to_dict()
    json.dumps(d, allow_nan=False)  # plain JSON values


# One searcher shared by the threads of a web app: answers alone cannot show a race (auto falls back to
# exact), so the statistics and the adaptive state are checked as well.
THREADS = 8


def _shared_calls(n_queries: int) -> list[tuple[str, float, int, int, int, float]]:
    """(strategy, alpha, k, first query, number of queries, oversample): single queries and batches, at αs
    where the rings alone prove answers (4.0) and where they do not (0.0), oversample 1 forcing fallbacks
    (so the ring count grows) — every adaptive path of auto, plus the other strategies."""
    calls = []
    for alpha in (0.0, 4.0, 0.3, 1.5):
        for k in (1, 5, 10):
            calls.append(("auto", alpha, k, 0, n_queries, 2.0))
            calls.extend(("auto", alpha, k, i, 1, 1.0 if i % 3 == 0 else 2.0) for i in range(0, n_queries, 2))
    calls += [("exact", 1.5, 5, 0, n_queries, 2.0), ("rerank", 1.5, 5, 0, 4, 2.0), ("formula", 0.3, 5, 0, 4, 2.0)]
    return calls


def test_one_searcher_shared_by_8_threads(tmp_path: Path, data) -> None:
    engine = EdgeEngine(tmp_path)
    _fill(engine, "pts", data)
    queries = data["queries"]
    calls = _shared_calls(len(queries))

    def run(searcher: HierarchicalSearcher, call: tuple[str, float, int, int, int, float]):
        strategy, alpha, k, a, n, m = call
        return searcher.search_batch(queries[a : a + n], k, strategy=strategy, alpha=alpha, oversample=m)  # type: ignore[arg-type]

    serial = HierarchicalSearcher(engine, "pts", exact=True)
    expected = [run(serial, c) for c in calls]

    shared = HierarchicalSearcher(engine, "pts", exact=True)
    policy = shared.policy
    height = data["model"].tree_height
    start = threading.Barrier(THREADS)
    done = threading.Event()
    seen: list[str] = []

    def watch() -> None:  # the state and the counters are consistent at every moment, not only at the end
        last_rings = 1
        while not done.is_set():
            st, stats = policy.state(), shared.stats
            if not (last_rings <= st.rings <= max(1, height) and 0.0 <= st.rings_alone <= 1.0):
                seen.append(f"invalid state {st}")
            if stats.certified + stats.fallbacks > stats.by_strategy.get("auto", 0):
                seen.append(f"more auto answers than auto queries: {stats}")
            last_rings = st.rings

    def worker(t: int) -> list[tuple[int, list]]:
        order = [(i + t) % len(calls) for i in range(len(calls))]  # each thread its own order
        if t % 2:
            order.reverse()
        start.wait()
        return [(i, run(shared, calls[i])) for i in order]

    watcher = threading.Thread(target=watch)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so unguarded state would race
    try:
        watcher.start()
        with ThreadPoolExecutor(THREADS) as pool:
            results = [f.result() for f in [pool.submit(worker, t) for t in range(THREADS)]]
    finally:
        sys.setswitchinterval(switch)
        done.set()
        watcher.join()
        engine.close()

    assert seen == []
    for per_thread in results:
        assert len(per_thread) == len(calls)
        for i, got in per_thread:
            assert len(got) == len(expected[i])
            for hits, want in zip(got, expected[i], strict=True):
                assert_same_ranking(hits, [h.id for h in want], np.asarray([h.distance for h in want]))
    stats = shared.stats
    sent = THREADS * sum(len(queries[a : a + n]) for _, _, _, a, n, _ in calls)
    assert stats.queries == sent
    assert sum(stats.by_strategy.values()) == sent
    for strategy in ("auto", "exact", "rerank", "formula"):
        want = THREADS * sum(len(queries[a : a + n]) for s, _, _, a, n, _ in calls if s == strategy)
        assert stats.by_strategy[strategy] == want
    assert stats.certified + stats.fallbacks == stats.by_strategy["auto"]
    assert 0 < stats.rings_alone <= stats.certified
    assert stats.reads <= stats.by_strategy["auto"] and stats.fallbacks > 0
    st = policy.state()
    assert 1 <= st.rings <= max(1, height) and 0.0 <= st.rings_alone <= 1.0
    assert st.rings > 1  # the fallbacks made it grow, as in the serial run
    assert serial.policy.state().rings > 1


@pytest.fixture(scope="module")
def local_searcher(data) -> HierarchicalSearcher:
    engine = QdrantEngine(QdrantClient(":memory:"))
    _fill(engine, "pts", data)
    return HierarchicalSearcher(engine, "pts")


@pytest.mark.parametrize(
    ("query", "got"),
    [(None, "NoneType"), ("hello", "str"), (b"\x00", "bytes"), ({"a": 1}, "dict"), (["a", "b"], "list"),
     ([[1.0, 2.0], [3.0]], "list"), (np.zeros((1, 2, 8)), "an array of shape (1, 2, 8)")],
)  # fmt: skip
def test_a_query_that_is_not_a_vector_says_what_a_query_is(local_searcher, query, got) -> None:
    """Issue 12 (6): search(None) said "contain NaN or inf" and search("hello") raised a bare ValueError."""
    with pytest.raises(InputError) as err:
        local_searcher.search(query, 3)
    assert str(err.value) == (
        f"query must be a vector of 8 floats (the raw features) or 8 (the projected vector), got {got}"
    )
    with pytest.raises(InputError, match=f"^queries must be rows of 8 floats .*, got {re.escape(got)}$"):
        local_searcher.search_batch(query, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [2.5, 2.0, True, False, 0, -1, "3", None, np.float64(3)])
def test_k_must_be_a_whole_number_of_at_least_one(local_searcher, data, k) -> None:
    """Issue 12 (8): k=2.5 was truncated to 2."""
    with pytest.raises(InputError, match=r"^k must be a whole number ≥ 1, got .* — e\.g\. k=10$"):
        local_searcher.search(data["queries"][0], k)
    with pytest.raises(InputError, match="^hnsw_ef must be a whole number"):
        local_searcher.search(data["queries"][0], 3, hnsw_ef=k if k not in (None,) else 1.5)


def test_integer_k_of_any_kind_is_accepted(local_searcher, data) -> None:
    q = data["queries"][0]
    assert len(local_searcher.search(q, np.int64(3))) == len(local_searcher.search(q, 3)) == 3
    assert len(local_searcher.search(q, 2, hnsw_ef=np.int32(16))) == 2


def test_a_query_at_the_models_mean_is_refused_not_answered_with_cosine_zero(local_searcher, data) -> None:
    """Issue 12 (7): a query that projects to the zero vector has no cosine to anything; the searcher says
    so (the CLI skips that query with the same reason) instead of ranking by the hierarchy term alone."""
    mean = data["model"].projection.mean
    with pytest.raises(InputError) as err:
        local_searcher.search(mean, 3)
    assert str(err.value) == (
        "query rows [0] project to the zero vector (the model's mean feature): their cosine to every point is "
        "undefined — query with another image; if every image does this, check the extractor and its weights"
    )
    with pytest.raises(InputError, match=r"query rows \[1\] project to the zero vector"):
        local_searcher.search_batch(np.vstack([data["queries"][0], mean]), 3)
    with pytest.raises(InputError, match="zero vector"):
        local_searcher.search(np.zeros(8), 3, projected=True)
    with pytest.raises(InputError, match=r"NaN or inf \(rows \[1\]\)"):
        local_searcher.search_batch(np.vstack([data["queries"][0], np.full(8, np.nan)]), 3)
