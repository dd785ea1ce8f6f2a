"""One evaluation from start to end, as ``hierqdrant eval`` runs it: :func:`run_eval` on an :class:`EvalPlan`.

The database is a collection (ranked through the engine and the searcher) or a features .npz / a
labelled image folder (ranked with NumPy). The steps: check everything that can be checked before
any work; read the database and the training items (a collection: its labelled non-test points, as
ingest fitted them; a file or folder: ``--fit``, else its ``train`` split, else itself) and fit the
model on them; read and embed the queries (a seeded sample with ``max_queries``); build the methods,
tuned on the training items when asked; rank and score; the paired test of overlap against cosine;
the map@k plot. :meth:`EvalReport.to_dict` is the ``--json`` output.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.settings import FitSettings, LeafFrom
from hierqdrant.evaluation.collection import evaluate_collection, read_collection_items, training_rows
from hierqdrant.evaluation.items import Items, stored_leaf_mode
from hierqdrant.evaluation.methods import METHODS, Method, check_method_names
from hierqdrant.evaluation.perturb import parse_perturbation
from hierqdrant.evaluation.plots import check_plot_path
from hierqdrant.evaluation.ranking import evaluate_arrays
from hierqdrant.evaluation.scoring import (
    DEFAULT_KS,
    EvalResult,
    choose_scoring,
    paired,
    split_metric_values,
)
from hierqdrant.evaluation.sources import (
    EmbedOptions,
    Source,
    load_images,
    load_npz,
    load_queries,
    relabel,
    resolve_source,
)
from hierqdrant.evaluation.tuning import (
    DEFAULT_ALPHAS,
    DEFAULT_THRESHOLDS,
    TuneResult,
    TuneSettings,
    check_grids,
    check_tune_metric,
    prepare_methods,
)

if TYPE_CHECKING:
    from hierqdrant.evaluation.significance import PairedResult
    from hierqdrant.store.engines import Engine

__all__ = ["EvalPlan", "EvalReport", "Hooks", "check_plan", "paired_dict", "run_eval"]

#: An evaluation's progress: ``progress(total, label)`` is a context in which the callable it yields
#: (or None) is told how many queries were done.
ProgressFactory = Callable[[int, str], AbstractContextManager[Callable[[int], None] | None]]


@contextmanager
def _no_progress(_total: int, _label: str) -> Iterator[None]:
    yield None


def _no_log(_message: str) -> None:
    return None


@dataclass
class Hooks:
    """How a long run reports: one-line messages (``log``) and progress bars (``progress``)."""

    log: Callable[[str], None] = _no_log
    progress: ProgressFactory = _no_progress


@dataclass
class EvalPlan:
    """What to evaluate: the database (a collection name, a features .npz or an image folder), the
    queries (None: leave-one-out over the database), the methods and their settings, the metrics.

    ``methods=None`` is every method, ``given`` only with a ``taxonomy`` (named explicitly without
    one, it is an error). ``threshold`` / ``alpha``: for every method, overridden per
    method by ``thresholds`` / ``alphas``; ``pca``: of the model fitted on a file or folder database.
    ``exact=False`` searches a collection through its HNSW index.
    """

    db: str
    queries: Path | None = None
    db_split: str | None = None
    query_split: str | None = None
    fit: Path | None = None
    fit_split: str | None = None
    methods: Sequence[str] | None = None
    taxonomy: Path | None = None
    threshold: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    alpha: float | None = None
    alphas: dict[str, float] = field(default_factory=dict)
    ks: Sequence[int] = DEFAULT_KS
    map_r: bool = True
    mahp_ks: Sequence[int] = (250,)
    hdist_ks: Sequence[int] = (10,)
    score_taxonomy: Path | None = None
    leaf_from: LeafFrom | None = None
    tuning: TuneSettings | None = None
    perturb: str | None = None
    perturb_db: str | None = None
    seed: int = 0
    max_queries: int | None = None
    paired: Sequence[str] = ("map@10", "map@r")
    embed: EmbedOptions = field(default_factory=EmbedOptions)
    strategy: str = "exact"
    exact: bool = True
    pca: int | float | None = 0.95
    plot: Path | None = None


@dataclass
class EvalReport:
    """The scores, the tuning per builder, the paired tests, and where the items came from."""

    result: EvalResult
    tuned: dict[str, TuneResult]
    tests: dict[str, PairedResult]
    sources: dict[str, Any]  # fit, queries_from
    leaf_from: str
    perturb: dict[str, Any]
    seconds_total: float
    plot: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` output of ``hierqdrant eval``."""
        out = self.result.to_dict()
        out.update(self.sources)
        out["leaf_from"] = self.leaf_from
        out["paired"] = paired_dict(self.tests, "overlap", "cosine")
        out["tuning"] = {name: r.to_dict() for name, r in self.tuned.items()}
        out["perturb"] = self.perturb
        out["seconds_total"] = self.seconds_total
        if self.plot is not None:
            out["plot"] = str(self.plot)
        return out


