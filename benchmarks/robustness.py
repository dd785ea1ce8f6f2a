"""Robustness (the paper §3.3, §4.2): the CIFAR-10 comparison with perturbed query images.

Usage (from the repository root)::

    python benchmarks/robustness.py                          # ../shared, features cached in ../cache
    python benchmarks/robustness.py --shared /data/shared --cache /tmp/hq-cache --seed 0
    python benchmarks/robustness.py --perturb blur:2 --perturb occlusion

The 10,000 test images are embedded again with each perturbation applied to them
(:mod:`hierqdrant.evaluation.perturb`, fixed seed; at 32 px: a 3×3 Gaussian blur kernel (11×11 at 224 px),
a saturation factor drawn from [0, 2], a 10×10 black square (70×70 at 224 px)) and cached. They are the
*queries*; the database stays clean: leave-one-out over the clean test images (each perturbed query's
own clean image excluded by id) and the 50,000 clean train images. The model (PCA, Gaussians, trees)
and t, α are those of ``paper_comparison.py``: fitted and tuned on the clean training images only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
for p in (REPO_ROOT, Path(__file__).resolve().parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402
from paper_comparison import (  # noqa: E402
    cache_dir,
    embed_cifar,
    fit_base,
    load_splits,
    machine,
    markdown_table,
    paired_lines,
    protocol_database,
    score,
    settings_line,
    shared_dir,
    tuned_methods,
    tuning_lines,
    wordnet_scoring,
)

from hierqdrant.evaluation.items import Items  # noqa: E402

SUMMARY = ("map@10", "map@r", "p@1", "mahp@250", "severity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", help="the shared data folder (default $HIERQDRANT_SHARED or ../shared)")
    parser.add_argument("--cache", help="where the features are cached (default $HIERQDRANT_CACHE or ../cache)")
    parser.add_argument("--perturb", action="append", help="kind[:strength] (default: blur, saturation, occlusion)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune-metric", default="map@10")
    parser.add_argument("--json", help="write all numbers to this JSON file")
    args = parser.parse_args()
    specs = args.perturb or ["blur", "saturation", "occlusion"]
    shared, cache = shared_dir(args.shared), cache_dir(args.cache)
    print(f"machine: {machine()}")
    train, test = load_splits(shared, cache)
    assert train.labels is not None and test.labels is not None and test.paths is not None
    assert train.paths is not None
    query_sets = {"clean": test}
    for spec in specs:
        perturbed = embed_cifar(shared, cache, perturb=spec, seed=args.seed)
        if perturbed.paths != test.paths:
            sys.exit(f"error: the {spec} features are not in the order of the clean test features")
        query_sets[spec] = perturbed

    base = fit_base(train)
    z_train = base.transform(train.features)
    tree, scoring = wordnet_scoring(shared, base.class_names)
    dump: dict[str, Any] = {"machine": machine(), "scored_by": scoring.name, "seed": args.seed}
    names = {"loo": "leave-one-out over the 10,000 clean test images", "split": "→ 50,000 clean train images"}
    summary: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for protocol in ("loo", "split"):
        database = protocol_database(protocol, base, z_train, train, test)
        methods, tuned = tuned_methods(base, z_train, train, tree, protocol, args.tune_metric, args.seed)
        print(f"\n## queries perturbed, {names[protocol]}\n")
        for line in tuning_lines(tuned):
            print(f"- tuned (clean train validation) {line}")
        summary[protocol] = {}
        dump[protocol] = {"tuning": {b: r.to_dict() for b, r in tuned.items()}}
        for spec, qset in query_sets.items():
            assert qset.labels is not None and qset.paths is not None
            queries = Items(base.transform(qset.features), qset.labels, qset.paths)
            t0 = time.perf_counter()
            result = score(queries, database, methods, scoring)
            leaf_acc = float(np.mean(base.assign(queries.z, projected=True) == queries.labels))
            print(f"\n### queries: {spec} (Mahalanobis leaf accuracy of the queries {leaf_acc:.4f}; "
                  f"{time.perf_counter() - t0:.0f} s)\n")  # fmt: skip
            print(markdown_table(result))
            if spec == "clean":
                print(f"\nsettings: {settings_line(result)}")
            for line in paired_lines(result, ("map@10", "map@r")):
                if "− cosine" in line or "− hierarchy-only" in line:
                    print(f"- {line}")
            summary[protocol][spec] = {m: {k: row[k] for k in SUMMARY} for m, row in result.metrics.items()}
            dump[protocol][spec] = {**result.to_dict(), "query_leaf_accuracy": leaf_acc}
        print(f"\n### summary ({names[protocol]}): map@10 / map@r per method and query perturbation\n")
        specs_all = list(query_sets)
        print("| method | " + " | ".join(specs_all) + " |")
        print("|---|" + "---:|" * len(specs_all))
        for m in summary[protocol]["clean"]:
            cells = [
                f"{summary[protocol][s][m]['map@10']:.4f} / {summary[protocol][s][m]['map@r']:.4f}" for s in specs_all
            ]
            print(f"| {m} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=1, default=float))


if __name__ == "__main__":
    main()
