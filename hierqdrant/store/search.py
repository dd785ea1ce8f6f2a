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
  point outside them, common at large α) the cosine query is skipped altogether.

Under HNSW the guarantees hold relative to the index (which can miss points): pass ``exact=True`` for
exhaustive search, or ``hnsw_ef`` — both are applied to every prefetch.

On an attached collection (an application's own, DESIGN.md §2.7) the query is the application's own vector:
every request names it (``using``), the cosine in D is the cosine of those vectors, and the PCA of the model
only finds the query's leaf. Points without the payload rank as if their LCA were the root.

A searcher may be shared by threads: what ``auto`` adapts (the ring count, whether to send the cosine
query) and the statistics live in one locked :class:`~hierqdrant.store.policy.AutoPolicy`; each call works
on its own plan and tally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from hierqdrant.core.errors import InputError, ModelMismatchError, NotFoundError
from hierqdrant.core.model import HierarchyModel, check_alpha, unit_rows
from hierqdrant.store.collection import (
    DEFAULT_PAYLOAD_KEY,
    check_model_matches,
    read_collection_model,
    require_collection,
)
from hierqdrant.store.engines import Engine, Hit, as_engine
from hierqdrant.store.engines.base import canonical_id, to_point_id
from hierqdrant.store.engines.vectors import retrieve_vectors
from hierqdrant.store.policy import AutoPlan, AutoPolicy, AutoTally, SearchStats, Strategy
from hierqdrant.store.requests import (
    Query,
    Requests,
    check_offset,
    check_threshold,
    cut,
    is_point_id,
    without_point,
)

STRATEGIES: tuple[str, ...] = ("auto", "exact", "rerank", "formula")

# The certificate compares float32 engine scores; this margin keeps rounding from certifying a tie.
_CERT_EPS = 1e-6


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


class HierarchicalSearcher:
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
        self.collection = collection
        require_collection(self.engine, collection)
        if model is None:
            model, info = read_collection_model(self.engine, collection)
        else:
            info = check_model_matches(self.engine, collection, model)
        self.model = model
        self.payload_key = payload_key or info.get("payload_key") or DEFAULT_PAYLOAD_KEY
        self.alpha = model.alpha if alpha is None else check_alpha(alpha)
        self.strategy = _check_strategy(strategy)
        self.oversample = _check_oversample(oversample)
        self.policy = AutoPolicy(model.tree_height, rings=auto_rings, cosine=auto_cosine)
        self.exact = exact
        self.hnsw_ef = hnsw_ef
        self.quantization = quantization
        self._heights = model.hierarchy.height
        stored = info.get("vector") or None
        if (vector or None) != stored and vector is not None:
            raise ModelMismatchError(
                f"collection {collection!r} is searched on "
                f"{'its vector ' + repr(stored) if stored else 'its one unnamed vector'}, not {vector!r}",
                "omit vector= (the model was fitted on that vector), or attach the collection on another vector",
            )
        self.vector: str | None = stored
        """The application's vector searched on an attached collection; ``None`` on a collection of our own."""
        self.requests = Requests(self.payload_key, stored, model.tree_height)

    @property
    def auto_rings(self) -> int | None:
        """The fixed ring count of ``auto``; ``None``: adaptive (see :class:`AutoPolicy`)."""
        return self.policy.rings

    @auto_rings.setter
    def auto_rings(self, value: int | None) -> None:
        self.policy.rings = value

    @property
    def auto_cosine(self) -> bool | None:
        """Whether ``auto`` always/never sends the cosine query with the rings; ``None``: adaptive."""
        return self.policy.cosine

    @auto_cosine.setter
    def auto_cosine(self, value: bool | None) -> None:
        self.policy.cosine = value

    @property
    def stats(self) -> SearchStats:
        """A consistent copy of the counters since the searcher was made (safe to read while others search)."""
        return self.policy.stats()

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
            query, filter, options["projected"] = self._stored_query(query, filter)  # type: ignore[arg-type]
        batch = _query_matrix(query, self.model, "query")
        if batch.shape[0] != 1:
            raise InputError(f"search takes one query vector, got {batch.shape[0]}", "use search_batch for several")
        leaves = None if leaf is None else [int(leaf)]
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
        k = _check_count(k, "k")
        skip = check_offset(offset)
        threshold = check_threshold(score_threshold)
        strat = _check_strategy(strategy or self.strategy)
        a = self.alpha if alpha is None else check_alpha(alpha)
        m = self.oversample if oversample is None else _check_oversample(oversample)
        params = _search_params(
            self.exact if exact is None else exact, self.hnsw_ef if hnsw_ef is None else hnsw_ef, self.quantization
        )
        prepared = self._prepare(queries, projected, leaves)
        self.policy.count(strat, len(prepared))
        if not prepared:
            return []
        n = k + skip  # every strategy finds the top-(offset + k)
        candidates = max(n, int(np.ceil(m * n)))
        if strat == "rerank":
            requests = [self.requests.plain(q, filter, candidates, params) for q in prepared]
            results = self.engine.query_batch(self.collection, requests)
            hits = [self._rank_by_cosine(q, r, n, a) for q, r in zip(prepared, results, strict=True)]
        elif strat == "formula":
            requests = [self.requests.formula_request(q, filter, candidates, n, params, a) for q in prepared]
            results = self.engine.query_batch(self.collection, requests)
            hits = [self._from_formula(q, r, a) for q, r in zip(prepared, results, strict=True)]
        elif strat == "exact":
            hits = self._exact(prepared, filter, n, params, a)
        else:
            hits = self._auto_call(prepared, filter, n, candidates, params, a)
        if skip or threshold is not None:
            hits = [cut(row, skip, threshold) for row in hits]
        if explain:
            hits = [[self._explain(q, h, a, strat) for h in row] for q, row in zip(prepared, hits, strict=True)]
        return hits

    # -- preparing queries -------------------------------------------------------------------------

    def _prepare(
        self,
        queries: np.ndarray | Sequence[Sequence[float]],
        projected: bool | None,
        leaves: Sequence[int] | None,
    ) -> list[Query]:
        model = self.model
        x = _query_matrix(queries, model, "queries")
        if x.size == 0:
            return []
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise InputError(f"query vectors contain NaN or inf (rows {bad[:5].tolist()})", "drop or repair them")
        sent = None  # the vectors sent to Qdrant when they are not z
        if self.vector is not None:  # attached (§2.7): the application's vector is the query; PCA finds its leaf
            if projected or x.shape[1] != model.input_dims:
                raise InputError(
                    f"collection {self.collection!r} is searched with vectors like its {self.vector!r} vectors "
                    f"({model.input_dims} floats), got {x.shape[1]}{' (projected)' if projected else ''}",
                    "pass the query's own vector for that name",
                )
            if not np.any(x, axis=1).all():
                raise InputError("a query vector is zero: its cosine to every point is undefined", "drop it")
            x = sent = unit_rows(x)
            projected = False
        if projected is None:
            projected = x.shape[1] == model.dims and x.shape[1] != model.input_dims
        if projected:
            if x.shape[1] != model.dims:
                raise InputError(f"projected queries must have {model.dims} dims, got {x.shape[1]}")
            z = x
        else:
            if x.shape[1] != model.input_dims:
                raise InputError(
                    f"query vectors have {x.shape[1]} dims; the collection's model takes raw features of "
                    f"{model.input_dims} dims (or projected vectors of {model.dims})",
                    "embed the query with the same extractor as the collection",
                )
            z = model.transform(x)
        zero = np.flatnonzero(model.zero_rows(z)) if sent is None else np.empty(0, dtype=np.int64)
        if zero.size:
            raise InputError(
                f"query rows {zero[:5].tolist()} project to the zero vector (the model's mean feature): their cosine"
                " to every point is undefined",
                "query with another image; if every image does this, check the extractor and its weights",
            )
        if leaves is None:
            leaf = model.assign(z, projected=True, raw=None if projected else x)  # `head` reads x
        else:
            leaf = np.asarray(leaves, dtype=np.int64)
            if leaf.shape != (z.shape[0],) or (leaf < 0).any() or (leaf >= model.num_classes).any():
                raise InputError(f"leaves must be {z.shape[0]} class indices in 0…{model.num_classes - 1}")
        out = []
        for row, lf in zip(z if sent is None else sent, leaf, strict=True):
            path = model.ancestors(int(lf))
            out.append(
                Query(
                    vector=row.astype(np.float32).tolist(),
                    leaf=int(lf),
                    path=path,
                    heights=[int(self._heights[v]) for v in path],
                    rank={v: i for i, v in enumerate(path)},
                )
            )
        return out

    # -- strategies --------------------------------------------------------------------------------

    def _exact(
        self,
        prepared: list[Query],
        user: models.Filter | None,
        k: int,
        params: models.SearchParams | None,
        alpha: float,
    ) -> list[list[SearchHit]]:
        requests = [self.requests.exact_request(q, user, k, params, alpha) for q in prepared]
        results = self.engine.query_batch(self.collection, requests)
        return [self._from_formula(q, r, alpha) for q, r in zip(prepared, results, strict=True)]

    def _auto_call(
        self,
        prepared: list[Query],
        user: models.Filter | None,
        k: int,
        candidates: int,
        params: models.SearchParams | None,
        alpha: float,
    ) -> list[list[SearchHit]]:
        """One ``auto`` call: the policy's plan, a tally of this call's own, folded into the policy at the end."""
        plan = self.policy.choose()
        tally = AutoTally()
        hits = self._auto(prepared, user, k, candidates, params, alpha, plan, tally, first=True)
        self.policy.record(tally, len(prepared))
        return hits

    def _auto(
        self,
        prepared: list[Query],
        user: models.Filter | None,
        k: int,
        candidates: int,
        params: models.SearchParams | None,
        alpha: float,
        plan: AutoPlan,
        tally: AutoTally,
        *,
        first: bool,
    ) -> list[list[SearchHit]]:
        """DESIGN.md §3's certificate, in up to three steps, each one batched call for all queries:

        1. the rings ``a_0 … a_{j−1}`` (with payloads) and, unless the rings alone have been proving
           the answers lately, the unfiltered cosine top-(m·k) (ids and scores only);
        2. payloads of the cosine candidates the rings did not return, for the queries still unproven;
        3. ``exact`` for the queries that are still unproven.

        Every point not fetched sits in a fetched ring behind k fetched members with a D no larger, or
        has LCA height ≥ η_j and so ``D ≥ c + α·η_j/H`` with c a lower bound of its cosine distance:
        0 with nothing else known, c_max (the largest distance among the cosine candidates) once
        those are fetched, and for a cosine candidate whose LCA is not yet read, its own distance.
        """
        h = max(self.model.tree_height, 1)
        with_cosine = plan.with_cosine if first else True  # a rerun of what the rings alone did not prove
        rings_of = [plan.rings_for(len(q.path) - 1) for q in prepared]
        requests: list[models.QueryRequest] = []
        for q, j in zip(prepared, rings_of, strict=True):
            requests.extend(self.requests.ring(q, i, user, k, params) for i in range(j))
            if with_cosine:
                requests.append(self.requests.plain(q, user, candidates, params, with_payload=False))
        results = self.engine.query_batch(self.collection, requests) if requests else []
        out: list[list[SearchHit] | None] = [None] * len(prepared)
        unproven: list[int] = []  # rings alone did not prove it: rerun with the cosine candidates
        unread: list[tuple[int, dict[str, Hit], list[Hit], float, float]] = []  # need the candidates' payloads
        failed: list[int] = []  # not certified: answered by ``exact``
        pos = 0
        for n, (q, j) in enumerate(zip(prepared, rings_of, strict=True)):
            known = {hit.id: hit for r in results[pos : pos + j] for hit in r}
            pos += j
            ranked = self._rank_by_cosine(q, list(known.values()), k, alpha)
            kth = ranked[-1].distance if len(ranked) == k else np.inf
            floor = alpha * q.heights[j] / h
            if first:
                tally.proven_by_rings.append(kth <= floor - _CERT_EPS)
            if not with_cosine:
                if kth <= floor - _CERT_EPS:
                    tally.certified += 1
                    tally.rings_alone += 1
                    out[n] = ranked
                else:
                    unproven.append(n)
                continue
            cosine = results[pos]
            pos += 1
            # All points the filter allows were returned when fewer than m·k came back.
            c_max = 1.0 - min(hit.score for hit in cosine) if len(cosine) >= candidates else np.inf
            unknown = [hit for hit in cosine if hit.id not in known]
            c_low = min([1.0 - hit.score for hit in unknown], default=c_max)
            if kth <= c_low + floor - _CERT_EPS or (not unknown and c_max == np.inf):
                tally.certified += 1
                out[n] = ranked
            elif not unknown:  # nothing left to read: the check after a read would be this one again
                failed.append(n)
            else:
                unread.append((n, known, unknown, c_max, floor))
        if unread:
            tally.reads += len(unread)
            reads = [self.requests.by_ids(prepared[n], [hit.id for hit in unknown]) for n, _, unknown, _, _ in unread]
            fetched = self.engine.query_batch(self.collection, reads)
            for (n, known, _, c_max, floor), got in zip(unread, fetched, strict=True):
                union = {**known, **{hit.id: hit for hit in got}}
                ranked = self._rank_by_cosine(prepared[n], list(union.values()), k, alpha)
                if c_max == np.inf or (len(ranked) == k and ranked[-1].distance <= c_max + floor - _CERT_EPS):
                    tally.certified += 1
                    out[n] = ranked
                else:
                    failed.append(n)
        if failed:
            tally.fallbacks += len(failed)
            exact = self._exact([prepared[n] for n in failed], user, k, params, alpha)
            for n, hits in zip(failed, exact, strict=True):
                out[n] = hits
        if unproven:
            again = self._auto(
                [prepared[n] for n in unproven], user, k, candidates, params, alpha, plan, tally, first=False
            )
            for n, hits in zip(unproven, again, strict=True):
                out[n] = hits
        return [hits for hits in out if hits is not None]

    def _stored_query(
        self, pid: str | int, user: models.Filter | None
    ) -> tuple[np.ndarray, models.Filter, bool]:
        """Point ``pid``'s stored vector as a query (projected or not), and the caller's filter without it."""
        canon = canonical_id(pid)
        found = retrieve_vectors(self.engine, self.collection, [canon], self.vector or "")
        if not found or found[0].vector is None:
            what = "no point" if not found else f"no {self.vector!r} vector for point"
            raise NotFoundError(f"{what} {pid!r} in collection {self.collection!r}", "pass the id of a stored point")
        rec = found[0]
        assert rec.vector is not None
        if self.vector is not None:  # attached: the application's vector itself
            return rec.vector, without_point(user, to_point_id(canon)), False
        # ours: the stored vector is z/‖z‖ and the payload keeps ‖z‖ (the leaf needs z itself)
        norm = float((rec.payload.get(self.payload_key) or {}).get("norm", 1.0))
        return rec.vector.astype(np.float64) * norm, without_point(user, to_point_id(canon)), True

    # -- turning engine hits into SearchHits ------------------------------------------------------------

    def _lca(self, q: Query, payload: dict[str, Any]) -> int:
        """Index i of the lowest query ancestor a_i on the point's path (the root when it has none)."""
        path = (payload.get(self.payload_key) or {}).get("ancestors") or ()
        for v in path:  # leaf first: the first node shared with the query's path is the LCA
            i = q.rank.get(v)
            if i is not None:
                return i
        return len(q.path) - 1

    def _hit(self, q: Query, hit: Hit, cosine: float, i: int, alpha: float) -> SearchHit:
        h = max(self.model.tree_height, 1)
        leaf = (hit.payload.get(self.payload_key) or {}).get("leaf")
        return SearchHit(
            id=hit.id,
            distance=float(1.0 - cosine + alpha * q.heights[i] / h),
            cosine=float(cosine),
            lca=int(q.path[i]),
            lca_height=int(q.heights[i]),
            leaf=None if leaf is None else int(leaf),
            payload=hit.payload,
        )

    def _rank_by_cosine(self, q: Query, hits: Sequence[Hit], k: int, alpha: float) -> list[SearchHit]:
        """Sort candidates by D on plain tuples; SearchHits are built for the k kept only."""
        step = alpha / max(self.model.tree_height, 1)
        scored = []
        for hit in hits:
            i = self._lca(q, hit.payload)
            scored.append((1.0 - hit.score + step * q.heights[i], -hit.score, hit.id, i, hit))
        scored.sort(key=lambda s: s[:3])
        return [self._hit(q, hit, -neg_cos, i, alpha) for _, neg_cos, _, i, hit in scored[:k]]

    def _from_formula(self, q: Query, hits: Sequence[Hit], alpha: float) -> list[SearchHit]:
        """Formula scores are 1 − D; the cosine is recovered as score + α·η/H."""
        step = alpha / max(self.model.tree_height, 1)
        out = []
        for hit in hits:
            i = self._lca(q, hit.payload)
            out.append(self._hit(q, hit, hit.score + step * q.heights[i], i, alpha))
        out.sort(key=lambda s: (s.distance, -s.cosine, s.id))
        return out

    def _explain(self, q: Query, hit: SearchHit, alpha: float, strategy: str) -> SearchHit:
        tree = self.model.hierarchy
        h = max(tree.tree_height, 1)
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
            "hierarchy_term": alpha * hit.lca_height / h,
        }
        return SearchHit(**{**hit.__dict__, "explanation": explanation})


