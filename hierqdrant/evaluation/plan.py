"""What an evaluation is asked to do (:class:`EvalPlan`, checked up front by :func:`check_plan`) and what
its steps share while it runs (:class:`EvalContext`): the query sample, where the items came from,
the warnings and notes of the report, and fitting the methods on training items (:func:`fit_methods`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.settings import QUERY_CLASSIFIERS, FitSettings, LeafFrom, QueryClassifier
from hierqdrant.evaluation.hooks import Hooks
from hierqdrant.evaluation.methods import ALL_METHODS, Method, build_methods, check_method_names, overlap_threshold
from hierqdrant.evaluation.perturb import parse_perturbation
from hierqdrant.evaluation.plots import check_plot_path
from hierqdrant.evaluation.scoring import DEFAULT_KS, Scoring, split_metric_values, taxonomy_scoring
from hierqdrant.evaluation.sources import EmbedOptions, resolve_source
from hierqdrant.evaluation.tuning import TuneResult, TuneSettings, check_tune_settings, tune_methods

__all__ = [
    "DEFAULT_FOLDS",
    "EVAL_PROTOCOLS",
    "EvalContext",
    "EvalPlan",
    "EvalProtocol",
    "check_plan",
    "fit_methods",
]

#: ``auto``: cross-fitting when queries are among the items the model is fitted on, else one fit;
#: ``cross-fit``: always; ``loo-leaky``: one fit on everything, flagged (the old, optimistic protocol).
EvalProtocol = Literal["auto", "cross-fit", "loo-leaky"]
EVAL_PROTOCOLS: tuple[str, ...] = get_args(EvalProtocol)
DEFAULT_FOLDS = 5


@dataclass
class EvalPlan:
    """What to evaluate: the database (a collection name, a features .npz or an image folder), the
    queries (None: leave-one-out over the database), the methods and their settings, the metrics.

    ``methods=None`` is every method, ``given`` only with a ``taxonomy`` (named explicitly without
    one, it is an error). ``threshold`` / ``alpha``: for every method, overridden per
    method by ``thresholds`` / ``alphas``; ``pca``: of the model fitted on a file or folder database.
    ``exact=False`` searches a collection through its HNSW index. ``protocol``: ``auto`` cross-fits
    (``folds`` folds) when some queries are items the model would be fitted on, ``cross-fit`` always
    does, ``loo-leaky`` fits once on everything and ranks anyway (flagged with a warning); see
    :mod:`hierqdrant.evaluation.protocols`. ``query_classifier`` / ``leaf_from``: the leaf sources of a
    model fitted here (None: :class:`~hierqdrant.core.settings.FitSettings`'s defaults, as ``ingest``
    uses them; a collection's model keeps its own).
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
    protocol: EvalProtocol = "auto"
    folds: int = DEFAULT_FOLDS
    query_classifier: QueryClassifier | None = None


def check_plan(plan: EvalPlan) -> tuple[list[str], str, Path | None]:
    """Everything that can be checked before any work: the method names (with ``given`` dropped from
    the default list without a taxonomy), the source kind of the database and its path."""
    names = check_method_names(ALL_METHODS if plan.methods is None else plan.methods)
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
    for key in plan.thresholds:
        if key not in ("overlap", "hierarchy-only"):
            raise InputError(f"a threshold applies to the overlap tree, not to {key!r}", "e.g. --threshold 0.3")
    if plan.tuning is not None:
        # mahp needs a scoring hierarchy, which only --score-taxonomy gives before tuning.
        check_tune_settings(plan.tuning, plan.score_taxonomy is not None)
    for spec in (plan.perturb, plan.perturb_db):
        if spec is not None:
            parse_perturbation(spec)
    if plan.max_queries is not None and plan.max_queries < 1:
        raise InputError(f"--max-queries {plan.max_queries} must be ≥ 1")
    if plan.seed < 0:
        raise InputError(f"--seed {plan.seed} must be ≥ 0")
    if plan.protocol not in EVAL_PROTOCOLS:
        raise InputError(f"unknown protocol {plan.protocol!r}", f"use one of {', '.join(EVAL_PROTOCOLS)}")
    if plan.query_classifier is not None and plan.query_classifier not in QUERY_CLASSIFIERS:
        raise InputError(
            f"unknown query classifier {plan.query_classifier!r}", f"use one of {', '.join(QUERY_CLASSIFIERS)}"
        )
    if plan.folds < 2:
        raise InputError(f"--folds {plan.folds} must be ≥ 2", "e.g. --folds 5")
    if plan.embed.image_size is not None and plan.embed.image_size < 1:
        raise InputError(f"--image-size {plan.embed.image_size} must be ≥ 1", "e.g. --image-size 224")
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
    return names, db_kind, db_path


@dataclass
class EvalContext:
    """What the steps of one evaluation share: the plan, the checked method names, the query sample,
    the record of where the items came from (``sources``), the hooks, and what the report will say
    (``warnings``, ``notes``, ``extra`` keys such as ``cross_fitting``)."""

    plan: EvalPlan
    names: list[str]
    sample: Callable[[int], np.ndarray]
    sources: dict[str, Any]
    hooks: Hooks
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    leaf_counts: dict[str, Any] = field(default_factory=dict)  # behind extra["leaf_sources"]

    def warn(self, *messages: str) -> None:
        """Add warnings (each once, in order)."""
        for m in messages:
            if m not in self.warnings:
                self.warnings.append(m)

    def count_leaves(
        self,
        model: HierarchyModel,
        leaf_from: str,
        query_leaves: np.ndarray | None,
        query_labels: np.ndarray,
        database_leaves: np.ndarray | None = None,
        database_labels: np.ndarray | None = None,
    ) -> None:
        """Add the leaves one model gave (queries; database) to the report's ``leaf_sources``: the query
        classifier(s), the database's leaf source, and the leaf accuracy of each — the share of labelled
        items whose leaf is their class, over every model that ranked (cross-fitting: every fold)."""
        counts = self.leaf_counts
        kinds = counts.setdefault("classifiers", [])
        if model.query_classifier not in kinds:
            kinds.append(model.query_classifier)
        for part, leaves, labels in (
            ("query", query_leaves, query_labels),
            ("database", database_leaves, database_labels),
        ):
            if leaves is None or labels is None:
                continue
            y = np.asarray(labels, dtype=np.int64)
            known = y >= 0
            hits, total = counts.get(part, (0, 0))
            right = model.class_of_leaf(np.asarray(leaves)[known]) == y[known]  # a sub-class counts as its class
            counts[part] = (hits + int(np.sum(right)), total + int(known.sum()))
        self.extra["leaf_sources"] = {
            "query_classifier": ", ".join(kinds),
            "leaf_from": leaf_from,
            **{f"{part}_accuracy": _share(*counts.get(part, (0, 0))) for part in ("query", "database")},
        }

    def leaf_accuracy(self, part: str = "query") -> float:
        """The share counted by :meth:`count_leaves` for ``part`` (``query`` or ``database``); nan: none."""
        share = _share(*self.leaf_counts.get(part, (0, 0)))
        return float("nan") if share is None else share

    @property
    def leaf_from(self) -> str:
        """How database items of a model fitted here get their leaf (the plan's, else the default)."""
        return self.plan.leaf_from or FitSettings().leaf_from

    @property
    def query_classifier(self) -> str:
        """The query classifier of a model fitted here (the plan's, else the default)."""
        return self.plan.query_classifier or FitSettings().query_classifier

    def scoring_taxonomy(self, class_names: Sequence[str]) -> Scoring | None:
        """The --score-taxonomy hierarchy (what tuning on mahp needs up front), or None."""
        plan = self.plan
        return taxonomy_scoring(plan.score_taxonomy, class_names) if plan.score_taxonomy is not None else None


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def fit_methods(
    ctx: EvalContext,
    names: Sequence[str],
    fit_x: np.ndarray,
    fit_y: np.ndarray,
    class_names: Sequence[str],
    *,
    base: HierarchyModel | None = None,
    leaf_from: str | None = None,
    what: str = "",
) -> tuple[HierarchyModel, list[Method], dict[str, TuneResult]]:
    """The methods ``names`` fitted on the training items ``fit_x`` / ``fit_y`` only.

    Without ``base``: ``fit_x`` are raw features; PCA, the class Gaussians and the trees are fitted
    here (with ``--tune``: PCA, t and α chosen on a validation split of these items, as ``tune`` and
    ``ingest --tune`` do). With ``base`` (a collection's model or a cross-fitting fold's refit of it):
    ``fit_x`` are projected by it and its PCA is kept, and ``fit_y`` are leaf labels (a point's sub-class
    where ``base`` has sub-class leaves; tuning then refuses). ``leaf_from``: of database items (None: the
    context's). Returns (base, methods, tuning per builder).
    """
    plan, hooks = ctx.plan, ctx.hooks
    leaf_from = leaf_from or ctx.leaf_from
    choices: dict[str, Any] = {
        "threshold": plan.threshold,
        "thresholds": plan.thresholds,
        "alpha": plan.alpha,
        "alphas": plan.alphas,
        "taxonomy": plan.taxonomy,
    }
    if plan.tuning is not None:
        return tune_methods(
            names, fit_x, fit_y, class_names, tuning=plan.tuning, base=base, projected=base is not None,
            leaf_from=leaf_from, query_classifier=plan.query_classifier, scoring=ctx.scoring_taxonomy(class_names),
            hooks=hooks, **choices,
        )  # fmt: skip
    if base is None:
        t = overlap_threshold(plan.thresholds, plan.threshold)
        settings = FitSettings(
            threshold=t if t is not None else 0.3,
            alpha=plan.alpha if plan.alpha is not None else 3.0,
            pca=plan.pca,
            query_classifier=ctx.query_classifier,  # type: ignore[arg-type]
            leaf_from=leaf_from,  # type: ignore[arg-type]
        )
        hooks.log(
            f"fitting PCA ({'all' if plan.pca is None else f'{plan.pca:g}'}), {len(class_names)} class Gaussians, "
            f"the {settings.query_classifier} leaf classifier and the overlap tree on {fit_x.shape[0]} items{what}"
        )
        base = settings.fit_model(fit_x, fit_y, class_names=class_names)
        fit_z = base.transform(fit_x)
    else:
        fit_z = np.asarray(fit_x, dtype=np.float64)
    return base, build_methods(names, base, fit_z, fit_y, **choices), {}
