"""``hierqdrant hierarchy``: build, show and export the class tree of a model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from hierqdrant.core.errors import InputError

from .choices import BuilderName, LeafFromName, QueryClassifierName
from .common import (
    api_key_option,
    console,
    data_dir_option,
    handle_errors,
    open_engine,
    print_json,
    resolve_collection,
    shown,
    timeout_option,
    url_option,
)
from .fit_options import fit_settings, leaf_from_option, paper_option, pca_option, query_classifier_option

app = typer.Typer(help="Build, show and export class hierarchies.", no_args_is_help=True)


class ExportFormat(str, Enum):
    newick = "newick"
    json = "json"
    parent_child = "parent-child"
    png = "png"


@app.command("build")
@handle_errors
def build_command(
    features: Path = typer.Option(
        ..., "--features", "-f", help="Features .npz with 'features' and 'labels' (and optionally 'classes')."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the model into (model.json + arrays.npz)."),
    builder: BuilderName = typer.Option(
        BuilderName("overlap"),
        help="overlap (the paper), ward (linkage of class means) or given (a taxonomy file).",
    ),
    taxonomy: Path | None = typer.Option(
        None, help="Taxonomy file for --builder given (parent-child, JSON or Newick)."
    ),
    threshold: float = typer.Option(
        0.3, "--threshold", "-t", help="Classes whose Bhattacharyya coefficient ≥ t merge (overlap builder)."
    ),
    alpha: float = typer.Option(3.0, help="Default weight α of the hierarchy term for queries."),
    pca: str | None = pca_option(),
    covariance: str = typer.Option("ledoit-wolf", help="Shrinkage estimator: ledoit-wolf or oas."),
    query_classifier: QueryClassifierName | None = query_classifier_option(),
    leaf_from: LeafFromName | None = leaf_from_option(),
    paper: bool = paper_option(),
    head: Path | None = typer.Option(
        None,
        "--head",
        help="With --query-classifier head: the checkpoint of the network the features came from, whose "
        "final layer scores the classes (a features file does not carry it).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No phase lines and no warnings on stderr."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Fit PCA, class Gaussians, a class hierarchy and the query classifier on labelled features.

    The query's leaf comes from the tied (LDA) classifier by default; --paper fits the paper's setting
    (Mahalanobis leaves for queries and stored images, 95 % PCA). The leaf sources are stored with the model.

    The model files are written atomically (arrays first, the manifest last): a kill leaves the old model
    or the new one, never a half-written file, and the same command run again finishes the job.

    What it does goes to stderr a line per phase, also with --json (whose stdout stays one JSON document).
    Warnings (a narrow PCA, a flat tree, classes with too few images, a low leaf accuracy on the fitting
    data) are printed in yellow and listed in the JSON.
    """
    import time

    from hierqdrant.core.build import check_threshold
    from hierqdrant.core.diagnostics import model_warnings
    from hierqdrant.core.features import FeatureSet
    from hierqdrant.core.model import check_alpha
    from hierqdrant.core.settings import FitSettings
    from hierqdrant.pipelines.ingest import fitted_line, fitting_line

    from .eval_shared import log_line, print_warnings

    say = log_line if not quiet else (lambda _message: None)

    check_alpha(alpha)  # the options first, before the features are read
    if builder.value == "overlap":
        check_threshold(threshold)
    settings = fit_settings(
        FitSettings,
        paper=paper,
        pca=pca,
        query_classifier=query_classifier,
        leaf_from=leaf_from,
        builder=builder.value,
        threshold=threshold,
        alpha=alpha,
        taxonomy=taxonomy,
        covariance=covariance,
    )
    if head is not None and settings.query_classifier != "head":
        raise InputError("--head gives the head query classifier", "add --query-classifier head, or drop --head")
    data = FeatureSet.load(features, fix="pass a features file made by `hierqdrant embed` (with labels)")
    if data.labels is None:
        raise InputError(f"{features} has no 'labels' array", "a hierarchy is fitted on labelled features")
    x = data.features
    say(f"read {x.shape[0]} × {x.shape[1]} features of {len(data.class_names)} classes from {features}")
    classifier = None
    if settings.query_classifier == "head":
        if head is None:
            raise InputError(
                f"{features.name} is a features file: the network's final layer (the head query classifier) "
                "is not in it",
                "pass --head CHECKPOINT (the network the features came from), or use --query-classifier tied",
            )
        from hierqdrant.vision.checkpoints import read_head

        classifier = read_head(head, x.shape[1]).check(data.class_names, head.name)
    say(fitting_line(settings.pca, len(data.class_names), builder.value, x.shape[0], x.shape[1], settings))
    started = time.perf_counter()
    model = settings.fit_model(
        data.features,
        data.labels,
        class_names=data.class_names,
        extractor={"features_file": features.name},
        head=classifier,
    )
    say(fitted_line(model, time.perf_counter() - started))
    warnings = model_warnings(model, data.features, data.labels, where="on the fitting data")
    model.save(out)
    summary = {**model.summary(), "out": str(out), "warnings": warnings}
    if as_json:
        if not quiet:
            print_warnings(warnings, to_stderr=True)
        print_json(summary)
        return
    console.print(model.hierarchy.rich_tree())
    _print_summary({k: v for k, v in summary.items() if k != "warnings"})
    print_warnings(warnings)


