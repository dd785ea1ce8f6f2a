"""An attached collection with int8-quantized vectors: how often each strategy equals the NumPy brute force
of D, with and without rescoring (issue 14). No timing is asserted; times are printed for context.

Usage (from the repository root)::

    python benchmarks/attached_quantization.py            # N=30,000 points, 64-d, K=40, 200 queries, k=10
    python benchmarks/attached_quantization.py --quick    # N=6,000, 50 queries

Data: an "application" collection on the embedded engine with one named Cosine vector ``image`` and a
``category`` field (10 % of the points without one): a 4-level tree (root → 4 groups → 2 families each →
5 categories each: K = 40), x = g + f + l + noise (σ 1.0 / 0.8 / 0.6, noise 1.0, shifted off the origin).
Two copies: ``plain`` (float32 vectors only) and ``int8`` (scalar int8 quantization, kept in RAM). Both get
``indexing_threshold`` 1,000 KB so that optimizing builds HNSW — and, for ``int8``, the quantized vectors —
on this size. Then ``hierqdrant attach`` (given tree, PCA keeps all dims, α = 3).

For each collection and search mode the searcher's answers are compared with the brute force of D on the
application's own (unit) vectors and the stored leaves: ``= brute force`` is the share of queries whose
top-k equals it (ids and order; a position also counts when its D is within 1e-5 of the brute force's, a
near tie); ``recall@k`` the mean share of the brute force's top-k that was returned; ``max |ΔD|`` the
largest difference between the D a hit reports and its true D (the quantized score shows here when
rescoring is off). Search modes: ``exact`` search params (a full scan: Qdrant ignores quantization for
exact search); HNSW at ef = 128 with ``rescore`` on (quantized candidates, original vectors for the
scores), on with ``oversampling`` 4 (4k quantized candidates per request, re-scored, the best k kept) and
off (quantized scores throughout; the embedded engine's default when the originals are in RAM).
``rerank`` and ``formula`` are approximate by design (the cosine top-(2k) re-ranked); their rows show what
quantization adds to that.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import numpy as np
from qdrant_client import models

from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.core.model import unit_rows
from hierqdrant.pipelines.attach import attach
from hierqdrant.store.engines import EdgeEngine
from hierqdrant.store.engines.vectors import VectorSpec, create_app_collection, scroll_vectors, upsert_app_points
from hierqdrant.store.search import HierarchicalSearcher

GROUPS, FAMILIES, LEAVES = 4, 2, 5


def tree() -> Hierarchy:
    k = GROUPS * FAMILIES * LEAVES
    fam, grp = GROUPS * FAMILIES, GROUPS
    parent = np.full(k + fam + grp + 1, -1)
    for leaf in range(k):
        parent[leaf] = k + leaf // LEAVES
    for f in range(fam):
        parent[k + f] = k + fam + f // FAMILIES
    parent[k + fam : k + fam + grp] = k + fam + grp
    return Hierarchy(parent, k, class_names=[f"c{i:02d}" for i in range(k)])


def data(n: int, dims: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = GROUPS * FAMILIES * LEAVES
    g = rng.standard_normal((GROUPS, dims)) * 1.0
    f = g[np.arange(GROUPS * FAMILIES) // FAMILIES] + rng.standard_normal((GROUPS * FAMILIES, dims)) * 0.8
    centre = f[np.arange(k) // LEAVES] + rng.standard_normal((k, dims)) * 0.6 + 1.5
    labels = rng.integers(0, k, n)
    x = centre[labels] + rng.standard_normal((n, dims))
    q = centre[rng.integers(0, k, queries)] + rng.standard_normal((queries, dims))
    return x.astype(np.float32), labels, q


def build(engine: EdgeEngine, name: str, x: np.ndarray, labels: np.ndarray, quantization: str | None) -> float:
    create_app_collection(
        engine, name, {"image": VectorSpec(x.shape[1])}, quantization=quantization,  # type: ignore[arg-type]
        indexing_threshold_kb=1000,
    )  # fmt: skip
    ids = [str(uuid.UUID(int=i + 1)) for i in range(len(x))]
    payloads = [{"category": f"c{int(y):02d}"} if i % 10 else {"note": "no category"} for i, y in enumerate(labels)]
    upsert_app_points(engine, name, ids, [{"image": v} for v in x], payloads, batch_size=4096)
    t0 = time.perf_counter()
    engine.optimize(name)
    return time.perf_counter() - t0


def reference(engine: EdgeEngine, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids, vecs, leaves = [], [], []
    for batch in scroll_vectors(engine, name, "image", batch_size=4096):
        for r in batch:
            assert r.vector is not None
            ids.append(r.id)
            vecs.append(r.vector)
            leaves.append(r.payload["hq"]["leaf"])
    return np.asarray(ids), unit_rows(np.stack(vecs).astype(np.float64)), np.asarray(leaves)


def score(
    searcher: HierarchicalSearcher, ref: tuple[np.ndarray, np.ndarray, np.ndarray], queries: np.ndarray, k: int
) -> dict[str, float]:
    ids, x, leaves = ref
    model = searcher.model
    lca = model.lca_height_matrix()
    height = max(model.tree_height, 1)
    alpha = searcher.alpha
    t0 = time.perf_counter()
    results = searcher.search_batch(queries, k)
    seconds = time.perf_counter() - t0
    equal, recall, worst = 0, 0.0, 0.0
    for q, hits in zip(queries, results, strict=True):
        qu = unit_rows(q[None].astype(np.float64))
        leaf = int(model.assign(model.transform(qu), projected=True)[0])
        d = 1.0 - x @ qu[0] + alpha * lca[leaf, leaves] / height
        order = np.lexsort((ids, d))[:k]
        true = dict(zip(ids, d, strict=True))
        got = [h.id for h in hits]
        same = len(got) == k and all(
            g == ids[o] or abs(true[g] - d[o]) < 1e-5 for g, o in zip(got, order, strict=True)
        )
        equal += same
        recall += len(set(got) & set(ids[order])) / k
        worst = max(worst, max(abs(h.distance - true[h.id]) for h in hits))
    n = len(queries)
    return {"equal": equal / n, "recall": recall / n, "max_dD": worst, "ms": 1000 * seconds / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    n = args.n or (6_000 if args.quick else 30_000)
    nq = args.queries or (50 if args.quick else 200)
    x, labels, queries = data(n, args.dims, nq)
    with tempfile.TemporaryDirectory() as tmp:
        engine = EdgeEngine(tmp)
        print(f"N={n}, {args.dims}-d, K={GROUPS * FAMILIES * LEAVES}, {nq} queries, k={args.k}, α=3\n")
        print("| collection | search | strategy | = brute force | recall@k | max \\|ΔD\\| | ms/query |")
        print("|---|---|---|---|---|---|---|")
        for name, quant in (("plain", None), ("int8", "int8")):
            optimize_s = build(engine, name, x, labels, quant)
            attach(engine, name, vector="image", label_key="category", builder="given", taxonomy=tree(), pca=None)
            ref = reference(engine, name)
            info = engine.shard(name).info()
            print(f"<!-- {name}: {info.indexed_vectors_count} of {info.points_count} vectors indexed -->")
            modes: list[tuple[str, dict]] = [("exact", {"exact": True}), ("HNSW ef=128", {"hnsw_ef": 128})]
            if quant:
                rescore = models.QuantizationSearchParams(rescore=True)
                no_rescore = models.QuantizationSearchParams(rescore=False)
                oversampled = models.QuantizationSearchParams(rescore=True, oversampling=4.0)
                modes = [
                    ("exact", {"exact": True}),
                    ("HNSW ef=128, rescore", {"hnsw_ef": 128, "quantization": rescore}),
                    ("HNSW ef=128, rescore, oversampling 4", {"hnsw_ef": 128, "quantization": oversampled}),
                    ("HNSW ef=128, no rescore", {"hnsw_ef": 128, "quantization": no_rescore}),
                ]
            for label, params in modes:
                for strategy in ("exact", "auto", "rerank", "formula"):
                    searcher = HierarchicalSearcher(engine, name, strategy=strategy, **params)  # type: ignore[arg-type]
                    s = score(searcher, ref, queries, args.k)
                    print(f"| {name} | {label} | {strategy} | {s['equal']:.1%} | {s['recall']:.4f} | "
                          f"{s['max_dD']:.2e} | {s['ms']:.1f} |")  # fmt: skip
            print(f"<!-- {name}: optimize {optimize_s:.1f} s -->")
        engine.close()


if __name__ == "__main__":
    main()
