"""How cost grows with the collection: ingest, memory, disk and query latency at N = 10k, 100k, 1M.

Usage (from the repository root)::

    python benchmarks/scale.py                                  # N = 10k, 100k, 1M; 64-d; K = 1,000 leaves
    python benchmarks/scale.py --sizes 10000,100000 --queries 100 --out /tmp/scale.json
    python benchmarks/scale.py --plot docs/scale.png --from-json a.json b.json   # table + plot from saved runs

Data: K classes under a given 3-level taxonomy (root → ``g`` groups → ``g`` families each → ``K/g²`` leaves
each; ``g`` = round(K^⅓), 10 for K = 1,000) with features that follow it, ``x = μ_group + μ_family + μ_leaf +
noise`` (σ 1.0 / 0.8 / 0.6, noise σ 1.0), like ``query_latency.py``; labels balanced over the leaves (N/K each,
shuffled); queries are fresh draws of the same distribution.

Each size runs in its own child process (so peak RSS is that size's own) on a fresh embedded engine
(qdrant-edge) in a temporary data dir:

1. **Ingest** through the library's own pipeline, :func:`hierqdrant.pipelines.ingest.ingest` on a features
   ``.npz`` (what ``hierqdrant ingest features.npz`` runs; no image embedding): read the file, fit PCA (all
   dims kept) + class Gaussians + the given tree + the tied query classifier, upsert in batches of 1,024,
   optimize (HNSW build). Timed: total, fit, upsert, optimize; points/s = N / total.
2. **Memory**: peak RSS of the child (``resource.getrusage``) after ingest and after queries, and the RSS
   of the raw arrays alone for scale. **Disk**: the size of the collection's data dir after optimize.
3. **Queries** (k = 10, one query per call), in two modes — exact search params (``exact=True``: every
   prefetch a full scan) and HNSW at Qdrant's default ef: ``plain`` (a cosine top-k of the PCA vector through
   ``EdgeEngine.query_batch``, with payload) and ``auto`` (``HierarchicalSearcher.search`` on the raw feature:
   PCA, the query's leaf, the ring prefetches, the certificate and any fallback). Methods alternate per
   query so machine noise hits both alike; p50 / p95 in ms.
4. **Agreement**: where N ≤ ``--brute-max``, the NumPy brute force of ``D = (1 − cos) + α·h(LCA)/H`` over
   the stored PCA vectors and leaves; the share of queries whose top-k equals it (ids in order, or a near
   tie within 1e-5 of D at that position). For plain, its recall@k against the cosine brute force.

Prints a markdown table; ``--out`` writes the JSON; ``--plot`` draws the log-log plot. On a shared machine the
load (printed) is the noise the numbers ran under.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from qdrant_client import models  # noqa: E402

from hierqdrant.core.features import FeatureSet  # noqa: E402
from hierqdrant.core.hierarchy import Hierarchy  # noqa: E402
from hierqdrant.core.model import HierarchyModel  # noqa: E402
from hierqdrant.evaluation.hooks import Hooks  # noqa: E402
from hierqdrant.pipelines.ingest import IngestOptions, ingest  # noqa: E402
from hierqdrant.store.collection import point_id  # noqa: E402
from hierqdrant.store.engines import EdgeEngine  # noqa: E402
from hierqdrant.store.search import HierarchicalSearcher  # noqa: E402

SIGMA_GROUP, SIGMA_FAMILY, SIGMA_LEAF, SIGMA_NOISE = 1.0, 0.8, 0.6, 1.0
NEAR_TIE = 1e-5
COLLECTION = "scale"
DEFAULT_SIZES = "10000,100000,1000000"


# --------------------------------------------------------------------------------------------- data


def shape(classes: int) -> tuple[int, int, int]:
    """(groups, families per group, leaves per family) with groups·families·leaves = ``classes``."""
    g = max(1, round(classes ** (1 / 3)))
    while classes % (g * g) and g > 1:  # fall back to a 2-level shape when K is not g²·m
        g -= 1
    return g, g, classes // (g * g)


def make_tree(classes: int) -> Hierarchy:
    """root → groups → families → leaves; node ids: leaves, families, groups, root."""
    groups, fams_per, leaves_per = shape(classes)
    fams = groups * fams_per
    parent = np.full(classes + fams + groups + 1, -1)
    parent[:classes] = classes + np.arange(classes) // leaves_per
    parent[classes : classes + fams] = classes + fams + np.arange(fams) // fams_per
    parent[classes + fams : classes + fams + groups] = classes + fams + groups
    return Hierarchy(parent, classes, class_names=[f"c{i:04d}" for i in range(classes)])


def make_data(n: int, nq: int, dims: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (n, dims) float32 with labels, and nq query features, following :func:`make_tree`."""
    rng = np.random.default_rng(seed)
    groups, fams_per, leaves_per = shape(classes)
    g = rng.standard_normal((groups, dims)) * SIGMA_GROUP
    f = g[np.arange(groups * fams_per) // fams_per] + rng.standard_normal((groups * fams_per, dims)) * SIGMA_FAMILY
    centre = f[np.arange(classes) // leaves_per] + rng.standard_normal((classes, dims)) * SIGMA_LEAF
    y = rng.permutation(np.arange(n) % classes)  # balanced: every class has images (the fit needs them)
    x = np.empty((n, dims), np.float32)
    for a in range(0, n, 100_000):  # in chunks: float64 noise for 1M × 64 would be 0.5 GB at once
        b = min(n, a + 100_000)
        x[a:b] = centre[y[a:b]] + rng.standard_normal((b - a, dims)) * SIGMA_NOISE
    xq = (centre[rng.integers(0, classes, nq)] + rng.standard_normal((nq, dims)) * SIGMA_NOISE).astype(np.float32)
    return x, y, xq


# ------------------------------------------------------------------------------------------ helpers


def rss_peak_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_mb(path: Path, *, apparent: bool = False) -> float:
    """Disk used under ``path``: allocated blocks (what ``du`` says), or with ``apparent`` the file sizes
    (the engine preallocates sparse memory-mapped files, so these can be far larger)."""
    files = [p.stat() for p in path.rglob("*") if p.is_file()]
    return sum(s.st_size if apparent else s.st_blocks * 512 for s in files) / 2**20


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def top_k_ids(rows: np.ndarray, ids: np.ndarray, k: int) -> tuple[list[list[str]], list[np.ndarray]]:
    """Per row the k smallest values' ids (ties broken by id, as the searcher does) and their values."""
    out_ids, out_val = [], []
    for r in rows:
        cand = np.argpartition(r, k + 20)[: k + 20]
        order = cand[np.lexsort((ids[cand], r[cand]))][:k]
        out_ids.append(ids[order].tolist())
        out_val.append(r[order])
    return out_ids, out_val


def agrees(hits: list[str], want: list[str], want_d: np.ndarray, true_d: dict[str, float]) -> bool:
    """Same ids in the same order, or at a differing position a hit whose true D is a near tie."""
    if len(hits) != len(want):
        return False
    return all(h == w or abs(true_d[h] - float(d)) <= NEAR_TIE for h, w, d in zip(hits, want, want_d, strict=True))


# ------------------------------------------------------------------------------------------ one size


def warm_up(folder: Path, dims: int) -> float:
    """A tiny ingest first (8 classes, 200 points, its own engine): the libraries the fit and the engine load
    lazily (scikit-learn, SciPy, qdrant-edge) would otherwise be timed as the first size's fit."""
    t0 = time.perf_counter()
    x, y, _ = make_data(200, 1, dims, 8, 1)
    tree = make_tree(8)
    FeatureSet(x, labels=y, classes=tree.class_names).save(folder.with_suffix(".npz"))
    opts = IngestOptions(builder="given", taxonomy=tree, pca=None, progress=False, cache_dir=folder / "cache")
    with EdgeEngine(folder) as engine:
        ingest(folder.with_suffix(".npz"), engine, "warm", opts)
    return time.perf_counter() - t0


def run_one(n: int, dims: int, classes: int, nq: int, k: int, brute_max: int, seed: int) -> dict[str, Any]:
    """Ingest N points into a fresh embedded engine, then time and check queries; the result as a dict."""
    out: dict[str, Any] = {"n": n, "dims": dims, "classes": classes, "queries": nq, "k": k}
    tmp = Path(tempfile.mkdtemp(prefix=f"hq-scale-{n}-"))
    try:
        t0 = time.perf_counter()
        x, y, xq = make_data(n, nq, dims, classes, seed)
        out["data_seconds"] = time.perf_counter() - t0
        out["rss_after_data_mb"] = rss_peak_mb()
        tree = make_tree(classes)
        features = tmp / "features.npz"
        FeatureSet(x, labels=y, classes=tree.class_names).save(features)
        del x  # the pipeline reads the file; the brute force reloads the stored vectors' sources below

        out["warm_up_seconds"] = warm_up(tmp / "warm", dims)
        engine = EdgeEngine(tmp / "data")
        timings: dict[str, float] = {}
        optimize = engine.optimize

        def timed_optimize(name: str) -> None:  # the HNSW build, timed apart from the upsert around it
            t = time.perf_counter()
            optimize(name)
            timings["optimize"] = time.perf_counter() - t

        engine.optimize = timed_optimize  # type: ignore[method-assign]
        lines: list[str] = []
        opts = IngestOptions(
            builder="given", taxonomy=tree, pca=None, progress=False, cache_dir=tmp / "cache", upsert_batch=1024
        )
        t0 = time.perf_counter()
        result = ingest(features, engine, COLLECTION, opts, hooks=Hooks(log=lines.append))
        total = time.perf_counter() - t0
        fit = next((float(ln.split()[2]) for ln in lines if ln.startswith("fitted in ")), float("nan"))
        out.update(
            ingest_seconds=total,
            fit_seconds=fit,
            upsert_seconds=result.upsert_seconds - timings.get("optimize", 0.0),
            optimize_seconds=timings.get("optimize", 0.0),
            ingest_points_per_s=n / total,
            upsert_points_per_s=n / max(result.upsert_seconds - timings.get("optimize", 0.0), 1e-9),
            rss_after_ingest_mb=rss_peak_mb(),
            disk_mb=dir_mb(tmp / "data"),
            disk_apparent_mb=dir_mb(tmp / "data", apparent=True),
            tree_height=result.height,
        )
        model = result.model
        searcher = HierarchicalSearcher(engine, COLLECTION)
        zq = model.transform(xq).astype(np.float32)
        modes = {"exact": {"exact": True}, "hnsw": {"exact": False}}
        hits: dict[str, list[list[str]]] = {}
        lat: dict[str, list[float]] = {}
        for mode, params in modes.items():
            plain_params = models.SearchParams(exact=params["exact"])
            searcher.search(xq[0], k, **params)  # warm-up: the first call opens segments and indexes
            for method in ("plain", "auto"):
                hits[f"{method}/{mode}"], lat[f"{method}/{mode}"] = [], []
            for i in range(nq):
                order = ("plain", "auto") if i % 2 == 0 else ("auto", "plain")
                for method in order:
                    t = time.perf_counter()
                    if method == "plain":
                        request = models.QueryRequest(
                            query=zq[i].tolist(), limit=k, params=plain_params, with_payload=True
                        )
                        got = [str(h.id) for h in engine.query_batch(COLLECTION, [request])[0]]
                    else:
                        got = [h.id for h in searcher.search(xq[i], k, **params)]
                    lat[f"{method}/{mode}"].append(time.perf_counter() - t)
                    hits[f"{method}/{mode}"].append(got)
        for key, values in lat.items():
            out[f"{key}/p50_ms"] = pct(values, 50) * 1e3
            out[f"{key}/p95_ms"] = pct(values, 95) * 1e3
        stats = searcher.stats
        out["auto_stats"] = {k_: v for k_, v in vars(stats).items() if isinstance(v, (int, float))}
        out["rss_after_queries_mb"] = rss_peak_mb()
        if n <= brute_max:
            out.update(check(model, features, xq, zq, hits, k))
        engine.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check(
    model: HierarchyModel, features: Path, xq: np.ndarray, zq: np.ndarray, hits: dict[str, list[list[str]]], k: int
) -> dict[str, Any]:
    """The searchers' answers against the NumPy brute force over what the collection stores."""
    t0 = time.perf_counter()
    data = FeatureSet.load(features)
    x = data.features
    labels = np.asarray(data.labels)
    keys = data.paths or [f"{features.name}#{i}" for i in range(len(x))]
    ids = np.asarray([point_id(COLLECTION, key) for key in keys])
    lca = model.lca_height_matrix()
    h = max(model.tree_height, 1)
    leaf_q = model.assign(zq, projected=True, raw=xq)
    qu = zq / np.linalg.norm(zq, axis=1, keepdims=True)
    n = x.shape[0]
    cos_d = np.empty((len(zq), n), np.float32)
    leaves = np.empty(n, np.int64)
    for a in range(0, n, 100_000):  # PCA, leaves and cosines a chunk at a time (1M × 64 float64 is 0.5 GB)
        b = min(n, a + 100_000)
        z = model.transform(x[a:b])
        leaves[a:b] = model.database_leaves(x[a:b], [int(v) for v in labels[a:b]])
        cos_d[:, a:b] = 1.0 - qu @ (z / np.linalg.norm(z, axis=1, keepdims=True)).T
    index = {pid: i for i, pid in enumerate(ids.tolist())}
    out: dict[str, Any] = {}
    c_ids, _ = top_k_ids(cos_d, ids, k)
    for mode in ("exact", "hnsw"):
        out[f"plain/{mode}/recall"] = float(
            np.mean([len(set(a) & set(b)) / k for a, b in zip(hits[f"plain/{mode}"], c_ids, strict=True)])
        )
    same = {"exact": 0, "hnsw": 0}
    for qi in range(len(zq)):
        d = cos_d[qi] + model.alpha * lca[leaf_q[qi], leaves] / h
        want, want_d = top_k_ids(d[None, :], ids, k)
        for mode in same:
            got = hits[f"auto/{mode}"][qi]
            same[mode] += agrees(got, want[0], want_d[0], {g: float(d[index[g]]) for g in got})
    for mode, count in same.items():
        out[f"auto/{mode}/agreement"] = count / len(zq)
    out["brute_force_seconds"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------ report


def machine() -> str:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    a, b, c = os.getloadavg()
    return f"{cores}-core {platform.machine()}, Python {platform.python_version()}, load {a:.1f}/{b:.1f}/{c:.1f}"


def fmt(v: Any, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def table(results: list[dict[str, Any]]) -> str:
    cols = [
        ("N", "n", ",d"),
        ("ingest pts/s", "ingest_points_per_s", ",.0f"),
        ("fit s", "fit_seconds", ".1f"),
        ("upsert s", "upsert_seconds", ".1f"),
        ("HNSW build s", "optimize_seconds", ".1f"),
        ("peak RSS MB", "rss_after_queries_mb", ",.0f"),
        ("disk MB", "disk_mb", ",.0f"),
        ("plain exact p50/p95 ms", ("plain/exact/p50_ms", "plain/exact/p95_ms"), ".2f"),
        ("auto exact p50/p95 ms", ("auto/exact/p50_ms", "auto/exact/p95_ms"), ".2f"),
        ("plain HNSW p50/p95 ms", ("plain/hnsw/p50_ms", "plain/hnsw/p95_ms"), ".2f"),
        ("auto HNSW p50/p95 ms", ("auto/hnsw/p50_ms", "auto/hnsw/p95_ms"), ".2f"),
        ("auto exact = brute force", "auto/exact/agreement", ".1%"),
        ("auto HNSW = brute force", "auto/hnsw/agreement", ".1%"),
        ("plain HNSW recall@k", "plain/hnsw/recall", ".3f"),
    ]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    for r in results:
        cells = []
        for _, key, spec in cols:
            if isinstance(key, tuple):
                cells.append(" / ".join(fmt(r.get(k_), spec) for k_ in key))
            else:
                cells.append(fmt(r.get(key), spec))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Log-log: ingest seconds and its parts, and query p50 per method and mode, against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=80)
    for key, label in (
        ("ingest_seconds", "ingest total"),
        ("fit_seconds", "fit"),
        ("upsert_seconds", "upsert"),
        ("optimize_seconds", "HNSW build"),
    ):
        # Below Qdrant's indexing threshold optimize builds no HNSW (milliseconds): leave that point out.
        pts = [(n, r[key]) for n, r in zip(ns, results, strict=True) if key != "optimize_seconds" or r[key] > 0.05]
        left.plot([n for n, _ in pts], [v for _, v in pts], marker="o", label=label)
    left.set(xscale="log", yscale="log", xlabel="N points", ylabel="seconds", title="ingest")
    for key, label in (
        ("plain/exact/p50_ms", "plain, exact"),
        ("auto/exact/p50_ms", "auto, exact"),
        ("plain/hnsw/p50_ms", "plain, HNSW"),
        ("auto/hnsw/p50_ms", "auto, HNSW"),
    ):
        right.plot(ns, [r[key] for r in results], marker="o", label=label)
    right.set(xscale="log", yscale="log", xlabel="N points", ylabel="ms (p50, one query)", title="query latency")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated N (default %(default)s)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--classes", type=int, default=1000, help="K leaves (default %(default)s)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--brute-max", type=int, default=1_000_000, help="largest N checked against the brute force")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--plot", type=Path, help="draw the log-log plot here (PNG)")
    p.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="no runs: read results from these JSON files (a later file's N replaces an earlier one's)",
    )
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: one size, JSON on stdout
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.dim, args.classes, args.queries, args.k, args.brute_max, args.seed)))
        return
    if args.from_json is not None:
        by_n = {r["n"]: r for path in args.from_json for r in json.loads(path.read_text())["results"]}
        results = [by_n[n] for n in sorted(by_n)]
    else:
        print(f"# scale: {machine()}", flush=True)
        results = []
        for n in (int(s) for s in args.sizes.split(",") if s.strip()):
            cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim), "--classes", str(args.classes)]
            cmd += ["--queries", str(args.queries), "--k", str(args.k), "--brute-max", str(args.brute_max)]
            cmd += ["--seed", str(args.seed)]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"N={n}: failed (exit {done.returncode})\n{done.stderr[-3000:]}", file=sys.stderr)
                break
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"N={n:,} done in {time.perf_counter() - t0:.0f} s; {machine()}", flush=True)
            print(json.dumps(results[-1]), flush=True)
            if args.out is not None:  # after each size, so a long run that is stopped keeps what finished
                args.out.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    print(table(results))
    if args.plot is not None and results:
        plot(results, args.plot)
        print(f"plot: {args.plot} ({args.plot.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