def paired_dict(tests: dict[str, PairedResult], a: str, b: str) -> dict[str, Any]:
    return {
        metric: {
            "a": a,
            "b": b,
            "mean_a": r.mean_a,
            "mean_b": r.mean_b,
            "diff": r.diff,
            "ci95": [r.ci_low, r.ci_high],
            "p_value": r.p_value,
            "n": r.n,
        }
        for metric, r in tests.items()
    }


def check_plan(plan: EvalPlan) -> tuple[list[str], str, Path | None]:
    """Everything that can be checked before any work: the method names (with ``given`` dropped from
    the default list without a taxonomy), the source kind of the database and its path."""
    names = check_method_names(METHODS if plan.methods is None else plan.methods)
    if "given" in names and plan.taxonomy is None:
        if plan.methods is not None:
            raise InputError("method 'given' needs a taxonomy", "pass --taxonomy FILE or leave 'given' out")
        names.remove("given")  # the default list: evaluate 'given' only when a taxonomy is there
    if plan.taxonomy is not None and not plan.taxonomy.is_file():
        raise NotFoundError(f"taxonomy file {plan.taxonomy} does not exist", "pass an existing file with --taxonomy")
    if plan.score_taxonomy is not None and not plan.score_taxonomy.is_file():
        raise NotFoundError(f"--score-taxonomy {plan.score_taxonomy} does not exist", "pass an existing taxonomy file")
    if not plan.ks:
        raise InputError("--k is empty", "e.g. --k 1,5,10")
    split_metric_values(plan.paired)  # validates the names
    if plan.tuning is not None:
        # mahp needs a scoring hierarchy, which only --score-taxonomy gives before tuning.
        check_tune_metric(plan.tuning.metric, True if plan.score_taxonomy is not None else None)  # type: ignore[arg-type]
        check_grids(plan.tuning.thresholds or DEFAULT_THRESHOLDS, plan.tuning.alphas or DEFAULT_ALPHAS)
    for spec in (plan.perturb, plan.perturb_db):
        if spec is not None:
            parse_perturbation(spec)
    if plan.max_queries is not None and plan.max_queries < 1:
        raise InputError(f"--max-queries {plan.max_queries} must be ≥ 1")
    if plan.seed < 0:
        raise InputError(f"--seed {plan.seed} must be ≥ 0")
    check_plot_path(plan.plot)
    queries = plan.queries
    if queries is not None and not queries.exists():
        raise NotFoundError(f"--queries {queries} does not exist", "pass a labelled image folder or a features .npz")
    if queries is not None and queries.is_file() and queries.suffix.lower() != ".npz":
        raise InputError(f"--queries {queries} is a file but not a features .npz", "pass an .npz or a folder")
    if plan.perturb is not None and queries is not None and not queries.is_dir():
        raise InputError("--perturb changes query images, but --queries is a features file", "pass --queries FOLDER")
    db_kind, db_path = resolve_source(plan.db, "--db")
    if db_kind == "collection" and (plan.fit is not None or plan.fit_split is not None):
        raise InputError(
            "--fit / --fit-split apply to a file or folder database",
            "a collection's model was fitted at ingest (re-fit it with `hierqdrant tune --collection`)",
        )
    if db_kind == "collection" and plan.embed.model is not None:
        raise InputError(
            "--model would embed the queries differently from the collection",
            "leave --model out: queries are embedded with the collection's extractor (--weights if it moved)",
        )
    if plan.perturb_db is not None and db_kind != "folder":
        raise InputError("--perturb-db changes database images, but --db is not an image folder", "pass --db FOLDER")
    if plan.perturb is not None and plan.queries is None and db_kind != "folder":
        raise InputError(
            "--perturb without --queries perturbs the database's own images, but --db is not an image folder",
            "pass --queries FOLDER (or --db FOLDER)",
        )
    if plan.tuning is not None and not 0.0 < plan.tuning.val_share < 1.0:
        raise InputError(f"--val-share {plan.tuning.val_share} must be between 0 and 1", "e.g. --val-share 0.2")
    return names, db_kind, db_path


