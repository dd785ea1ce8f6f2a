"""Tuned leaf sources against the paper's setting, on the test split of a features file.

Usage (from the repository root)::

    hierqdrant embed ../shared/datasets/cifar10 -o r56.npz -m cifar_resnet56 -w ../shared/models/resnet56-4bfd9763.th
    python benchmarks/leaf_sources.py r56.npz                          # CIFAR-10 classes
    python benchmarks/leaf_sources.py r56.npz --labels vehicle-animal  # the 2-label task of DESIGN.md
    python benchmarks/leaf_sources.py pix.npz --json out.json

Both models are chosen by :func:`hierqdrant.evaluation.tuning.tune` on a validation split of the
**train** items only (20 %, stratified, seed 0; ``--metric``, default map@r):

* ``tuned`` — the defaults: the query classifier (tied, mahalanobis), the PCA (95 %, 99 %, every dim),
  t and α all searched; stored images keep their label as leaf;
* ``paper`` — the paper's setting (``FitSettings.paper()``: Mahalanobis query leaf, predicted stored
  leaves, 95 % PCA), t and α searched on the same split.

The paper's setting is a point of the tuned grid, so the validation score alone proves nothing: both
models then rank the **test** images (queries) against the train images (database), and the script
prints map@10, map@r and p@1 of each, of cosine on the raw features, the leaf accuracy of the queries and
of the database, and paired tests (sign-flip p, bootstrap 95 % CI) of tuned against paper and against
cosine-raw on every query.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from hierqdrant.core.features import FeatureSet  # noqa: E402
from hierqdrant.core.model import HierarchyModel  # noqa: E402
from hierqdrant.core.settings import FitSettings  # noqa: E402
from hierqdrant.evaluation.items import Items, database_leaves  # noqa: E402
from hierqdrant.evaluation.methods import Method  # noqa: E402
from hierqdrant.evaluation.ranking import evaluate_arrays  # noqa: E402
from hierqdrant.evaluation.significance import paired_test  # noqa: E402
from hierqdrant.evaluation.tuning import TuneSettings, tune  # noqa: E402

METRICS = ("map@10", "map@r", "p@1")
#: CIFAR-10's classes as the two labels of the vehicle/animal task (labels that are not one Gaussian each).
VEHICLES = {"airplane", "automobile", "ship", "truck"}


def split(data: FeatureSet, name: str) -> tuple[np.ndarray, np.ndarray]:
    if data.splits is None or data.labels is None:
        raise SystemExit("the features file needs labels and train/test splits (embed a train/test folder)")
    rows = np.flatnonzero(np.asarray(data.splits) == name)
    if rows.size == 0:
        raise SystemExit(f"the features file has no {name!r} split")
    return np.asarray(data.features[rows], dtype=np.float64), np.asarray(data.labels)[rows]


def relabel(y: np.ndarray, classes: list[str], task: str) -> tuple[np.ndarray, list[str]]:
    if task == "classes":
        return y, classes
    vehicle = np.asarray([c in VEHICLES for c in classes])
    if not vehicle.any() or vehicle.all():
        raise SystemExit(f"--labels vehicle-animal needs CIFAR-10's class names, got {classes}")
    return np.where(vehicle[y], 1, 0), ["animal", "vehicle"]


def score(model: HierarchyModel, xq: np.ndarray, yq: np.ndarray, xd: np.ndarray, yd: np.ndarray) -> dict[str, Any]:
    """Test queries against the train database in ``model``'s space: its overlap ranking and its leaves."""
    queries = Items(model.transform(xq), yq, [f"q{i}" for i in range(yq.size)], raw=xq)
    database = Items(model.transform(xd), yd, [f"d{i}" for i in range(yd.size)], raw=xd)
    methods = [Method("cosine-raw"), Method("overlap", model, model.alpha)]
    res = evaluate_arrays(
        queries, database, methods, num_classes=model.num_classes, ks=(10,), map_r=True, hdist_ks=(),
        leaf_from=model.leaf_from,
    )  # fmt: skip
    q_leaves = model.assign(queries.z, projected=True, raw=xq)
    db_leaves = database_leaves(model, database, model.leaf_from)
    return {
        "metrics": res.metrics,
        "per_query": res.per_query,
        "query_leaf_accuracy": float(np.mean(q_leaves == yq)),
        "database_leaf_accuracy": float(np.mean(db_leaves == yd)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", type=Path, help="a features .npz with train/test splits (hierqdrant embed)")
    parser.add_argument("--labels", choices=("classes", "vehicle-animal"), default="classes")
    parser.add_argument("--metric", default="map@r", help="what tuning maximises (default map@r)")
    parser.add_argument("--max-queries", type=int, default=None, help="test queries (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args()

    data = FeatureSet.load(args.features)
    classes = list(data.classes)
    xd, yd = split(data, "train")
    xq, yq = split(data, "test")
    yd, names = relabel(yd, classes, args.labels)
    yq, _ = relabel(yq, classes, args.labels)
    if args.max_queries is not None and args.max_queries < yq.size:
        rows = np.sort(np.random.default_rng(0).choice(yq.size, args.max_queries, replace=False))
        xq, yq = xq[rows], yq[rows]
    started = time.perf_counter()
    out: dict[str, Any] = {
        "features": str(args.features),
        "labels": args.labels,
        "dims": int(xd.shape[1]),
        "database": int(yd.size),
        "queries": int(yq.size),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}",
    }
    models: dict[str, HierarchyModel] = {}
    for name, fit in (("tuned", FitSettings()), ("paper", FitSettings.paper())):
        t0 = time.perf_counter()
        result = tune(xd, yd, names, fit=fit, settings=TuneSettings(metric=args.metric))
        models[name] = result.model
        out[name] = {
            "query_classifier": result.best_classifier,
            "leaf_from": result.model.leaf_from,
            "pca": result.best_pca if result.best_pca is not None else "all",
            "dims": result.best_dims,
            "threshold": result.best_threshold,
            "alpha": result.best_alpha,
            "validation": {args.metric: result.best_score},
            "tune_seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"{name}: tuned in {out[name]['tune_seconds']} s: {out[name]}", file=sys.stderr)
    scores = {name: score(model, xq, yq, xd, yd) for name, model in models.items()}
    for name, s in scores.items():
        out[name]["test"] = {m: s["metrics"]["overlap"][m] for m in METRICS}
        out[name]["query_leaf_accuracy"] = s["query_leaf_accuracy"]
        out[name]["database_leaf_accuracy"] = s["database_leaf_accuracy"]
    out["cosine-raw"] = {"test": {m: scores["tuned"]["metrics"]["cosine-raw"][m] for m in METRICS}}
    out["paired"] = {}
    for other, per_query in (("paper", scores["paper"]["per_query"]["overlap"]),
                             ("cosine-raw", scores["tuned"]["per_query"]["cosine-raw"])):  # fmt: skip
        for m in METRICS:
            t = paired_test(scores["tuned"]["per_query"]["overlap"][m], per_query[m])
            out["paired"][f"tuned − {other} {m}"] = {
                "diff": t.diff, "ci95": [t.ci_low, t.ci_high], "p_value": t.p_value, "n": t.n,
            }  # fmt: skip
    out["seconds"] = round(time.perf_counter() - started, 1)

    print(f"\n{args.features.name} ({args.labels}; {out['dims']}-d; {out['queries']} test queries → "
          f"{out['database']} train images)\n")  # fmt: skip
    print("| setting | query leaf | stored | PCA (dims) | t | α | map@10 | map@r | p@1 | q. leaf acc. | db leaf acc. |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in ("tuned", "paper"):
        r = out[name]
        print(
            f"| {name} | {r['query_classifier']} | {r['leaf_from']} | {r['pca']} ({r['dims']}) | {r['threshold']} | "
            f"{r['alpha']:g} | {r['test']['map@10']:.4f} | {r['test']['map@r']:.4f} | {r['test']['p@1']:.4f} | "
            f"{r['query_leaf_accuracy']:.4f} | {r['database_leaf_accuracy']:.4f} |"
        )
    c = out["cosine-raw"]["test"]
    print(f"| cosine-raw | – | – | – | – | – | {c['map@10']:.4f} | {c['map@r']:.4f} | {c['p@1']:.4f} | – | – |")
    print("\n| paired test | diff | 95 % CI | p |")
    print("| --- | --- | --- | --- |")
    for key, t in out["paired"].items():
        print(f"| {key} | {t['diff']:+.4f} | [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}] | {t['p_value']:.2g} |")
    print(f"\n{out['seconds']} s on {out['machine']}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
