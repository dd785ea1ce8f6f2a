"""Build time and peak memory of HierarchyModel.fit on synthetic hierarchical class data.

    python benchmarks/hierarchy_build.py                 # the three sizes of the issue
    python benchmarks/hierarchy_build.py --sizes 200x30x128
    python benchmarks/hierarchy_build.py --features train.npz   # real features (e.g. from `hierqdrant embed`)

Each size runs in a fresh subprocess so its peak RSS is its own. Data: K class means drawn around
K/10 super-class centres (so the overlap builder has groups to find), 'n' images per class.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def make_data(k: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    supers = rng.standard_normal((max(2, k // 10), d)) * 6.0
    # Class offsets inside a super-class small enough that neighbours overlap (BC around t).
    means = supers[rng.integers(0, supers.shape[0], size=k)] + rng.standard_normal((k, d)) * (
        1.5 / np.sqrt(d)
    )
    x = (means[:, None, :] + rng.standard_normal((k, n, d))).reshape(k * n, d)
    return x.astype(np.float32), np.repeat(np.arange(k), n)


def run_one(k: int, n: int, d: int, threshold: float) -> dict[str, object]:
    t_import = time.perf_counter()
    import sklearn.covariance  # noqa: F401  (imported up front: a one-off cost, reported apart)
    import sklearn.decomposition  # noqa: F401

    from hierqdrant.core.model import HierarchyModel

    import_s = time.perf_counter() - t_import
    x, y = make_data(k, n, d)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    model = HierarchyModel.fit(x, y, threshold=threshold, n_components=None)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    levels = model.info.get("overlap_levels", [])
    evaluated = sum(lv["pairs_evaluated"] for lv in levels)
    total = sum(lv["pairs_total"] for lv in levels)
    return {
        "K": k,
        "images/class": n,
        "dims": d,
        "t": threshold,
        "build_s": round(seconds, 2),
        "imports_s": round(import_s, 2),
        "peak_rss_MiB": round(rss / 1024, 1),
        "data_MiB": round(x.nbytes / 2**20, 1),
        "rss_before_fit_MiB": round(rss_before / 1024, 1),
        "tree_height": model.tree_height,
        "inner_nodes": model.hierarchy.num_nodes - k,
        "pairs_evaluated/total": f"{evaluated}/{total}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", nargs="*", default=["200x30x128", "100x500x64", "1000x50x256"], help="KxNxD"
    )
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        k, n, d = (int(v) for v in args.one.split("x"))
        print(json.dumps(run_one(k, n, d, args.threshold)))
        return
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"
    )
    rows = []
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", size, "--threshold", str(args.threshold)],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
