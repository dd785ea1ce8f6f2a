"""An evaluation of a collection, every query searched through the engine (:func:`eval_collection`).

The model is the collection's, fitted at ingest on its labelled non-test points. When the queries are
among those points (leave-one-out over the collection, or ``--queries`` naming its images) they are
cross-fitted by default: per fold, the class Gaussians and the tree are refitted on the training
points outside the fold, in the collection's PCA space (the stored vectors fix the PCA; PCA uses no
labels), and the fold's queries are searched in a temporary copy of the collection whose points carry
that model's leaves. ``cosine-raw`` and ``euclidean-raw`` are skipped with a warning: a collection
stores PCA vectors, not the raw features.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hierqdrant.core import diagnostics
from hierqdrant.core.errors import InputError
from hierqdrant.core.gaussian import Gaussians
from hierqdrant.core.model import HierarchyModel
from hierqdrant.evaluation.collection import evaluate_collection, read_collection_items, training_rows
from hierqdrant.evaluation.items import Items, database_leaves, stored_leaf_mode
from hierqdrant.evaluation.methods import PLAIN, RAW_METHODS, Method
from hierqdrant.evaluation.plan import EvalContext, fit_methods
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
from hierqdrant.evaluation.scoring import EvalResult, Scoring, choose_scoring
from hierqdrant.evaluation.sources import load_queries, relabel
from hierqdrant.evaluation.tune_grid import refit_classifier
from hierqdrant.evaluation.tuning import TuneResult

if TYPE_CHECKING:
    from hierqdrant.store.engines import Engine

__all__ = ["eval_collection", "fold_model"]


def fold_model(stored: HierarchyModel, fit_z: np.ndarray, fit_y: np.ndarray) -> HierarchyModel:
    """``stored``'s PCA with the class Gaussians, the query classifier and the tree refitted on ``fit_z`` /
    ``fit_y`` (leaf labels: sub-classes where ``stored`` has them; same builder, threshold or taxonomy, same
    kind of classifier)."""
    gauss = Gaussians.fit(fit_z, fit_y, stored.num_classes, estimator=stored.gaussians.estimator)  # type: ignore[arg-type]
    refit = refit_classifier(replace(stored, gaussians=gauss), fit_z, fit_y)
    taxonomy = stored.hierarchy if stored.builder == "given" else None
    return refit.refit_tree(fit_z, fit_y, builder=stored.builder, threshold=stored.threshold, taxonomy=taxonomy)


def eval_collection(ctx: EvalContext, engine: Engine) -> tuple[EvalResult, dict[str, TuneResult], str]:
    """Rank a collection through the engine; returns the result, the tuning and the protocol."""
    from hierqdrant.store.collection import id_namespace, point_id

    plan, sources, hooks = ctx.plan, ctx.sources, ctx.hooks
    db, db_split = plan.db, plan.db_split
    skipped = [n for n in ctx.names if n in RAW_METHODS]
    if skipped:
        ctx.names = [n for n in ctx.names if n not in RAW_METHODS]
        ctx.warn(
            f"{', '.join(skipped)} skipped: collection {db!r} stores PCA vectors, not the raw features they rank "
            "by; to compare with them, evaluate the features file (--db FEATURES.npz)"
        )
    if not ctx.names:
        raise InputError("no method left to evaluate through a collection", "add e.g. cosine,overlap to --methods")
    if engine.exists(db):  # a missing collection is one error line, read_collection_items's
        hooks.log(f"reading collection {db!r}")
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
    # Gaussians and trees are refitted on leaf labels: with sub-class leaves, each point's sub-class of its class.
    fit_leaves = (
        fit_y if base.subclasses is None else base.database_leaves(fit_z, fit_y, projected=True, leaf_from="label")
    )
    fit_ids = [everything.ids[i] for i in train_rows]
    sources["fit"] = f"collection {db!r}: {train_rows.size} labelled non-test points"
    q_items: Items
    if plan.queries is not None:
        hooks.log(f"reading the queries {plan.queries}")
        q_src = load_queries(plan.queries, plan.query_split, plan.embed, base.extractor, plan.perturb, plan.seed)
        q_ids = [point_id(id_namespace(info, db), key) for key in q_src.keys]  # as ingest made the points' ids
        q_items = Items(base.transform(q_src.features), relabel(q_src, base.class_names), q_ids)
        sources["queries_from"] = q_src.name
    elif plan.query_split is not None and plan.query_split != db_split:
        _, _, q_items, _ = read_collection_items(engine, db, split=plan.query_split)
        sources["queries_from"] = f"collection {db!r} [{plan.query_split}]"
    else:
        q_items = database
        sources["queries_from"] = f"collection {db!r}" + (f" [{db_split}]" if db_split else "")
    q_items = q_items.subset(ctx.sample(len(q_items)))
    q_items.leaves = None
    leaf_from = plan.leaf_from or stored_leaf_mode(base, database)
    match = fit_index(q_items.ids, fit_ids)
    leaky = bool((match >= 0).any())
    ctx.warn(*diagnostics.few_per_class(fit_y, len(base.class_names), base.class_names))
    ctx.warn(*diagnostics.narrow_pca(base.dims, base.num_classes, base.input_dims))
    if plan.protocol == "cross-fit" or (plan.protocol == "auto" and leaky):
        result, tuned = _cross_fit(ctx, engine, base, database, q_items, fit_z, fit_y, fit_leaves, match, leaf_from)
        return result, tuned, "cross-fitting"
    _, methods, tuned = fit_methods(ctx, ctx.names, fit_z, fit_leaves, base.class_names, base=base, leaf_from=leaf_from)
    scoring = choose_scoring(plan.score_taxonomy, methods, base, "the collection's tree")
    if base.builder == "overlap" and plan.tuning is None:
        ctx.warn(*diagnostics.flat_tree([(base.threshold, base.tree_height)]))
    where = "on the queries, which the model was fitted on" if leaky else f"on the {len(q_items)} held-out queries"
    q_leaves = None
    if base.query_classifier != "head":  # the head reads raw features, which a collection does not keep
        q_leaves = base.assign(q_items.z, projected=True)
        accuracy = diagnostics.leaf_accuracy(base.class_of_leaf(q_leaves), q_items.labels)
        ctx.warn(*diagnostics.low_leaf_accuracy(accuracy, where))
    ctx.count_leaves(base, leaf_from, q_leaves, q_items.labels, database.leaves, database.labels)
    result = _search(ctx, engine, q_items, database, methods, scoring, plan.leaf_from, "searching")
    if leaky:
        ctx.warn(
            f"--protocol loo-leaky: {int((match >= 0).sum())} of {len(q_items)} queries are points the collection's "
            "model was fitted on, so their labels shaped the Gaussians that classify them: the scores are "
            "optimistic; drop --protocol loo-leaky (cross-fitting) or pass held-out --queries"
        )
        return result, tuned, "loo-leaky"
    return result, tuned, result.protocol


def _search(
    ctx: EvalContext,
    engine: Engine,
    queries: Items,
    database: Items,
    methods: list[Method],
    scoring: Scoring | None,
    leaf_from: str | None,
    label: str,
) -> EvalResult:
    plan = ctx.plan
    with ctx.hooks.progress(len(queries) * len(methods), label) as advance:
        return evaluate_collection(
            engine,
            plan.db,
            queries,
            methods,
            database=database,
            db_split=plan.db_split,
            ks=plan.ks,
            map_r=plan.map_r,
            scoring=scoring,
            mahp_ks=plan.mahp_ks,
            hdist_ks=plan.hdist_ks,
            leaf_from=leaf_from,
            strategy=plan.strategy,
            exact=plan.exact,
            progress=advance,
        )


def _cross_fit(
    ctx: EvalContext,
    engine: Engine,
    stored: HierarchyModel,
    database: Items,
    queries: Items,
    fit_z: np.ndarray,
    fit_y: np.ndarray,
    fit_leaves: np.ndarray,
    match: np.ndarray,
    leaf_from: str,
) -> tuple[EvalResult, dict[str, TuneResult]]:
    """Cross-fitting through the engine (see the module docstring); ``fit_leaves``: the training points'
    leaf labels (``fit_y``, their classes, without sub-class leaves)."""
    plan = ctx.plan
    k = plan.folds
    fit_folds = assign_folds(fit_y, k, plan.seed)
    q_folds = query_folds(match, fit_folds, k, plan.seed)
    check_fold_classes(fit_y, fit_folds, k, stored.class_names)
    untuned = replace(ctx, plan=replace(plan, tuning=None), warnings=[], notes=[], extra={}, leaf_counts={})
    full_methods = fit_methods(untuned, ctx.names, fit_z, fit_leaves, stored.class_names, base=stored)[1]
    scoring = choose_scoring(plan.score_taxonomy, full_methods, stored, "the collection's tree")
    parts: list[tuple[np.ndarray, EvalResult]] = []
    plain = [Method(n) for n in ctx.names if n in PLAIN]
    if plain:
        parts.append(
            (np.arange(len(queries)), _search(ctx, engine, queries, database, plain, scoring, None, "searching"))
        )
    model_names = [n for n in ctx.names if n not in PLAIN]
    tuned_first: dict[str, TuneResult] = {}
    per_fold: list[dict[str, Any]] = []
    for f, rows, train in fold_splits(q_folds, fit_folds, k) if model_names else ():
        ctx.hooks.log(
            f"cross-fitting fold {f + 1}/{k}: refitting the class Gaussians and the tree on {train.size} points"
        )
        base_f = fold_model(stored, fit_z[train], fit_leaves[train])
        _, methods, tuned = fit_methods(
            ctx, model_names, fit_z[train], fit_leaves[train], stored.class_names, base=base_f, leaf_from=leaf_from
        )
        for r in tuned.values():
            ctx.warn(*r.warnings)
        tuned_first = tuned_first or tuned
        q_f = queries.subset(rows)
        q_leaves = None
        if base_f.query_classifier != "head":
            q_leaves = base_f.assign(q_f.z, projected=True)
        db_f = Items(database.z, database.labels, database.ids, database_leaves(base_f, database, leaf_from))
        ctx.count_leaves(base_f, leaf_from, q_leaves, q_f.labels, db_f.leaves, db_f.labels)
        res = _search(ctx, engine, q_f, db_f, methods, scoring, None, f"searching fold {f + 1}/{k}")
        parts.append((rows, res))
        per_fold.append(fold_record(f, rows.size, train.size, base_f, methods, tuned))
    result = finish_cross_fitting(ctx, parts, per_fold, len(queries), int(fit_y.size))
    result.info["leaves"] = leaf_from
    return result, with_folds(tuned_first, per_fold)
