"""How ``auto`` adapts to the answers it has seen: one small policy object, safe to share between threads.

``auto`` (see :mod:`hierqdrant.store.search`) first sends the rings ``a_0 … a_{j−1}`` of the query's leaf
and, optionally, the unfiltered cosine top-(m·k); what it cannot prove exact from those it completes, so
its *answers* never depend on these choices — only its cost does. Two choices adapt:

* **rings** ``j`` (unless fixed by ``auto_rings``): starts at 1, the leaf ring; one ring more (up to the
  tree height) after a call in which more than a tenth of the answers needed the ``exact`` fallback.
  It never goes down.
* **cosine query** (unless fixed by ``auto_cosine``): skipped while the rings alone proved at least 90 %
  of recent answers (``rings_alone``, a moving share updated per query with weight 1/10, starting at 1),
  sent otherwise. Every query of a first step with rings counts, whether or not the cosine query went with it.
* **no rings at all** (unless ``auto_rings`` is fixed): while the cosine query is sent and the cosine
  candidates alone — with their payloads, DESIGN.md §3.5.3 with j = 0 — would have proved at least 90 % of
  recent answers (``candidates_alone``: the same kind of moving share, starting at 0, updated for every query
  sent with the cosine query; a candidate of unknown LCA counts at its largest D), the rings are dropped:
  one request, the cosine top-(m·k) with payloads. That is the cheap plan at small α over few, large
  classes, where a leaf ring is a tenth of the collection and rarely proves anything. A failing zero-ring
  answer lowers the share, and the rings return.

Per call, :meth:`AutoPolicy.choose` hands out an immutable :class:`AutoPlan` (the whole call, a batch
included, uses it), the call fills its own :class:`AutoTally` (never shared), and
:meth:`AutoPolicy.record` folds the tally into the statistics and the adaptive state in one locked step.
So threads sharing one searcher each see a consistent plan, no count is lost, and the state stays valid
(``1 ≤ rings ≤ max(1, tree height)``, ``0 ≤ rings_alone ≤ 1``); which thread's outcome lands first only
shifts *when* the adaptation happens, as any interleaving of serial calls would.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Literal

# The four strategies of HierarchicalSearcher (docs/DESIGN.md §3); here, beside the policy, so the CLI can
# offer them without importing qdrant-client.
Strategy = Literal["auto", "exact", "rerank", "formula"]

__all__ = ["AutoPlan", "AutoPolicy", "AutoState", "AutoTally", "SearchStats"]

RINGS_ALONE_MIN = 0.9
"""``auto`` skips the unfiltered cosine query while the rings alone proved at least this share lately."""
RINGS_ALONE_WEIGHT = 0.1
"""Weight of each new query in the moving share ``rings_alone``."""
FALLBACK_SHARE = 0.1
"""One ring more after a call in which more than this share of the answers needed ``exact``."""


@dataclass
class SearchStats:
    """Counters since the searcher was made: how often ``auto`` certified its answer.

    Once every call has returned, ``sum(by_strategy.values()) == queries`` and, for ``auto``,
    ``certified + fallbacks == by_strategy["auto"]`` (each answer is certified or falls back, once).
    """

    queries: int = 0
    certified: int = 0  # auto answers proven exact (without running ``exact``)
    rings_alone: int = 0  # … of which the rings alone proved, with no unfiltered cosine query
    reads: int = 0  # auto answers that needed the cosine candidates' payloads read
    fallbacks: int = 0  # auto answers that needed ``exact``
    by_strategy: dict[str, int] = field(default_factory=dict)

    @property
    def certificate_rate(self) -> float:
        checked = self.certified + self.fallbacks
        return self.certified / checked if checked else float("nan")


@dataclass(frozen=True)
class AutoPlan:
    """What one ``auto`` call sends first; fixed for the whole call."""

    rings: int  # j: the rings a_0 … a_{j−1} (at most a query's depth L)
    with_cosine: bool  # the unfiltered cosine top-(m·k) goes with the rings

    def rings_for(self, depth: int) -> int:
        """The rings fetched for a query whose leaf is ``depth`` levels below the root."""
        return max(0, min(self.rings, depth))


@dataclass
class AutoTally:
    """The outcome of one ``auto`` call, filled in as it runs; owned by that call alone."""

    certified: int = 0
    rings_alone: int = 0
    reads: int = 0
    fallbacks: int = 0
    proven_by_rings: list[bool] = field(default_factory=list)  # per query of the first step, in order
    candidates_alone: list[bool] = field(default_factory=list)  # would the cosine candidates alone have proved it
    without_rings: bool = False  # the call's plan fetched no rings because candidates_alone was high


@dataclass(frozen=True)
class AutoState:
    """A snapshot of the adaptive state."""

    rings: int  # the adaptive ring count (used when ``auto_rings`` is not fixed)
    rings_alone: float  # recent share of answers the rings alone proved
    candidates_alone: float = 0.0  # recent share of answers the cosine candidates alone would have proved


class AutoPolicy:
    """The adaptive choices of ``auto`` and the searcher's statistics, behind one lock.

    Args:
        max_rings: the tree height H (the ring count never grows past it).
        rings: a fixed ring count (``auto_rings``), or ``None`` to adapt.
        cosine: always (``True``) / never (``False``) send the cosine query with the rings, or ``None``
            to adapt.
    """

    def __init__(self, max_rings: int, *, rings: int | None = None, cosine: bool | None = None) -> None:
        self.max_rings = int(max_rings)
        self.rings = rings
        self.cosine = cosine
        self._lock = threading.Lock()
        self._rings = 1
        self._rings_alone = 1.0  # optimistic: try the rings alone first
        self._candidates_alone = 0.0  # pessimistic: keep the rings until the candidates have shown they suffice
        self._stats = SearchStats()

    def __repr__(self) -> str:
        s = self.state()
        return f"AutoPolicy(rings={s.rings}, rings_alone={s.rings_alone:.3f}, max_rings={self.max_rings})"

    def choose(self) -> AutoPlan:
        """The plan for the next ``auto`` call."""
        with self._lock:
            rings = self.rings if self.rings is not None else self._rings
            cosine = self.cosine if self.cosine is not None else self._rings_alone < RINGS_ALONE_MIN
            if self.rings is None and cosine and self._candidates_alone >= RINGS_ALONE_MIN:
                rings = 0  # the cosine candidates (with payloads) have been proving the answers alone
        return AutoPlan(rings=int(rings), with_cosine=bool(cosine))

    def count(self, strategy: str, queries: int) -> None:
        """Count ``queries`` queries sent with ``strategy`` (any strategy)."""
        with self._lock:
            self._stats.queries += queries
            self._stats.by_strategy[strategy] = self._stats.by_strategy.get(strategy, 0) + queries

    def record(self, tally: AutoTally, queries: int) -> None:
        """Fold one finished ``auto`` call of ``queries`` queries into the statistics and the state."""
        with self._lock:
            s = self._stats
            s.certified += tally.certified
            s.rings_alone += tally.rings_alone
            s.reads += tally.reads
            s.fallbacks += tally.fallbacks
            for proven in tally.proven_by_rings:
                self._rings_alone += RINGS_ALONE_WEIGHT * (float(proven) - self._rings_alone)
            for proven in tally.candidates_alone:
                self._candidates_alone += RINGS_ALONE_WEIGHT * (float(proven) - self._candidates_alone)
            # fallbacks of a ring-less plan say nothing about the ring count (candidates_alone falls instead)
            grow = self.rings is None and not tally.without_rings and self._rings < self.max_rings
            if grow and tally.fallbacks > FALLBACK_SHARE * queries:
                self._rings += 1

    def stats(self) -> SearchStats:
        """A consistent copy of the counters."""
        with self._lock:
            out = copy.copy(self._stats)
            out.by_strategy = dict(self._stats.by_strategy)
        return out

    def state(self) -> AutoState:
        """A consistent copy of the adaptive state."""
        with self._lock:
            return AutoState(rings=self._rings, rings_alone=self._rings_alone, candidates_alone=self._candidates_alone)
