"""An evaluation on a features .npz or a labelled image folder, ranked with NumPy (:func:`eval_files`).

The training items are ``--fit`` (its train split), else ``--fit-split`` or the source's ``train``
split, else the database itself. When no query is a training item the model is fitted once on them;
otherwise (and with ``--protocol cross-fit``) the queries are cross-fitted
(:mod:`hierqdrant.evaluation.protocols`), unless ``--protocol loo-leaky`` asks for the optimistic
single fit. ``cosine-raw`` and ``euclidean-raw`` rank the raw features and need no model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hierqdrant.core import diagnostics
from hierqdrant.core.gaussianity import model_gaussianity
from hierqdrant.core.model import HierarchyModel
from hierqdrant.evaluation.items import Items, database_leaves
from hierqdrant.evaluation.methods import HIERARCHICAL, RAW_METHODS, Method
from hierqdrant.evaluation.plan import EvalContext, EvalPlan, fit_methods
from hierqdrant.evaluation.protocols import (
    assign_folds,
    check_fold_classes,
    finish_cross_fitting,
    fit_index,
    fold_record,
    fold_splits,
    query_folds,
    with_folds,
)
from hierqdrant.evaluation.ranking import evaluate_arrays
from hierqdrant.evaluation.scoring import EvalResult, Scoring, choose_scoring
from hierqdrant.evaluation.sources import Source, load_images, load_npz, load_queries, relabel, resolve_source
from hierqdrant.evaluation.tuning import TuneResult

__all__ = ["eval_files", "fit_source"]


def fit_source(plan: EvalPlan, db_kind: str, db_path: Path, db_all: Source, db_src: Source) -> Source:
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


def eval_files(ctx: EvalContext, db_kind: str, db_path: Path) -> tuple[EvalResult, dict[str, TuneResult], str]:
    """Rank a features file or an image folder with NumPy; returns the result, the tuning per builder
    and the protocol (``cross-fitting``, ``loo-leaky`` or the queries' relation to the database)."""
    plan, sources, hooks = ctx.plan, ctx.sources, ctx.hooks
    opts, seed = plan.embed, plan.seed
    if db_kind == "npz":
        db_all = load_npz(db_path)
        hooks.log(f"read {len(db_all)} items from {db_path}")
    else:
        db_all = load_images(db_path, opts, None, plan.perturb_db, seed + 1, None)
    db_src = db_all.select(plan.db_split)
    fit_src = _fit_source_logged(ctx, db_kind, db_path, db_all, db_src)
    sources["fit"] = f"{fit_src.name}: {len(fit_src)} labelled items"
    names = fit_src.class_names
    if plan.queries is not None:
        hooks.log(f"reading the queries {plan.queries}")
        q_src = load_queries(plan.queries, plan.query_split, opts, db_all.extractor, plan.perturb, seed)
    elif plan.perturb is not None:
        q_src = load_images(db_path, opts, None, plan.perturb, seed, plan.query_split or plan.db_split)
    else:
        q_src = db_all.select(plan.query_split) if plan.query_split is not None else db_src
    sources["queries_from"] = q_src.name
    database = Items(np.zeros((len(db_src), 0)), relabel(db_src, names), db_src.keys, raw=db_src.features)
    q_all = Items(np.zeros((len(q_src), 0)), relabel(q_src, names), q_src.keys, raw=q_src.features)
    queries = q_all.subset(ctx.sample(len(q_all)))
    match = fit_index(queries.ids, fit_src.keys, same_origin=q_src.origin == fit_src.origin)
    leaky = bool((match >= 0).any())
    fit_y = relabel(fit_src, names)
    ctx.warn(*diagnostics.few_per_class(fit_y, len(names), names))
    if plan.protocol == "cross-fit" or (plan.protocol == "auto" and leaky):
        result, tuned = _cross_fit(ctx, fit_src, fit_y, names, queries, database, match)
        return result, tuned, "cross-fitting"
    # Raw baselines alone still fit a model: its tree scores mahp, hdist and severity.
    base, methods, tuned = fit_methods(ctx, _model_names(ctx) or ["cosine"], fit_src.features, fit_y, names)
    methods = [m for m in methods if m.name in ctx.names]
    q_items, db_items = _project(base, queries), _project(base, database)
    _diagnose(ctx, base, q_items, db_items, leaky)
    ctx.extra["gaussianity"] = model_gaussianity(base, fit_src.features, fit_y)  # per class (DESIGN.md §1.9)
    scoring = choose_scoring(plan.score_taxonomy, methods, base, "the learned tree")
    raw = [Method(n) for n in ctx.names if n in RAW_METHODS]
    result = _rank(ctx, q_items, db_items, raw + methods, base.num_classes, scoring, "ranking the queries")
    result.metrics = {n: result.metrics[n] for n in ctx.names if n in result.metrics}
    if leaky:
        ctx.warn(
            f"--protocol loo-leaky: {int((match >= 0).sum())} of {len(queries)} queries are among the items the "
            "model was fitted on, so their labels shaped the Gaussians that classify them: the scores are "
            "optimistic; drop --protocol loo-leaky (cross-fitting) or pass held-out --queries"
        )
        return result, tuned, "loo-leaky"
    return result, tuned, result.protocol


def _fit_source_logged(ctx: EvalContext, db_kind: str, db_path: Path, db_all: Source, db_src: Source) -> Source:
    if ctx.plan.fit is not None:
        ctx.hooks.log(f"reading the training items {ctx.plan.fit}")
    return fit_source(ctx.plan, db_kind, db_path, db_all, db_src)


def _model_names(ctx: EvalContext) -> list[str]:
    """The methods that need a model (everything but the raw baselines)."""
    return [n for n in ctx.names if n not in RAW_METHODS]


def _project(model: HierarchyModel, items: Items) -> Items:
    """``items`` with their PCA vectors in ``model``'s space (from the raw features)."""
    assert items.raw is not None
    return Items(model.transform(items.raw), items.labels, items.ids, None, items.raw)


def _rank(
    ctx: EvalContext,
    queries: Items,
    database: Items,
    methods: list[Method],
    num_classes: int,
    scoring: Scoring | None,
    label: str,
) -> EvalResult:
    plan = ctx.plan
    with ctx.hooks.progress(len(queries), label) as advance:
        return evaluate_arrays(
            queries,
            database,
            methods,
            num_classes=num_classes,
            ks=plan.ks,
            map_r=plan.map_r,
            scoring=scoring,
            mahp_ks=plan.mahp_ks,
            hdist_ks=plan.hdist_ks,
            leaf_from=ctx.leaf_from,
            progress=advance,
        )


def _diagnose(ctx: EvalContext, base: HierarchyModel, queries: Items, database: Items, leaky: bool) -> None:
    """The model's warnings, with the leaf accuracy on the queries (held out, unless leaky) and the
    database (the report's ``leaf_sources``); ``queries`` and ``database`` are in ``base``'s space."""
    ctx.warn(*diagnostics.narrow_pca(base.dims, base.num_classes, base.input_dims))
    if base.builder == "overlap" and ctx.plan.tuning is None:
        ctx.warn(*diagnostics.flat_tree([(base.threshold, base.tree_height)]))
    leaves = base.assign(queries.z, projected=True, raw=queries.raw)
    db_leaves = database_leaves(base, database, ctx.leaf_from)
    ctx.count_leaves(base, ctx.leaf_from, leaves, queries.labels, db_leaves, database.labels)
    where = "on the queries, which the model was fitted on" if leaky else f"on the {len(queries)} held-out queries"
    ctx.warn(*diagnostics.low_leaf_accuracy(diagnostics.leaf_accuracy(leaves, queries.labels), where))


def _cross_fit(
    ctx: EvalContext,
    fit_src: Source,
    fit_y: np.ndarray,
    names: list[str],
    queries: Items,
    database: Items,
    match: np.ndarray,
) -> tuple[EvalResult, dict[str, TuneResult]]:
    """Cross-fitting (see :mod:`hierqdrant.evaluation.protocols`)."""
    plan = ctx.plan
    k = plan.folds
    fit_folds = assign_folds(fit_y, k, plan.seed)
    q_folds = query_folds(match, fit_folds, k, plan.seed)
    check_fold_classes(fit_y, fit_folds, k, names)
    model_names = _model_names(ctx)
    # The reference model on every training item: its tree scores mahp/hdist/severity for all folds (one
    # yardstick for every query and method), and its shape is what the diagnostics look at.
    full_plan = replace(plan, tuning=None)
    full_ctx = replace(ctx, plan=full_plan, warnings=[], notes=[], extra={}, leaf_counts={})
    full, full_methods, _ = fit_methods(
        full_ctx, [n for n in model_names if n in HIERARCHICAL or n == "hierarchy-only"] or ["cosine"],
        fit_src.features, fit_y, names, what=" (the reference tree that scores every fold)",
    )  # fmt: skip
    scoring = choose_scoring(plan.score_taxonomy, full_methods, full, "the learned tree")
    ctx.warn(*diagnostics.narrow_pca(full.dims, full.num_classes, full.input_dims))
    ctx.extra["gaussianity"] = model_gaussianity(full, fit_src.features, fit_y)  # per class (DESIGN.md §1.9)
    parts: list[tuple[np.ndarray, EvalResult]] = []
    raw = [Method(n) for n in ctx.names if n in RAW_METHODS]
    if raw:
        parts.append(
            (
                np.arange(len(queries)),
                _rank(ctx, queries, database, raw, len(names), scoring, "ranking by the raw features"),
            )
        )
    tuned_first: dict[str, TuneResult] = {}
    fold_info: list[dict[str, Any]] = []
    for f, rows, train in fold_splits(q_folds, fit_folds, k) if model_names else ():
        what = f" (cross-fitting fold {f + 1}/{k})"
        base, methods, tuned = fit_methods(ctx, model_names, fit_src.features[train], fit_y[train], names, what=what)
        for r in tuned.values():
            ctx.warn(*r.warnings)
        tuned_first = tuned_first or tuned
        q_f, db_f = _project(base, queries.subset(rows)), _project(base, database)
        q_leaves = base.assign(q_f.z, projected=True, raw=q_f.raw)
        db_leaves = database_leaves(base, db_f, ctx.leaf_from)
        ctx.count_leaves(base, ctx.leaf_from, q_leaves, q_f.labels, db_leaves, db_f.labels)
        res = _rank(ctx, q_f, db_f, methods, len(names), scoring, f"ranking fold {f + 1}/{k}")
        parts.append((rows, res))
        fold_info.append(fold_record(f, rows.size, train.size, base, methods, tuned))
    result = finish_cross_fitting(ctx, parts, fold_info, len(queries), int(fit_y.size))
    return result, with_folds(tuned_first, fold_info)
