"""The paper's comparison (Venkataramanan et al. 2023, §4.1) on CIFAR-10 with the ResNet-56 checkpoint.

Usage (from the repository root)::

    python benchmarks/paper_comparison.py                       # ../shared, features cached in ../cache
    python benchmarks/paper_comparison.py --shared /data/shared --cache /tmp/hq-cache
    HIERQDRANT_SHARED=/data/shared python benchmarks/paper_comparison.py --json out.json
    python benchmarks/paper_comparison.py --embed-only          # just embed and cache the features

What it does:

1. Embeds the 50,000 train and 10,000 test JPEGs of ``datasets/cifar10`` once with
   ``load_backbone("cifar_resnet56", "models/resnet56-4bfd9763.th")`` (64-d penultimate features) and
   caches them in ``<cache>/cifar10_resnet56.npz`` (outside the repository).
2. Tunes t and α of ``overlap`` (α of ``ward`` and ``given``; hierarchy-only takes overlap's tree) with
   :func:`hierqdrant.evaluation.tuning.tune` on a validation split carved from the *training* images (20 %,
   stratified, seed 0) — never on the test queries — once maximising map@10 and once map@r
   (``--tune-metric``). Each protocol is tuned with its own validation protocol (leave-one-out within
   the validation images, or validation queries against the rest of train).
3. Runs every method (euclidean, cosine, hierarchy-only, overlap, ward, given) under both protocols:
   leave-one-out over the 10,000 test images, and test queries against the 50,000 train images.
   Metrics: map@{1,5,10,20,100,250}, map@r, p@1, mahp@250 and hdist@10 and severity scored by the
   WordNet tree ``hierarchies/nbdt/CIFAR10/cifar10_wordnet.parent-child.txt``; the leaf of a database
   image is the predicted one (Mahalanobis, the paper's default). Also the untuned defaults t = 0.3, α = 3.
4. Prints markdown tables (best of each column in bold), the paired tests of overlap against every
   baseline on map@10 and map@r, saves the map@k plots (``--plot-dir``), and with ``--engine-check N``
   runs N leave-one-out queries through Qdrant's embedded engine and the searcher to show that the
   engine gives the NumPy numbers on real data.

Everything runs on the CPU; embedding is the only heavy step (about 9 min for 60,000 images on 2 cores,
once); the comparison itself takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
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

CHECKPOINT = "models/resnet56-4bfd9763.th"
DATASET = "datasets/cifar10"
WORDNET = "hierarchies/nbdt/CIFAR10/cifar10_wordnet.parent-child.txt"
CLEAN = "cifar10_resnet56.npz"


# -------------------------------------------------------------------------------------- locations


def shared_dir(arg: str | None) -> Path:
    """``--shared``, else ``$HIERQDRANT_SHARED``, else ``../shared`` next to the repository."""
    path = Path(arg or os.environ.get("HIERQDRANT_SHARED") or REPO_ROOT.parent / "shared").expanduser()
    if not (path / DATASET).is_dir() or not (path / CHECKPOINT).is_file():
        sys.exit(f"error: {path} has no {DATASET}/ or {CHECKPOINT}: pass --shared PATH or set HIERQDRANT_SHARED")
    return path


def cache_dir(arg: str | None) -> Path:
    """``--cache``, else ``$HIERQDRANT_CACHE``, else ``../cache`` next to the repository (outside it)."""
    path = Path(arg or os.environ.get("HIERQDRANT_CACHE") or REPO_ROOT.parent / "cache").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{cores}-core {cpu} CPU, {gpu}, {system}"


# -------------------------------------------------------------------------------------- features


def embed_cifar(
    shared: Path,
    cache: Path,
    *,
    perturb: str | None = None,
    seed: int = 0,
    workers: int = 1,
    batch_size: int = 250,
) -> FeatureSet:
    """CIFAR-10 ResNet-56 features, embedded once and cached.

    Clean: train + test in ``cifar10_resnet56.npz`` (``splits`` says which). With ``perturb``
    (``blur``, ``saturation``, ``occlusion[:strength]``): the test images only, perturbed with
    :func:`hierqdrant.evaluation.perturb.perturbation_hook` (seed ``seed``, image index = position in the test
    list), in ``cifar10_resnet56_test_<kind>-<strength>_s<seed>.npz``.
    """
    from hierqdrant.vision import discover, extract_features, load_backbone

    if perturb is None:
        target = cache / CLEAN
    else:
        from hierqdrant.evaluation.perturb import parse_perturbation

        spec = parse_perturbation(perturb).spec.replace(":", "-")
        target = cache / f"cifar10_resnet56_test_{spec}_s{seed}.npz"
    if target.is_file():
        return FeatureSet.load(target)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    found = discover(shared / DATASET)
    items = found.items if perturb is None else found.split("test")
    hook = None
    if perturb is not None:
        from hierqdrant.evaluation.perturb import parse_perturbation, perturbation_hook

        hook = perturbation_hook(parse_perturbation(perturb), seed)
    backbone = load_backbone("cifar_resnet56", str(shared / CHECKPOINT))
    started = time.perf_counter()
    got = extract_features(
        [it.path for it in items],
        backbone,
        device="auto",
        batch_size=batch_size,
        num_workers=workers,
        image_hook=hook,
        progress=sys.stderr.isatty(),
    )
    if got.skipped:
        sys.exit(f"error: {len(got.skipped)} images could not be read, first: {got.skipped[0]}")
    kept = [items[i] for i in got.indices]
    data = FeatureSet(
        features=got.features,
        labels=np.asarray([it.label for it in kept]),
        classes=list(found.class_names),
        paths=[it.key for it in kept],
        splits=[it.split or "" for it in kept],
    )
    data.save(target)
    seconds = time.perf_counter() - started
    print(f"embedded {len(kept)} images in {seconds:.0f} s ({len(kept) / seconds:.0f} images/s) → {target}")
    return data


def load_splits(shared: Path, cache: Path) -> tuple[FeatureSet, FeatureSet]:
    data = embed_cifar(shared, cache)
    splits = np.asarray(data.splits)
    return data.subset(np.flatnonzero(splits == "train")), data.subset(np.flatnonzero(splits == "test"))


def wordnet(shared: Path, class_names: list[str]) -> Any:
    from hierqdrant.core.build import build_given

    return build_given(shared / WORDNET, class_names, len(class_names))


# ------------------------------------------------------------------------------------- reporting

LOWER = ("hdist@", "severity")


def markdown_table(result: Any, columns: list[str] | None = None) -> str:
    """methods × metrics, the best value of each column in bold (lowest for hdist and severity)."""
    cols = columns or list(next(iter(result.metrics.values())))
    best = {}
    for c in cols:
        vals = [r[c] for r in result.metrics.values() if np.isfinite(r.get(c, np.nan))]
        if vals:
            best[c] = round(min(vals) if c.startswith(LOWER) else max(vals), 4)
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, row in result.metrics.items():
        cells = []
        for c in cols:
            v = row.get(c, float("nan"))
            text = "–" if not np.isfinite(v) else f"{v:.4f}"
            cells.append(f"**{text}**" if np.isfinite(v) and round(v, 4) == best.get(c) else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def settings_line(result: Any) -> str:
    parts = []
    for name, s in result.settings.items():
        bits = [f"t={s['threshold']:g}" if s.get("threshold") is not None else None]
        bits.append(f"α={s['alpha']:g}" if s.get("alpha") is not None else None)
        bits.append(f"H={s['tree_height']}" if s.get("tree_height") is not None else None)
        shown = ", ".join(b for b in bits if b)
        parts.append(f"{name} ({shown})" if shown else name)
    return "; ".join(parts)


def paired_lines(result: Any, metrics: tuple[str, ...] = ("map@10", "map@r")) -> list[str]:
    from hierqdrant.evaluation.scoring import paired

    out = []
    for other in result.metrics:
        if other == "overlap":
            continue
        for metric, r in paired(result, "overlap", other, metrics).items():
            out.append(
                f"overlap − {other} on {metric}: {r.diff:+.4f} (95% CI [{r.ci_low:+.4f}, {r.ci_high:+.4f}], "
                f"p = {r.p_value:.3g}, n = {r.n})"
            )
    return out


def tuning_lines(tuned: dict[str, Any]) -> list[str]:
    out = []
    for builder, r in tuned.items():
        t = f"t={r.best_threshold:g}, " if r.best_threshold is not None else ""
        out.append(
            f"{builder}: {t}α={r.best_alpha:g} → {r.metric} {r.best_score:.4f} on {r.queries} validation queries "
            f"({r.protocol}; cosine {r.cosine_score:.4f}; fit {r.fit_size} / validation {r.val_size} train images)"
        )
    return out


# ------------------------------------------------------------------------------------------- main

THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3)
ALPHAS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
KS = (1, 5, 10, 20, 100, 250)


def fit_base(train: FeatureSet) -> Any:
    """PCA and class Gaussians on the train images (t = 0.3, α = 3: the untuned defaults)."""
    from hierqdrant.core.model import HierarchyModel

    assert train.labels is not None
    return HierarchyModel.fit(train.features, train.labels, class_names=train.classes, threshold=0.3, alpha=3.0)


def wordnet_scoring(shared: Path, class_names: list[str]) -> tuple[Any, Any]:
    """The WordNet tree of the classes, and the scoring of mahp@250, hdist@10 and severity by it."""
    from hierqdrant.evaluation.scoring import Scoring

    tree = wordnet(shared, class_names)
    return tree, Scoring.from_hierarchy(tree, f"WordNet tree {Path(WORDNET).name} (height {tree.tree_height})")


def protocol_database(protocol: str, base: Any, z_train: np.ndarray, train: FeatureSet, test: FeatureSet) -> Any:
    """The database of a protocol: the test images (``loo``) or the train images (``split``)."""
    from hierqdrant.evaluation.items import Items

    assert train.labels is not None and test.labels is not None
    assert train.paths is not None and test.paths is not None
    if protocol == "loo":
        return Items(base.transform(test.features), test.labels, test.paths)
    return Items(z_train, train.labels, train.paths)


def tuned_methods(
    base: Any, z_train: np.ndarray, train: FeatureSet, tree: Any, protocol: str, tune_metric: str, seed: int
) -> tuple[list[Any], dict[str, Any]]:
    """Every method, t and α tuned on a validation split of the train images under ``protocol``."""
    from hierqdrant.evaluation.methods import METHODS
    from hierqdrant.evaluation.tuning import TuneSettings, prepare_methods

    assert train.labels is not None
    return prepare_methods(
        list(METHODS),
        base,
        z_train,
        train.labels,
        taxonomy=tree,
        tuning=TuneSettings(metric=tune_metric, thresholds=THRESHOLDS, alphas=ALPHAS, seed=seed),
        protocol=protocol,  # type: ignore[arg-type]
    )


def score(queries: Any, database: Any, methods: list[Any], scoring: Any) -> Any:
    """Rank and score with NumPy: map@KS, map@r, p@1, mahp@250, hdist@10 and severity."""
    from hierqdrant.evaluation.ranking import evaluate_arrays

    return evaluate_arrays(
        queries, database, methods, num_classes=10, ks=KS, scoring=scoring, mahp_ks=(250,), hdist_ks=(10,)
    )


def compare(
    shared: Path,
    train: FeatureSet,
    test: FeatureSet,
    *,
    queries: FeatureSet | None = None,
    tune_metric: str = "map@10",
    seed: int = 0,
    protocols: tuple[str, ...] = ("loo", "split"),
    default_settings: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Tune and evaluate every method under each protocol. ``queries`` replaces the test images as
    queries (e.g. perturbed copies with the same paths); the database stays clean."""
    from hierqdrant.evaluation.items import Items
    from hierqdrant.evaluation.methods import build_methods

    t0 = time.perf_counter()
    base = fit_base(train)
    took = time.perf_counter() - t0
    log(f"fitted PCA ({base.dims} dims) and class Gaussians on {len(train)} train images ({took:.1f} s)")
    z_train = base.transform(train.features)
    tree, scoring = wordnet_scoring(shared, base.class_names)
    q = queries if queries is not None else test
    assert q.labels is not None and q.paths is not None and train.labels is not None
    q_items = Items(base.transform(q.features), q.labels, q.paths)
    out: dict[str, Any] = {"pca_dims": base.dims, "scored_by": scoring.name, "protocols": {}}
    for protocol in protocols:
        database = protocol_database(protocol, base, z_train, train, test)
        t1 = time.perf_counter()
        methods, tuned = tuned_methods(base, z_train, train, tree, protocol, tune_metric, seed)
        tune_s = time.perf_counter() - t1
        for line in tuning_lines(tuned):
            log(f"[{protocol}] tuned {line}")
        t2 = time.perf_counter()
        result = score(q_items, database, methods, scoring)
        eval_s = time.perf_counter() - t2
        log(
            f"[{protocol}] {result.protocol}: {result.queries} queries × {result.database} items, "
            f"tuning {tune_s:.0f} s, ranking + metrics {eval_s:.0f} s"
        )
        entry: dict[str, Any] = {
            "result": result,
            "tuned": tuned,
            "tune_seconds": tune_s,
            "eval_seconds": eval_s,
        }
        if default_settings:
            defaults = build_methods(
                ["cosine", "overlap", "ward", "given"],
                base,
                z_train,
                train.labels,
                threshold=0.3,
                alpha=3.0,
                taxonomy=tree,
            )
            entry["defaults"] = score(q_items, database, defaults, scoring)
        out["protocols"][protocol] = entry
    out["base"] = base
    return out


