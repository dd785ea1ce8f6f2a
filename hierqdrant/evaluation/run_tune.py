"""One tuning from start to end, as ``hierqdrant tune`` runs it: :func:`run_tune` on a :class:`TunePlan`.

The training items are a features .npz (its ``train`` split when it has one) or a collection's
labelled non-test points (what ingest fitted the model on; the collection's PCA is kept). t and α
are chosen by :func:`hierqdrant.evaluation.tuning.tune`; the tuned model goes into a model directory
or replaces the collection's model (its points are reassigned in place).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.model import HierarchyModel
from hierqdrant.core.settings import FitSettings
from hierqdrant.evaluation.collection import read_collection_items, training_rows
from hierqdrant.evaluation.hooks import Hooks
from hierqdrant.evaluation.scoring import taxonomy_scoring
from hierqdrant.evaluation.sources import load_npz, relabel
from hierqdrant.evaluation.tuning import TuneResult, TuneSettings, check_tune_settings, tune

if TYPE_CHECKING:
    from hierqdrant.store.engines import Engine

__all__ = ["TunePlan", "TuneReport", "check_tune_plan", "run_tune"]


@dataclass
class TunePlan:
    """What to tune: labelled training ``features`` (an .npz, its ``split``, default its train split)
    or a ``collection``'s labelled non-test points; where the tuned model goes (``out``: a model
    directory; a collection is updated in place); the builder and the grids."""

    features: Path | None = None
    split: str | None = None
    collection: str | None = None
    out: Path | None = None
    fit: FitSettings = field(default_factory=FitSettings)
    settings: TuneSettings = field(default_factory=TuneSettings)
    score_taxonomy: Path | None = None


@dataclass
class TuneReport:
    """The tuning and where its items came from and its model went."""

    result: TuneResult
    source: str
    out: Path | None = None
    collection: str | None = None
    reassigned: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` output of ``hierqdrant tune``."""
        summary = self.result.to_dict()
        summary["source"] = self.source
        if self.out is not None:
            summary["out"] = str(self.out)
        if self.collection is not None:
            summary["reassigned"] = self.reassigned
            summary["collection"] = self.collection
        return summary


def check_tune_plan(plan: TunePlan) -> TuneSettings:
    """Everything that can be checked before any work; the settings with validated grids."""
    if plan.features is None and plan.collection is None:
        raise InputError("nothing to tune on", "pass --features FILE.npz or --collection NAME")
    if plan.out is None and plan.collection is None:
        raise InputError("nowhere to store the tuned model", "pass --out MODEL_DIR or --collection NAME")
    if plan.out is not None and plan.out.exists() and not plan.out.is_dir():
        raise InputError(f"--out {plan.out} exists and is not a directory", "choose another --out")
    if plan.features is not None and not plan.features.is_file():
        raise NotFoundError(f"--features {plan.features} does not exist", "pass a features .npz")
    taxonomy = plan.fit.taxonomy
    if plan.fit.builder == "given" and taxonomy is None:
        raise InputError("the 'given' builder needs a taxonomy", "pass --taxonomy FILE")
    if isinstance(taxonomy, (str, Path)) and not Path(taxonomy).is_file():
        raise NotFoundError(f"taxonomy file {taxonomy} does not exist", "pass an existing file with --taxonomy")
    if plan.score_taxonomy is not None and not plan.score_taxonomy.is_file():
        raise NotFoundError(f"--score-taxonomy {plan.score_taxonomy} does not exist")
    settings = check_tune_settings(plan.settings, plan.score_taxonomy is not None)
    if settings.max_queries is not None and settings.max_queries < 1:
        raise InputError(f"--max-queries {settings.max_queries} must be ≥ 1")
    return settings


def run_tune(plan: TunePlan, connect: Callable[[], Engine] | None = None, hooks: Hooks | None = None) -> TuneReport:
    """Check ``plan``, tune, and store the tuned model (a collection: reassigned to it in place)."""
    hooks = hooks or Hooks()
    settings = check_tune_plan(plan)
    engine = None
    stored: HierarchyModel | None = None
    try:
        if plan.collection is not None:
            if connect is None:
                raise InputError(f"--collection {plan.collection} needs a store to read it from")
            engine = connect()
            hooks.log(f"reading collection {plan.collection!r}")
            stored, _info, items, splits = read_collection_items(engine, plan.collection)
        extractor: dict[str, Any] | None
        if plan.features is not None:
            hooks.log(f"reading {plan.features}")
            src = load_npz(plan.features)
            src = src.select(plan.split if plan.split else ("train" if src.has_split("train") else None))
            class_names = stored.class_names if stored is not None else src.class_names
            x, y = src.features, relabel(src, class_names)
            projected = False
            source = f"{src.name}: {len(src)} items"
            extractor = {"name": "features-file", "file": plan.features.name, "feature_dim": int(x.shape[1])}
        else:
            assert stored is not None
            rows = training_rows(items, splits)
            if rows.size == 0:
                raise InputError(
                    f"collection {plan.collection!r} has no labelled training points", "ingest labelled images"
                )
            x, y = items.z[rows], items.labels[rows]
            class_names = stored.class_names
            projected = True
            source = f"collection {plan.collection!r}: {rows.size} labelled non-test points"
            extractor = None
        scoring = taxonomy_scoring(plan.score_taxonomy, class_names) if plan.score_taxonomy is not None else None
        hooks.log(f"tuning on {source}")
        result = tune(
            x,
            y,
            class_names,
            fit=plan.fit,
            settings=settings,
            base_model=stored,
            projected=projected,
            scoring=scoring,
            extractor=extractor,
            hooks=hooks,
        )
        report = TuneReport(result, source, out=plan.out)
        if plan.out is not None:
            result.model.save(plan.out)
        if plan.collection is not None and engine is not None:
            from hierqdrant.store.collection import reassign

            report.reassigned = reassign(engine, plan.collection, result.model, leaf_from=plan.fit.leaf_from)
            report.collection = plan.collection
    finally:
        if engine is not None:
            engine.close()
    return report
