"""``hierqdrant tune``: choose the PCA, t and α on a validation split of the training images and store them.

The work is :func:`hierqdrant.evaluation.run_tune.run_tune`; this file declares the options and renders.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .choices import BuilderName, LeafFromName, ProtocolName, QueryClassifierName
from .common import (
    EXIT_OK,
    api_key_option,
    data_dir_option,
    handle_errors,
    open_engine,
    print_json,
    timeout_option,
    url_option,
)
from .eval_shared import chosen, hooks, print_line, print_warnings, show_table, tune_settings, tune_table
from .fit_options import fit_settings, leaf_from_option, paper_option, query_classifier_option


@handle_errors
def tune_command(
    features: Path | None = typer.Option(
        None, "--features", "-f", help="Labelled training features .npz (default with --collection: its points)."
    ),
    split: str | None = typer.Option(None, "--split", help="Split of --features to use (default: train if any)."),
    collection: str | None = typer.Option(
        None, "--collection", "-c", help="Tune this collection's model and update the collection (reassign)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the tuned model into this directory."),
    builder: BuilderName = typer.Option(BuilderName("overlap"), "--builder", help="overlap, ward or given."),
    taxonomy: Path | None = typer.Option(None, "--taxonomy", help="Taxonomy file of --builder given."),
    metric: str = typer.Option("map@r", "--metric", help="Metric to maximise: map@K, map@r, p@1 or mahp@K."),
    thresholds: str | None = typer.Option(None, "--thresholds", help="t grid, e.g. 0.05,0.1,0.2,0.3,0.5."),
    alphas: str | None = typer.Option(None, "--alphas", help="α grid, e.g. 0.5,1,2,3,5."),
    pcas: str | None = typer.Option(
        None,
        "--pcas",
        help="PCA grid: variance shares, dims or 'all', e.g. 0.95,0.99,all (the default; a collection keeps its own).",
    ),
    val_share: float = typer.Option(0.2, "--val-share", help="Share of the training items held out."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and the query sample."),
    protocol: ProtocolName = typer.Option(
        ProtocolName("split"),
        "--protocol",
        help="split: validation queries against the rest; loo: leave-one-out within the validation items.",
    ),
    max_queries: int = typer.Option(2000, "--max-queries", help="At most this many validation queries."),
    query_classifier: QueryClassifierName | None = query_classifier_option(),
    leaf_from: LeafFromName | None = leaf_from_option(),
    paper: bool = paper_option(),
    score_taxonomy: Path | None = typer.Option(None, "--score-taxonomy", help="Hierarchy that scores mahp@K."),
    pca: str | None = typer.Option(None, "--pca", help="Pin the PCA instead of searching --pcas, e.g. 0.95."),
    covariance: str = typer.Option("ledoit-wolf", "--covariance", help="ledoit-wolf or oas."),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    timeout: float = timeout_option(),
    quiet: bool = typer.Option(False, "--quiet", help="No progress on stderr."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Choose the PCA, t and α on a validation split of the training images; store them in the model."""
    from hierqdrant.core.settings import FitSettings
    from hierqdrant.evaluation.run_tune import TunePlan, run_tune

    plan = TunePlan(
        features=features,
        split=split,
        collection=collection,
        out=out,
        fit=fit_settings(
            FitSettings,
            paper=paper,
            pca=pca,
            query_classifier=query_classifier,
            leaf_from=leaf_from,
            builder=builder.value,
            taxonomy=taxonomy,
            covariance=covariance,
        ),
        settings=tune_settings(
            metric, thresholds, alphas, val_share, seed, max_queries, protocol.value, pcas, "0.95" if paper else pca
        ),
        score_taxonomy=score_taxonomy,
    )
    report = run_tune(
        plan, connect=lambda: open_engine(url, api_key, data_dir, create=False, timeout=timeout), hooks=hooks(not quiet)
    )
    if as_json:
        if not quiet:
            print_warnings(report.result.warnings, to_stderr=True)
        print_json(report.to_dict())
        raise typer.Exit(EXIT_OK)
    result = report.result
    show_table(tune_table(result))
    print_warnings(result.warnings)
    where = ", ".join(
        [f"model → {out}" for _ in [0] if out is not None]
        + [f"collection {collection!r} reassigned ({report.reassigned} points)" for _ in [0] if collection]
    )
    print_line(
        f"chose {chosen(result)}: "
        f"{metric} {result.best_score:.4f} (cosine {result.cosine_score:.4f}) on {result.queries} validation "
        f"queries; model {result.model.model_id}; {where}"
    )
    raise typer.Exit(EXIT_OK)