def run_eval(plan: EvalPlan, connect: Callable[[], Engine] | None = None, hooks: Hooks | None = None) -> EvalReport:
    """Check ``plan``, then run it (``connect`` opens the store of a collection database)."""
    started = time.perf_counter()
    hooks = hooks or Hooks()
    names, db_kind, db_path = check_plan(plan)
    rng = np.random.default_rng(plan.seed)

    def sample(n: int) -> np.ndarray:
        if plan.max_queries is None or n <= plan.max_queries:
            return np.arange(n)
        return np.sort(rng.choice(n, size=plan.max_queries, replace=False))

    sources: dict[str, Any] = {}
    if db_kind == "collection":
        if connect is None:
            raise InputError(f"--db {plan.db} names a collection, but there is no store to read it from")
        engine = connect()
        try:
            result, tuned = _eval_collection(plan, names, engine, sample, sources, hooks)
        finally:
            engine.close()
    else:
        assert db_path is not None
        result, tuned = _eval_files(plan, names, db_kind, db_path, sample, sources, hooks)

    tests = (
        paired(result, "overlap", "cosine", plan.paired, seed=plan.seed)
        if {"overlap", "cosine"} <= set(result.metrics)
        else {}
    )
    seconds_total = round(time.perf_counter() - started, 2)
    if plan.plot is not None:
        from hierqdrant.evaluation.plots import plot_map_at_k

        curves = {
            name: {kk: row[f"map@{kk}"] for kk in plan.ks if math.isfinite(row.get(f"map@{kk}", float("nan")))}
            for name, row in result.metrics.items()
        }
        plot_map_at_k(curves, plan.plot, title=f"map@k — {result.protocol}", highlight=["overlap"])
    return EvalReport(
        result=result,
        tuned=tuned,
        tests=tests,
        sources=sources,
        leaf_from=plan.leaf_from or result.info.get("leaves", "predicted"),
        perturb={"queries": plan.perturb, "database": plan.perturb_db, "seed": plan.seed},
        seconds_total=seconds_total,
        plot=plan.plot,
    )


def _prepare(
    plan: EvalPlan,
    names: list[str],
    base: HierarchyModel,
    fit_z: np.ndarray,
    fit_y: np.ndarray,
    loo: bool,
    leaf_from: str,
    hooks: Hooks,
) -> tuple[list[Method], dict[str, TuneResult]]:
    return prepare_methods(
        names,
        base,
        fit_z,
        fit_y,
        threshold=plan.threshold,
        thresholds=plan.thresholds,
        alpha=plan.alpha,
        alphas=plan.alphas,
        taxonomy=plan.taxonomy,
        tuning=plan.tuning,
        protocol="loo" if loo else "split",
        leaf_from=leaf_from,
        log=hooks.log,
    )


def _eval_collection(
    plan: EvalPlan,
    names: list[str],
    engine: Engine,
    sample: Callable[[int], np.ndarray],
    sources: dict[str, Any],
    hooks: Hooks,
) -> tuple[EvalResult, dict[str, TuneResult]]:
    """Rank a collection through the engine; the model is the collection's, fitted at ingest."""
    from hierqdrant.store.collection import point_id

    db, db_split = plan.db, plan.db_split
    base, info, database, db_splits = read_collection_items(engine, db, split=db_split)
    if len(database) == 0:
        raise InputError(
            f"collection {db!r} has no points" + (f" of split {db_split!r}" if db_split else ""),
            "ingest first or pick another --db-split",
        )
    # Training points: labelled and not test, as ingest fitted them.
    _, _, everything, all_splits = (
        read_collection_items(engine, db) if db_split is not None else (base, info, database, db_splits)
    )
    train_rows = training_rows(everything, all_splits)
    fit_z, fit_y = everything.z[train_rows], everything.labels[train_rows]
    sources["fit"] = f"collection {db!r}: {train_rows.size} labelled non-test points"
    q_items: Items
    if plan.queries is not None:
        q_src = load_queries(plan.queries, plan.query_split, plan.embed, base.extractor, plan.perturb, plan.seed)
        q_ids = [point_id(db, key) for key in q_src.keys]
        q_items = Items(base.transform(q_src.features), relabel(q_src, base.class_names), q_ids)
        sources["queries_from"] = q_src.name
    elif plan.query_split is not None and plan.query_split != db_split:
        _, _, q_items, _ = read_collection_items(engine, db, split=plan.query_split)
        sources["queries_from"] = f"collection {db!r} [{plan.query_split}]"
    else:
        q_items = database
        sources["queries_from"] = f"collection {db!r}" + (f" [{db_split}]" if db_split else "")
    q_items = q_items.subset(sample(len(q_items)))
    loo = plan.queries is None and plan.query_split in (None, db_split)
    built, tuned = _prepare(
        plan, names, base, fit_z, fit_y, loo, plan.leaf_from or stored_leaf_mode(base, database), hooks
    )
    scoring = choose_scoring(plan.score_taxonomy, built, base, "the collection's tree")
    with hooks.progress(len(q_items) * len(built), "searching") as advance:
        result = evaluate_collection(
            engine,
            db,
            q_items if q_items is not database else None,
            built,
            database=database,
            db_split=db_split,
            ks=plan.ks,
            map_r=plan.map_r,
            scoring=scoring,
            mahp_ks=plan.mahp_ks,
            hdist_ks=plan.hdist_ks,
            leaf_from=plan.leaf_from,
            strategy=plan.strategy,
            exact=plan.exact,
            progress=advance,
        )
    return result, tuned


