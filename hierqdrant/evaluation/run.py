"""One evaluation from start to end, as ``hierqdrant eval`` runs it: :func:`run_eval` on an :class:`EvalPlan`.

The database is a collection (ranked through the engine and the searcher,
:mod:`~hierqdrant.evaluation.run_collection`) or a features .npz / a labelled image folder (ranked with
NumPy, :mod:`~hierqdrant.evaluation.run_files`). The steps: check everything that can be checked before
any work; read the database and the training items and fit the model on them — once, or per fold when
the queries are among the training items (cross-fitting, :mod:`~hierqdrant.evaluation.protocols`);
read and embed the queries (a seeded sample with ``max_queries``); build the methods, tuned on the
training items when asked; rank and score; the paired test of overlap against the baseline (cosine-raw
when scored, else cosine); the map@k plot.
:meth:`EvalReport.to_dict` is the ``--json`` output: besides the scores, the ``protocol``, the queries'
``ranking`` relation to the database, ``warnings`` (results that mean little) and ``notes``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.evaluation.hooks import Hooks, ProgressFactory
from hierqdrant.evaluation.plan import EvalContext, EvalPlan, check_plan
from hierqdrant.evaluation.protocols import protocol_note
from hierqdrant.evaluation.run_collection import eval_collection
from hierqdrant.evaluation.run_files import eval_files
from hierqdrant.evaluation.scoring import EvalResult, paired, parse_metric
from hierqdrant.evaluation.tuning import TuneResult

if TYPE_CHECKING:
    from hierqdrant.evaluation.significance import PairedResult
    from hierqdrant.store.engines import Engine

__all__ = ["EvalPlan", "EvalReport", "Hooks", "ProgressFactory", "check_plan", "mahp_note", "paired_dict", "run_eval"]


@dataclass
class EvalReport:
    """The scores, the tuning per builder, the paired tests, where the items came from, the protocol,
    and what the report says besides the numbers (``warnings``, ``notes``, ``extra`` keys)."""

    result: EvalResult
    tuned: dict[str, TuneResult]
    tests: dict[str, PairedResult]
    sources: dict[str, Any]  # fit, queries_from
    leaf_from: str
    perturb: dict[str, Any]
    seconds_total: float
    plot: Path | None = None
    protocol: str = ""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    baseline: str = "cosine"  # the method overlap is tested against (cosine-raw when it was scored)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` output of ``hierqdrant eval``."""
        out = self.result.to_dict()
        out["ranking"] = out["protocol"]
        out["protocol"] = self.protocol or self.result.protocol
        out.update(self.sources)
        out["leaf_from"] = self.leaf_from
        out["paired"] = paired_dict(self.tests, "overlap", self.baseline)
        out["tuning"] = {name: r.to_dict() for name, r in self.tuned.items()}
        out["perturb"] = self.perturb
        out["seconds_total"] = self.seconds_total
        if self.plot is not None:
            out["plot"] = str(self.plot)
        out.update(self.extra)
        out["warnings"] = list(self.warnings)
        out["notes"] = list(self.notes)
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


def mahp_note(metrics: list[str]) -> list[str]:
    """The note on mAHP's normalisation when a report has mahp@k columns (DESIGN.md §6)."""
    ks = sorted({k for m in metrics if m.startswith("mahp@") for k in [parse_metric(m)[1]] if k is not None})
    if not ks:
        return []
    best = ", ".join(f"{(k - 1) / k:.4f} at k = {k}" for k in ks)
    return [
        "mahp@k keeps Barz & Denzler's normalisation (the trapezoid area over k − 1 steps divided by k): "
        f"a perfect ranking scores (k − 1)/k, not 1 ({best})"
    ]


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

    ctx = EvalContext(plan, names, sample, {}, hooks)
    if db_kind == "collection":
        if connect is None:
            raise InputError(f"--db {plan.db} names a collection, but there is no store to read it from")
        engine = connect()
        try:
            result, tuned, protocol = eval_collection(ctx, engine)
        finally:
            engine.close()
    else:
        assert db_path is not None
        result, tuned, protocol = eval_files(ctx, db_kind, db_path)
    for r in tuned.values():
        ctx.warn(*r.warnings)

    # The baseline a user has without us: the raw features' cosine (a plain Qdrant collection), else ours.
    baseline = "cosine-raw" if "cosine-raw" in result.metrics else "cosine"
    tests = (
        paired(result, "overlap", baseline, plan.paired, seed=plan.seed)
        if {"overlap", baseline} <= set(result.metrics)
        else {}
    )
    seconds_total = round(time.perf_counter() - started, 2)
    if plan.plot is not None:
        from hierqdrant.evaluation.plots import plot_map_at_k

        curves = {
            name: {kk: row[f"map@{kk}"] for kk in plan.ks if math.isfinite(row.get(f"map@{kk}", float("nan")))}
            for name, row in result.metrics.items()
        }
        plot_map_at_k(curves, plan.plot, title=f"map@k — {protocol}", highlight=["overlap"])
    columns = [key for row in result.metrics.values() for key in row]
    fit = ctx.sources.get("fit", "")
    leaf_from = plan.leaf_from or (result.info.get("leaves") if db_kind == "collection" else None) or ctx.leaf_from
    notes = [
        protocol_note(protocol, folds=plan.folds, fit=fit, scored_by=result.scored_by, leaf_from=leaf_from),
        *ctx.notes,
        *mahp_note(columns),
    ]
    return EvalReport(
        result=result,
        tuned=tuned,
        tests=tests,
        baseline=baseline,
        sources=ctx.sources,
        leaf_from=leaf_from,
        perturb={"queries": plan.perturb, "database": plan.perturb_db, "seed": plan.seed},
        seconds_total=seconds_total,
        plot=plan.plot,
        protocol=protocol,
        warnings=ctx.warnings,
        notes=notes,
        extra=ctx.extra,
    )