def engine_check(shared: Path, test: FeatureSet, train: FeatureSet, n_queries: int, seed: int) -> dict[str, Any]:
    """The same leave-one-out ranking through Qdrant's embedded engine for ``n_queries`` test images:
    ingest the 10,000 test images into a temporary collection (model fitted on train), search with
    HierarchicalSearcher (exact strategy, exhaustive), and compare with NumPy on the same queries."""
    import tempfile

    from hierqdrant.core.model import HierarchyModel
    from hierqdrant.evaluation.collection import evaluate_collection
    from hierqdrant.evaluation.items import Items
    from hierqdrant.evaluation.methods import build_methods
    from hierqdrant.evaluation.ranking import evaluate_arrays
    from hierqdrant.evaluation.scoring import Scoring
    from hierqdrant.store.collection import create_collection, point_id, upsert_points
    from hierqdrant.store.engines import EdgeEngine

    assert train.labels is not None and test.labels is not None and test.paths is not None
    model = HierarchyModel.fit(train.features, train.labels, class_names=train.classes, threshold=0.02, alpha=1.0)
    tree = wordnet(shared, model.class_names)
    scoring = Scoring.from_hierarchy(tree, "WordNet")
    with tempfile.TemporaryDirectory() as tmp:
        engine = EdgeEngine(Path(tmp))
        create_collection(engine, "cifar10-test", model)
        t0 = time.perf_counter()
        upsert_points(engine, "cifar10-test", model, test.features, test.paths, labels=test.labels)
        engine.optimize("cifar10-test")
        upsert_s = time.perf_counter() - t0
        z = model.transform(test.features)
        db = Items(z, test.labels, [point_id("cifar10-test", p) for p in test.paths])
        pick = np.sort(np.random.default_rng(seed).choice(len(db), size=n_queries, replace=False))
        queries = db.subset(pick)
        methods = build_methods(["cosine", "hierarchy-only", "overlap"], model, None, None)
        kw: dict[str, Any] = {"ks": KS, "scoring": scoring, "mahp_ks": (250,), "hdist_ks": (10,)}
        t1 = time.perf_counter()
        via_engine = evaluate_collection(engine, "cifar10-test", queries, methods, database=None, **kw)
        engine_s = time.perf_counter() - t1
        engine.close()
    via_numpy = evaluate_arrays(queries, db, methods, num_classes=10, **kw)
    diff = max(
        abs(via_engine.metrics[m][k] - v)
        for m, row in via_numpy.metrics.items()
        for k, v in row.items()
        if np.isfinite(v)
    )
    return {
        "queries": n_queries,
        "database": len(db),
        "upsert_seconds": upsert_s,
        "engine_seconds": engine_s,
        "max_abs_difference": diff,
        "engine": via_engine,
        "numpy": via_numpy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", help="the shared data folder (default $HIERQDRANT_SHARED or ../shared)")
    parser.add_argument("--cache", help="where the features are cached (default $HIERQDRANT_CACHE or ../cache)")
    parser.add_argument("--embed-only", action="store_true", help="embed and cache the features, then stop")
    parser.add_argument("--perturb", action="append", default=[], help="with --embed-only: also these")
    parser.add_argument(
        "--tune-metric", action="append", help="metric(s) t and α are tuned on (default: map@10, then map@r)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine-check", type=int, default=0, help="also run N queries through the engine")
    parser.add_argument("--plot-dir", help="save the map@k plots here")
    parser.add_argument("--json", help="write all numbers to this JSON file")
    args = parser.parse_args()
    shared, cache = shared_dir(args.shared), cache_dir(args.cache)
    if args.embed_only:
        embed_cifar(shared, cache)
        for spec in args.perturb:
            embed_cifar(shared, cache, perturb=spec, seed=args.seed)
        return
    print(f"machine: {machine()}")
    train, test = load_splits(shared, cache)
    metrics = args.tune_metric or ["map@10", "map@r"]
    dump: dict[str, Any] = {"machine": machine()}
    names = {"loo": "leave-one-out over the 10,000 test images", "split": "10,000 test queries → 50,000 train images"}
    for i, metric in enumerate(metrics):
        report = compare(shared, train, test, tune_metric=metric, seed=args.seed, default_settings=i == 0)
        dump.update(pca_dims=report["pca_dims"], scored_by=report["scored_by"])
        for protocol, entry in report["protocols"].items():
            result = entry["result"]
            print(f"\n### {names[protocol]} (t and α tuned on {metric})\n")
            print(markdown_table(result))
            print(f"\nsettings: {settings_line(result)}")
            for line in tuning_lines(entry["tuned"]):
                print(f"- tuned {line}")
            for line in paired_lines(result):
                print(f"- {line}")
            record = {
                "tuned": result.to_dict(),
                "tuning": {b: r.to_dict() for b, r in entry["tuned"].items()},
                "tune_seconds": entry["tune_seconds"],
                "eval_seconds": entry["eval_seconds"],
            }
            if "defaults" in entry:
                print("\nwith the default t = 0.3, α = 3 (not tuned):\n")
                print(markdown_table(entry["defaults"]))
                print(f"\nsettings: {settings_line(entry['defaults'])}")
                dump.setdefault("defaults", {})[protocol] = entry["defaults"].to_dict()
            dump.setdefault(f"tuned_on_{metric}", {})[protocol] = record
            if args.plot_dir:
                from hierqdrant.evaluation.plots import plot_map_at_k

                curves = {m: {k: row[f"map@{k}"] for k in KS} for m, row in result.metrics.items()}
                tag = metric.replace("@", "")
                path = Path(args.plot_dir) / f"cifar10_map_at_k_{protocol}_tuned_{tag}.png"
                short = {"loo": "leave-one-out, test", "split": "test → train"}[protocol]
                title = f"CIFAR-10 ResNet-56, {short}, t and α tuned on {metric}"
                plot_map_at_k(curves, path, title=title, highlight=["overlap"])
                print(f"\nplot: {path}")
    if args.engine_check:
        check = engine_check(shared, test, train, args.engine_check, args.seed)
        print(
            f"\nengine check: {check['queries']} leave-one-out queries over {check['database']} test images through "
            f"the embedded engine (HierarchicalSearcher, exact strategy, exhaustive search) vs NumPy: largest "
            f"metric difference {check['max_abs_difference']:.2e}; upsert {check['upsert_seconds']:.1f} s, "
            f"search + metrics {check['engine_seconds']:.1f} s"
        )
        print(markdown_table(check["engine"]))
        dump["engine_check"] = {k: v for k, v in check.items() if k not in ("engine", "numpy")}
        dump["engine_check"]["engine"] = check["engine"].to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=1, default=float))


if __name__ == "__main__":
    main()
