"""Issue "Nothing lost, second pass", 6: α is bounded where D stays exact in float32 (DESIGN.md §3.13).

At the bound every strategy still equals the NumPy brute force on every engine; above it (α = 1e12 ranked
wrongly, α = 1e308 failed inside the engine with "Operation cancelled") the searcher refuses α in one line,
per query and per searcher, before any request is sent.
"""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.core.model import ALPHA_MAX
from hierqdrant.store.search import HierarchicalSearcher
from tests.store.test_search import assert_same_ranking, brute_force, data, engine  # noqa: F401 (fixtures)

ABOVE = (float(np.nextafter(ALPHA_MAX, np.inf)), 1e3, 1e12, 1e308)


@pytest.mark.parametrize("strategy", ["exact", "formula", "auto", "rerank"])
def test_every_strategy_equals_the_brute_force_at_the_largest_alpha(engine, data, strategy: str) -> None:  # noqa: F811
    # oversample 50: rerank and formula see every point (480) as a candidate, so they are exact too.
    searcher = HierarchicalSearcher(engine, "pts", strategy=strategy, exact=True, oversample=50)
    for alpha in (ALPHA_MAX, ALPHA_MAX / 3):
        results = searcher.search_batch(data["queries"], 10, alpha=alpha)
        for q, hits in zip(data["queries"], results, strict=True):
            assert_same_ranking(hits, *brute_force(data, q, 10, alpha))


@pytest.mark.parametrize("alpha", ABOVE)
def test_an_alpha_above_the_bound_is_refused_in_one_line(engine, data, alpha: float) -> None:  # noqa: F811
    searcher = HierarchicalSearcher(engine, "pts", strategy="exact", exact=True)
    for strategy in ("exact", "formula", "auto", "rerank"):
        with pytest.raises(InputError) as per_query:
            searcher.search_batch(data["queries"][:2], 10, alpha=alpha, strategy=strategy)
        message = str(per_query.value)
        assert "\n" not in message and f"above {ALPHA_MAX:g}" in message and f"--alpha ≤ {ALPHA_MAX:g}" in message
    with pytest.raises(InputError, match=f"above {ALPHA_MAX:g}"):
        HierarchicalSearcher(engine, "pts", alpha=alpha)