def _load(
    model_dir: Path | None,
    collection: str | None,
    url: str | None,
    api_key: str | None,
    data_dir: Path,
    timeout: float | None = None,
) -> Any:
    """A model from a directory, or the one stored with a collection."""
    from hierqdrant.core.model import HierarchyModel

    if model_dir is not None:
        return HierarchyModel.load(model_dir)
    from hierqdrant.store.collection import read_collection_model

    engine = open_engine(url, api_key, data_dir, create=False, timeout=timeout)
    try:
        return read_collection_model(engine, resolve_collection(engine, collection))[0]
    finally:
        engine.close()


@app.command("show")
@handle_errors
def show_command(
    model_dir: Path | None = typer.Argument(None, help="A model directory (default: the model of --collection)."),
    collection: str | None = typer.Option(
        None, "--collection", "-c", help="Show the model stored with this collection."
    ),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    timeout: float = timeout_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the tree."),
) -> None:
    """Print a model's class tree with class names, node heights and sizes."""
    model = _load(model_dir, collection, url, api_key, data_dir, timeout)
    if as_json:
        extra = {"subclass_of": model.subclasses.subclass_of.tolist()} if model.subclasses is not None else {}
        print_json({**model.summary(), "hierarchy": model.hierarchy.to_dict(), **extra})
        return
    console.print(model.hierarchy.rich_tree(marks=model.subclass_marks()))
    _print_summary(model.summary())


@app.command("export")
@handle_errors
def export_command(
    model_dir: Path | None = typer.Argument(None, help="A model directory (default: the model of --collection)."),
    collection: str | None = typer.Option(None, "--collection", "-c", help="Export the model of this collection."),
    url: str | None = url_option(),
    api_key: str | None = api_key_option(),
    data_dir: Path = data_dir_option(),
    timeout: float = timeout_option(),
    fmt: ExportFormat = typer.Option(ExportFormat.newick, "--format", help="newick, json, parent-child or png."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write to this file instead of stdout (required for png)."
    ),
) -> None:
    """Export a model's class tree (Newick, JSON, parent-child text, or a PNG drawing)."""
    tree = _load(model_dir, collection, url, api_key, data_dir, timeout).hierarchy
    if fmt is ExportFormat.png:
        if out is None:
            raise InputError("--format png needs --out FILE.png")
        from hierqdrant.evaluation.plots import draw_tree

        draw_tree(tree, out)
        console.print(f"wrote {out}")
        return
    text = {
        ExportFormat.newick: lambda: tree.to_newick() + "\n",
        ExportFormat.json: lambda: tree.to_json() + "\n",
        ExportFormat.parent_child: tree.to_parent_child,
    }[fmt]()
    if out is None:
        typer.echo(text, nl=False)
    else:
        from hierqdrant.core.fileio import atomic_write

        atomic_write(out, text.encode("utf-8"))


def _print_summary(summary: dict[str, object]) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in summary.items():
        table.add_row(f"[dim]{shown(key)}[/]", shown(value))
    console.print(table)
