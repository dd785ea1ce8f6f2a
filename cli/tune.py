"""``hierqdrant tune``: choose t and α on a validation split of the training images and store them.

The work is :func:`hierqdrant.evaluation.run_tune.run_tune`; this file declares the options and renders.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .choices import BuilderName, LeafFromName, ProtocolName
from .common import (
    EXIT_OK,
    api_key_option,
    data_dir_option,
    handle_errors,
    open_engine,
    parse_pca,
    print_json,
    url_option,
)
from .eval_shared import hooks, parse_floats, print_line, show_table, tune_table


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
    val_share: float = typer.Option(0.2, "--val-share", help="Share of the training items held out."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and the query sample."),
    protocol: ProtocolName = typer.Option(
        ProtocolName("split"),
        "--protocol",
        help="split: validation queries against the rest; loo: leave-one-out within the validation items.",
    ),
    max_queries: int = typer.Option(2000, "--max-queries", help="At most this many validation queries."),
    leaf_from: LeafFromName = typer.Option(LeafFromName("predicted"), "--leaf-from", help="predicted or label."),
    score_taxonomy: Path | None = typer.Option(None, "--score-taxonomy", help="Hierarchy that scores mahp@K."),
    pca: str = typer.Option("0.95", "--pca", help="PCA of a model fitted from --features."),
    covariance: str = typer.Option("ledoit-wolf", "--covariance", help="ledoit-wolf or oas."),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Choose t and α on a validation split of the training images; store them in the model."""
    from hierqdrant.core.settings import FitSettings
    from hierqdrant.evaluation.run_tune import TunePlan, run_tune
    from hierqdrant.evaluation.tuning import TuneSettings

    plan = TunePlan(
        features=features,
        split=split,
        collection=collection,
        out=out,
        fit=FitSettings(
            builder=builder.value,
            taxonomy=taxonomy,
            pca=parse_pca(pca),
            covariance=covariance,  # type: ignore[arg-type]
            leaf_from=leaf_from.value,
        ),
        settings=TuneSettings(
            metric=metric,
            thresholds=parse_floats(thresholds, "thresholds"),
            alphas=parse_floats(alphas, "alphas"),
            val_share=val_share,
            seed=seed,
            max_queries=max_queries,
            protocol=protocol.value,
        ),
        score_taxonomy=score_taxonomy,
    )
    report = run_tune(plan, connect=lambda: open_engine(url, api_key, data_dir), hooks=hooks(not (quiet or as_json)))
    if as_json:
        print_json(report.to_dict())
        raise typer.Exit(EXIT_OK)
    result = report.result
    show_table(tune_table(result))
    where = ", ".join(
        [f"model → {out}" for _ in [0] if out is not None]
        + [f"collection {collection!r} reassigned ({report.reassigned} points)" for _ in [0] if collection]
    )
    print_line(
        f"chose t={result.best_threshold if result.best_threshold is not None else '–'}, α={result.best_alpha:g}: "
        f"{metric} {result.best_score:.4f} (cosine {result.cosine_score:.4f}) on {result.queries} validation "
        f"queries; model {result.model.model_id}; {where}"
    )
    raise typer.Exit(EXIT_OK)
