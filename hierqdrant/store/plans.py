"""The strategies of DESIGN.md §3 as sans-IO plans, shared by the synchronous and the asynchronous searcher.

A **plan** is a generator: it yields one batch of Query API requests (``list[models.QueryRequest]``), is
sent the engine's answers to that batch (one ``list[Hit]`` per request, in order), and finally returns
the ranked :class:`SearchHit` lists, one per query. It never touches an engine, so one copy of every
strategy — and of ``auto``'s certificate — serves both drivers: :func:`run` answers each batch with a
blocking call, :func:`run_async` with an awaited one. A plan yields at most three batches for ``exact``,
``rerank`` and ``formula`` (exactly one) and, for ``auto``, at most one per step of §3.5 (rings [+ cosine],
payload reads, the ``exact`` fallback, and the same again for a ring-first rerun); it never yields an
empty batch.

Ranking (§1.6): a point whose payload path meets the query's path first at ``a_i`` has
``D = (1 − cos) + α·η_i/H``; ``rerank`` and ``auto`` compute D client-side from ``score = cos``,
``formula`` and ``exact`` recover ``cos = score + α·η_i/H`` from the formula's ``score = 1 − D``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from qdrant_client import models

from hierqdrant.core.model import HierarchyModel
from hierqdrant.store.engines.base import Hit
from hierqdrant.store.policy import AutoPlan, AutoPolicy, AutoTally
from hierqdrant.store.requests import Query, Requests

__all__ = ["CERT_EPS", "Answers", "Batch", "Plan", "SearchHit", "Strategies", "run", "run_async"]

CERT_EPS = 1e-6
"""The certificate compares float32 engine scores; this margin keeps rounding from certifying a near tie."""

Batch = list[models.QueryRequest]
Answers = list[list[Hit]]
Plan = Generator[Batch, Answers, list[list["SearchHit"]]]


@dataclass(frozen=True)
class SearchHit:
    """One result: ``distance`` is D, ``cosine`` the cosine similarity, ``lca`` the node id of the
    lowest common ancestor of the query's and the point's leaves, ``lca_height`` its height."""

    id: str
    distance: float
    cosine: float
    lca: int
    lca_height: int
    leaf: int | None
    payload: dict[str, Any]
    explanation: dict[str, Any] | None = None

    def to_dict(self, *, explanation: bool = True) -> dict[str, Any]:
        """The hit as plain JSON-ready values: ``id``, ``distance``, ``cosine``, ``lca``, ``lca_height``,
        ``leaf``, ``payload`` and, with ``explanation`` and when the hit has one, ``explanation``."""
        out = asdict(self)
        if not explanation or self.explanation is None:
            del out["explanation"]
        return out


def run(plan: Plan, send: Callable[[Batch], Answers]) -> list[list[SearchHit]]:
    """Drive ``plan`` to its end, answering each batch with ``send`` (a blocking engine call)."""
    try:
        batch = next(plan)
        while True:
            batch = plan.send(send(batch))
    except StopIteration as done:
        return done.value


async def run_async(plan: Plan, send: Callable[[Batch], Awaitable[Answers]]) -> list[list[SearchHit]]:
    """Drive ``plan`` to its end, answering each batch with ``await send(batch)``."""
    try:
        batch = next(plan)
        while True:
            answers = await send(batch)
            batch = plan.send(answers)
    except StopIteration as done:
        return done.value


class Strategies:
    """The four strategies of one searcher (its model, payload key and request builders) as plans."""

    def __init__(self, model: HierarchyModel, requests: Requests, payload_key: str) -> None:
        self.model = model
        self.requests = requests
        self.payload_key = payload_key
        self.height = max(model.tree_height, 1)

    # -- the plans -------------------------------------------------------------------------------------

    def rerank(
        self, prepared: list[Query], user: models.Filter | None, k: int, candidates: int,
        params: models.SearchParams | None, alpha: float,
    ) -> Plan:  # fmt: skip
        """§3.2: the cosine top-(m·k) with payloads, ordered by D here."""
        results = yield [self.requests.plain(q, user, candidates, params) for q in prepared]
        return [self.rank_by_cosine(q, r, k, alpha) for q, r in zip(prepared, results, strict=True)]

    def formula(
        self, prepared: list[Query], user: models.Filter | None, k: int, candidates: int,
        params: models.SearchParams | None, alpha: float,
    ) -> Plan:  # fmt: skip
        """§3.3: the cosine top-(m·k) re-scored by the formula inside Qdrant."""
        results = yield [self.requests.formula_request(q, user, candidates, k, params, alpha) for q in prepared]
        return [self.from_formula(q, r, alpha) for q, r in zip(prepared, results, strict=True)]

    def exact(
        self, prepared: list[Query], user: models.Filter | None, k: int, params: models.SearchParams | None,
        alpha: float,
    ) -> Plan:  # fmt: skip
        """§3.4: every ring's cosine top-k under one outer prefetch, re-scored by the formula (Theorem 1)."""
        results = yield [self.requests.exact_request(q, user, k, params, alpha) for q in prepared]
        return [self.from_formula(q, r, alpha) for q, r in zip(prepared, results, strict=True)]

    def auto_call(
        self, policy: AutoPolicy, prepared: list[Query], user: models.Filter | None, k: int, candidates: int,
        params: models.SearchParams | None, alpha: float, *, strict: bool = False,
    ) -> Plan:  # fmt: skip
        """One ``auto`` call: the policy's plan, a tally of this call's own, folded into the policy at the end
        (only when the call finishes: a plan abandoned half-way, e.g. by an engine error, records nothing).
        ``strict`` (a replicated collection, §3.11): a short answer never counts as the whole filtered set."""
        plan = policy.choose()
        tally = AutoTally(without_rings=plan.rings == 0 and policy.rings is None)
        hits = yield from self.auto(
            prepared, user, k, candidates, params, alpha, plan, tally, first=True, strict=strict
        )
        policy.record(tally, len(prepared))
        return hits

    def auto(
        self, prepared: list[Query], user: models.Filter | None, k: int, candidates: int,
        params: models.SearchParams | None, alpha: float, plan: AutoPlan, tally: AutoTally, *, first: bool,
        strict: bool = False,
    ) -> Plan:  # fmt: skip
        """DESIGN.md §3.5's certificate, in up to three steps, each one batch for all queries:

        1. the rings ``a_0 … a_{j−1}`` (with payloads) and, unless the rings alone have been proving
           the answers lately, the unfiltered cosine top-(m·k) (ids and scores only);
        2. payloads of the cosine candidates the rings did not return, for the queries still unproven;
        3. ``exact`` for the queries that are still unproven.

        With K the fetched ring members, κ the k-th smallest D over K and ``floor = α·η_j/H``: every point
        not fetched sits in a fetched ring behind k members with a D no larger (Lemma 2), or has LCA height
        ≥ η_j and so ``D ≥ c + floor`` with c a lower bound of its cosine distance — 0 with nothing else
        known (§3.5.1: certified when ``κ ≤ floor − ε``), ``c_low`` = the smallest distance among the cosine
        candidates the rings did not return (§3.5.2), ``c_max`` once their payloads are read (§3.5.3).
        """
        with_cosine = plan.with_cosine if first else True  # a rerun of what the rings alone did not prove
        rings_of = [plan.rings_for(len(q.path) - 1) for q in prepared]
        requests: Batch = []
        for q, j in zip(prepared, rings_of, strict=True):
            requests.extend(self.requests.ring(q, i, user, k, params) for i in range(j))
            if with_cosine:  # ids and scores only; with no rings, the payloads too (the read of §3.5.3 at once)
                requests.append(self.requests.plain(q, user, candidates, params, with_payload=j == 0))
        results: Answers = (yield requests) if requests else []
        out: list[list[SearchHit] | None] = [None] * len(prepared)
        unproven: list[int] = []  # rings alone did not prove it: rerun with the cosine candidates
        unread: list[tuple[int, dict[str, Hit], list[Hit], float, float]] = []  # need the candidates' payloads
        failed: list[int] = []  # not certified: answered by ``exact``
        pos = 0
        for n, (q, j) in enumerate(zip(prepared, rings_of, strict=True)):
            # strict: a ring answer shorter than k may be cut by the replicas' disagreement, not be all of R_i
            short = strict and any(len(r) < k for r in results[pos : pos + j])
            known = {hit.id: hit for r in results[pos : pos + j] for hit in r}
            pos += j
            if j == 0 and with_cosine:  # no rings: K = the candidates, whose payloads came with them
                known = {hit.id: hit for hit in results[pos]}
            ranked = self.rank_by_cosine(q, list(known.values()), k, alpha)
            kth = ranked[-1].distance if len(ranked) == k and not short else np.inf
            floor = alpha * q.heights[j] / self.height
            if first and j > 0:
                tally.proven_by_rings.append(kth <= floor - CERT_EPS)
            if not with_cosine:
                if kth <= floor - CERT_EPS:
                    tally.certified += 1
                    tally.rings_alone += 1
                    out[n] = ranked
                else:
                    unproven.append(n)
                continue
            cosine = results[pos]
            pos += 1
            if short or (strict and len(cosine) < candidates):
                failed.append(n)
                continue
            # All points the filter allows were returned when fewer than m·k came back.
            c_max = 1.0 - min(hit.score for hit in cosine) if len(cosine) >= candidates else np.inf
            unknown = [hit for hit in cosine if hit.id not in known]
            # would the candidates alone (with payloads, no rings) have proved it? (what the policy learns from)
            tally.candidates_alone.append(self.candidates_prove(q, known, cosine, k, alpha, c_max))
            c_low = min([1.0 - hit.score for hit in unknown], default=c_max)
            if kth <= c_low + floor - CERT_EPS or (not unknown and c_max == np.inf):
                tally.certified += 1
                out[n] = ranked
            elif not unknown:  # nothing left to read: the check after a read would be this one again
                failed.append(n)
            else:
                unread.append((n, known, unknown, c_max, floor))
        if unread:
            tally.reads += len(unread)
            reads = [self.requests.by_ids(prepared[n], [h.id for h in unknown]) for n, _, unknown, *_ in unread]
            fetched = yield reads
            for (n, known, unknown, c_max, floor), got in zip(unread, fetched, strict=True):
                union = {**known, **{hit.id: hit for hit in got}}
                ranked = self.rank_by_cosine(prepared[n], list(union.values()), k, alpha)
                if len(got) < len(unknown):  # a candidate gone since (deleted, or not on every replica): unproven
                    failed.append(n)
                    continue
                if c_max == np.inf or (len(ranked) == k and ranked[-1].distance <= c_max + floor - CERT_EPS):
                    tally.certified += 1
                    out[n] = ranked
                else:
                    failed.append(n)
        if failed:
            tally.fallbacks += len(failed)
            exact = yield from self.exact([prepared[n] for n in failed], user, k, params, alpha)
            for n, hits in zip(failed, exact, strict=True):
                out[n] = hits
        if unproven:
            again = yield from self.auto(
                [prepared[n] for n in unproven], user, k, candidates, params, alpha, plan, tally, first=False,
                strict=strict,
            )  # fmt: skip
            for n, hits in zip(unproven, again, strict=True):
                out[n] = hits
        return [hits for hits in out if hits is not None]

    # -- turning engine hits into SearchHits ------------------------------------------------------------

    def lca(self, q: Query, payload: dict[str, Any]) -> int:
        """Index i of the lowest query ancestor a_i on the point's path (the root when it has none)."""
        path = (payload.get(self.payload_key) or {}).get("ancestors") or ()
        rank = q.rank
        for v in path:  # leaf first: the first node shared with the query's path is the LCA
            i = rank.get(v)
            if i is not None:
                return i
        return len(q.path) - 1

    def hit(self, q: Query, hit: Hit, cosine: float, i: int, alpha: float) -> SearchHit:
        """The SearchHit of a point whose LCA with the query is ``a_i``: ``D = 1 − cos + α·η_i/H``."""
        leaf = (hit.payload.get(self.payload_key) or {}).get("leaf")
        # A frozen dataclass's __init__ sets each field through object.__setattr__ (~3 µs a hit, on the hot
        # path of every query); filling __dict__ directly makes the same object.
        out = object.__new__(SearchHit)
        out.__dict__.update(
            id=hit.id,
            distance=float(1.0 - cosine + alpha * q.heights[i] / self.height),
            cosine=float(cosine),
            lca=int(q.path[i]),
            lca_height=int(q.heights[i]),
            leaf=None if leaf is None else int(leaf),
            payload=hit.payload,
            explanation=None,
        )
        return out

    def candidates_prove(
        self, q: Query, known: dict[str, Hit], cosine: list[Hit], k: int, alpha: float, c_max: float
    ) -> bool:
        """Whether the cosine candidates C alone (no rings, §3.5.3 with j = 0: K' = C) would prove the top-k:
        ``c_max = ∞`` (C is the whole filtered set), or the k-th D over C ≤ c_max − ε — with D of a candidate
        whose LCA is not known (not in ``known``) taken at its largest, ``1 − cos + α``, so True is never a
        guess. Only what :class:`AutoPolicy` learns from; the answer itself is certified on its own path."""
        if c_max == np.inf:
            return True
        if len(cosine) < k:
            return False
        step, heights = alpha / self.height, q.heights
        d = [
            1.0 - h.score + (step * heights[self.lca(q, known[h.id].payload)] if h.id in known else alpha)
            for h in cosine
        ]
        return sorted(d)[k - 1] <= c_max - CERT_EPS

    def rank_by_cosine(self, q: Query, hits: Sequence[Hit], k: int, alpha: float) -> list[SearchHit]:
        """Sort candidates by D (ties: higher cosine, then id) on plain tuples; SearchHits only for the k kept."""
        step = alpha / self.height
        scored = []
        for hit in hits:
            i = self.lca(q, hit.payload)
            scored.append((1.0 - hit.score + step * q.heights[i], -hit.score, hit.id, i, hit))
        scored.sort(key=lambda s: s[:3])
        return [self.hit(q, hit, -neg_cos, i, alpha) for _, neg_cos, _, i, hit in scored[:k]]

    def from_formula(self, q: Query, hits: Sequence[Hit], alpha: float) -> list[SearchHit]:
        """Formula scores are 1 − D; the cosine is recovered as score + α·η/H."""
        step = alpha / self.height
        out = []
        for hit in hits:
            i = self.lca(q, hit.payload)
            out.append(self.hit(q, hit, hit.score + step * q.heights[i], i, alpha))
        out.sort(key=lambda s: (s.distance, -s.cosine, s.id))
        return out

    def explain(self, q: Query, hit: SearchHit, alpha: float, strategy: str) -> SearchHit:
        """The hit with the terms of its D: cosine distance, the LCA (name, classes, height) and α·h/H."""
        tree = self.model.hierarchy
        classes = tree.leaves_under(hit.lca)
        explanation = {
            "strategy": strategy,
            "query_leaf": q.leaf,
            "query_leaf_name": tree.class_names[q.leaf],
            "cosine_distance": 1.0 - hit.cosine,
            "lca": hit.lca,
            "lca_name": tree.node_names[hit.lca],
            "lca_classes": [tree.class_names[c] for c in classes],
            "lca_height": hit.lca_height,
            "tree_height": tree.tree_height,
            "alpha": alpha,
            "hierarchy_term": alpha * hit.lca_height / self.height,
        }
        return SearchHit(**{**hit.__dict__, "explanation": explanation})