def _fit_source(plan: EvalPlan, db_kind: str, db_path: Path, db_all: Source, db_src: Source) -> Source:
    """The training items of a file or folder database: ``--fit`` (its train split if any), else
    ``--fit-split`` or the ``train`` split of the database source, else the database itself. A
    perturbed image database is fitted on its clean images."""
    opts, seed = plan.embed, plan.seed
    if plan.fit is not None:
        fit_kind, fit_path = resolve_source(str(plan.fit), "--fit")
        assert fit_path is not None
        fit_all = (
            load_npz(fit_path) if fit_kind == "npz" else load_images(fit_path, opts, db_all.extractor, None, seed, None)
        )
        return fit_all.select(plan.fit_split if plan.fit_split else ("train" if fit_all.has_split("train") else None))
    if plan.fit_split is not None:
        return db_all.select(plan.fit_split)
    if db_all.has_split("train"):
        if db_kind == "folder" and plan.perturb_db is not None:
            return load_images(db_path, opts, None, None, seed, "train")  # fit on clean images
        return db_all.select("train")
    if db_kind == "folder" and plan.perturb_db is not None:
        return load_images(db_path, opts, None, None, seed, plan.db_split)  # fit on clean images
    return db_src


def _eval_files(
    plan: EvalPlan,
    names: list[str],
    db_kind: str,
    db_path: Path,
    sample: Callable[[int], np.ndarray],
    sources: dict[str, Any],
    hooks: Hooks,
) -> tuple[EvalResult, dict[str, TuneResult]]:
    """Rank a features file or an image folder with NumPy, on a model fitted here."""
    opts, seed = plan.embed, plan.seed
    if db_kind == "npz":
        db_all = load_npz(db_path)
    else:
        db_all = load_images(db_path, opts, None, plan.perturb_db, seed + 1, None)
    db_src = db_all.select(plan.db_split)
    fit_src = _fit_source(plan, db_kind, db_path, db_all, db_src)
    sources["fit"] = f"{fit_src.name}: {len(fit_src)} labelled items"
    class_names = fit_src.class_names
    hooks.log(f"fitting PCA and class Gaussians on {sources['fit']}")
    settings = FitSettings(
        threshold=plan.thresholds.get("overlap", plan.threshold if plan.threshold is not None else 0.3),
        alpha=plan.alpha if plan.alpha is not None else 3.0,
        pca=plan.pca,
    )
    base = settings.fit_model(fit_src.features, fit_src.labels, class_names=class_names)
    fit_z = base.transform(fit_src.features)
    database = Items(base.transform(db_src.features), relabel(db_src, class_names), db_src.keys)
    if plan.queries is not None:
        q_src = load_queries(plan.queries, plan.query_split, opts, db_all.extractor, plan.perturb, seed)
    elif plan.perturb is not None:
        q_src = load_images(db_path, opts, None, plan.perturb, seed, plan.query_split or plan.db_split)
    else:
        q_src = db_all.select(plan.query_split) if plan.query_split is not None else db_src
    sources["queries_from"] = q_src.name
    q_items = Items(base.transform(q_src.features), relabel(q_src, class_names), q_src.keys)
    q_items = q_items.subset(sample(len(q_items)))
    loo = plan.queries is None and plan.query_split in (None, plan.db_split)
    leaf_from = plan.leaf_from or "predicted"
    built, tuned = _prepare(plan, names, base, fit_z, fit_src.labels, loo, leaf_from, hooks)
    scoring = choose_scoring(plan.score_taxonomy, built, base, "the learned tree")
    with hooks.progress(len(q_items), "ranking") as advance:
        result = evaluate_arrays(
            q_items,
            database,
            built,
            num_classes=base.num_classes,
            ks=plan.ks,
            map_r=plan.map_r,
            scoring=scoring,
            mahp_ks=plan.mahp_ks,
            hdist_ks=plan.hdist_ks,
            leaf_from=leaf_from,
            progress=advance,
        )
    return result, tuned


