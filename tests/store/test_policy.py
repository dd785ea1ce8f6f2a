"""AutoPolicy: the adaptive choices of ``auto`` and the statistics, consistent under threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from hierqdrant.store.policy import RINGS_ALONE_MIN, AutoPlan, AutoPolicy, AutoTally


def test_first_plan_is_the_leaf_ring_alone() -> None:
    assert AutoPolicy(3).choose() == AutoPlan(rings=1, with_cosine=False)
    assert AutoPlan(rings=2, with_cosine=True).rings_for(1) == 1  # never past a query's depth
    assert AutoPlan(rings=2, with_cosine=True).rings_for(3) == 2


def test_cosine_query_returns_when_the_rings_alone_stop_proving() -> None:
    policy = AutoPolicy(3)
    policy.record(AutoTally(certified=2, proven_by_rings=[False, False]), 2)
    assert policy.state().rings_alone < RINGS_ALONE_MIN
    assert policy.choose().with_cosine
    policy.record(AutoTally(certified=30, proven_by_rings=[True] * 30), 30)
    assert policy.state().rings_alone >= RINGS_ALONE_MIN
    assert not policy.choose().with_cosine


def test_rings_grow_after_many_fallbacks_up_to_the_height() -> None:
    policy = AutoPolicy(2)
    policy.record(AutoTally(certified=9, fallbacks=1), 10)  # a tenth: not more than a tenth
    assert policy.state().rings == 1
    policy.record(AutoTally(certified=8, fallbacks=2), 10)
    assert policy.choose().rings == 2
    policy.record(AutoTally(fallbacks=10), 10)
    assert policy.state().rings == 2  # the tree height


def test_fixed_choices_do_not_adapt() -> None:
    policy = AutoPolicy(4, rings=0, cosine=False)
    policy.record(AutoTally(fallbacks=5, proven_by_rings=[False] * 5), 5)
    assert policy.choose() == AutoPlan(rings=0, with_cosine=False)
    assert policy.state().rings == 1
    assert AutoPolicy(4, cosine=True).choose().with_cosine


def test_stats_are_copies() -> None:
    policy = AutoPolicy(3)
    policy.count("auto", 3)
    snap = policy.stats()
    snap.queries += 10
    snap.by_strategy["auto"] += 10
    assert policy.stats().queries == 3 and policy.stats().by_strategy == {"auto": 3}


def test_concurrent_records_add_up() -> None:
    policy, threads, rounds = AutoPolicy(3), 8, 500
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        start.wait()
        for r in range(rounds):
            plan = policy.choose()
            assert 1 <= plan.rings <= 3
            policy.count("auto", 2)
            proven = (r + t) % 3 == 0
            policy.record(AutoTally(certified=1, fallbacks=1, reads=1, proven_by_rings=[proven, not proven]), 2)

    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(work, t) for t in range(threads)]:
            f.result()
    s, st = policy.stats(), policy.state()
    assert s.queries == s.by_strategy["auto"] == 2 * threads * rounds
    assert s.certified == s.fallbacks == s.reads == threads * rounds
    assert st.rings == 3 and 0.0 <= st.rings_alone <= 1.0
