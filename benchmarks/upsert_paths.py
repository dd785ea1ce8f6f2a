"""The two plugin upsert paths, A/B in one process: leaves given (projected vectors) against the default path
(raw features in: PCA and the model's database leaves inside ``upsert_points``).

Usage (from the repository root)::

    python benchmarks/upsert_paths.py                 # 20,000 points, 64-d, K = 200, 3 alternating rounds
    python benchmarks/upsert_paths.py --n 50000 --rounds 5 --query-classifier mahalanobis

Each round upserts the same points into a fresh collection by each path, the order alternating between
rounds, so load on a shared machine falls on both alike. Prints the seconds per path and their ratio, then
a cProfile of one default-path call by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from hierqdrant import HierarchyModel  # noqa: E402
from hierqdrant.store.collection import create_collection, upsert_points  # noqa: E402
from hierqdrant.store.engines import EdgeEngine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--query-classifier", choices=("tied", "mahalanobis"), default="tied")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.classes, args.dims)) * 3
    y = rng.integers(0, args.classes, args.n)
    x = centres[y] + rng.standard_normal((args.n, args.dims))
    model = HierarchyModel.fit(x, y, n_components=None, query_classifier=args.query_classifier)
    z = model.transform(x)
    leaves = model.database_leaves(z, None, projected=True)
    keys = [f"k{i}" for i in range(args.n)]
    own = [{"path": k} for k in keys]
    engine = EdgeEngine(tempfile.mkdtemp(prefix="hq-upsert-"))

    def given(name: str) -> None:
        upsert_points(engine, name, model, z, keys, payloads=own, leaves=leaves, projected=True)

    def default(name: str) -> None:
        upsert_points(engine, name, model, x, keys, payloads=own)

    spent = {"leaves given": 0.0, "default": 0.0}
    paths = [("leaves given", given), ("default", default)]
    for r in range(args.rounds):
        for label, fn in paths if r % 2 == 0 else paths[::-1]:
            name = f"{label.replace(' ', '_')}_{r}"
            create_collection(engine, name, model)
            t0 = time.perf_counter()
            fn(name)
            spent[label] += time.perf_counter() - t0
    total = args.n * args.rounds
    shape = f"{args.dims}-d, K = {args.classes}, {args.query_classifier} leaf"
    print(f"{args.n:,} points × {args.rounds} rounds, {shape}\n")
    print("| path | seconds | points/s |")
    print("|---|---:|---:|")
    for label, t in spent.items():
        print(f"| {label} | {t:.2f} | {total / t:,.0f} |")
    print(f"\ndefault path speed ÷ leaves-given speed: {spent['leaves given'] / spent['default']:.2f}")

    create_collection(engine, "profiled", model)
    prof = cProfile.Profile()
    prof.enable()
    default("profiled")
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(8)
    text = buf.getvalue()
    print(f"\ncProfile of one default-path call, by own time:\n\n```\n{text[text.find('   ncalls') :].rstrip()}\n```")
    engine.close()


if __name__ == "__main__":
    main()