def _check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}", f"use one of {', '.join(STRATEGIES)}")
    return strategy


def _check_oversample(m: float) -> float:
    value = float(m)
    if not np.isfinite(value) or value < 1:
        raise InputError(f"oversampling {m} must be ≥ 1", "e.g. oversample=3")
    return value


def _search_params(
    exact: bool, hnsw_ef: int | None, quantization: models.QuantizationSearchParams | None = None
) -> models.SearchParams | None:
    if not exact and hnsw_ef is None and quantization is None:
        return None
    ef = None if hnsw_ef is None else _check_count(hnsw_ef, "hnsw_ef")
    return models.SearchParams(exact=bool(exact), hnsw_ef=ef, quantization=quantization)


def _check_count(value: Any, name: str) -> int:
    """A whole number ≥ 1 (not a bool, not a float that would be truncated)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a whole number ≥ 1, got {value!r}", f"e.g. {name}=10")
    return int(value)


def _query_matrix(queries: Any, model: HierarchyModel, what: str) -> np.ndarray:
    """``queries`` as float rows (a vector is one row), or an InputError saying what a query must be."""
    got: str | None = type(queries).__name__
    if queries is not None and not isinstance(queries, (str, bytes, dict)):
        try:
            x = np.atleast_2d(np.asarray(queries, dtype=np.float64))
            got = None if x.ndim == 2 else f"an array of shape {np.shape(queries)}"
        except (TypeError, ValueError):
            pass
    if got is not None:
        one = "a vector" if what == "query" else "rows"
        raise InputError(
            f"{what} must be {one} of {model.input_dims} floats (the raw features) or {model.dims} (the projected"
            f" vector), got {got}"
        )
    return x
